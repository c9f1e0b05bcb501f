"""Accuracy against the reference: the eval set (BBC News, a user table, or none) and every
variant's outputs on it, scored by ``smp_bench.accuracy``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from runtime.tokenize import Tokenizer

from . import accuracy as acc
from .config import BBC, BenchConfig
from .data import TextDataset, load_bbc_news, load_glue_tsv, load_table
from .errors import BenchmarkError
from .plan import LoadedVariant


@dataclass
class EvalSet:
    """The evaluation texts and labels, and the train texts of the nearest-centroid classifier."""

    source: str
    texts: list
    labels: list[str] | None
    train_texts: list | None = None
    train_labels: list[str] | None = None
    label_names: list[str] = field(default_factory=list)


def load_eval_set(config: BenchConfig) -> EvalSet | None:
    """The evaluation texts: BBC News (seeded split), a user file, or None (``--data none``)."""
    if config.data.data == "none":
        return None
    if config.data.data == BBC:
        return _bbc_eval_set(config)
    return _split(_user_dataset(config), config)


def _bbc_eval_set(config: BenchConfig) -> EvalSet:
    test = load_bbc_news("test", seed=config.data.seed)
    train = load_bbc_news("train", seed=config.data.seed)
    n, m = config.data.eval_samples or config.timing.batch, config.data.centroid_samples
    return EvalSet(f"{test.source}[:{n}]", list(test.texts[:n]), list(test.labels[:n]),
                   list(train.texts[:m]), list(train.labels[:m]), test.label_names)


def _user_dataset(config: BenchConfig) -> TextDataset:
    data = config.data
    path = Path(data.data)
    if data.text_column is not None:
        return load_table(path, data.text_column, data.label_column, data.text_pair_column)
    if path.suffix.lower() != ".tsv":
        raise BenchmarkError("--text-column is needed for CSV / JSONL data (GLUE TSVs are detected)",
                             path=path, field="--text-column")
    return load_glue_tsv(path)


def _split(dataset: TextDataset, config: BenchConfig) -> EvalSet:
    """A seeded eval sample, and the next ``centroid_samples`` rows as train texts (labelled data only)."""
    order = np.random.default_rng(config.data.seed).permutation(len(dataset))
    n = min(config.data.eval_samples or config.timing.batch, len(dataset))
    test_idx, rest = order[:n], order[n:n + config.data.centroid_samples]
    labels = dataset.labels
    has_train = bool(labels) and len(rest) > 0
    return EvalSet(f"{dataset.source}[seed {config.data.seed}: {n}]", [dataset.texts[i] for i in test_idx],
                   [labels[i] for i in test_idx] if labels else None,
                   [dataset.texts[i] for i in rest] if has_train else None,
                   [labels[i] for i in rest] if has_train else None, dataset.label_names)


def eval_batches(eval_set: EvalSet, n_variants: int, batch: int) -> int:
    """How many batches ``evaluate`` runs (for its progress bar)."""
    def batches(texts: Sequence | None) -> int:
        return -(-len(texts or []) // batch)

    return n_variants * batches(eval_set.texts) + batches(eval_set.train_texts)


def _outputs_on(live: LoadedVariant, tokenizer: Tokenizer, texts: list, config: BenchConfig,
                step: Callable[[], None]) -> np.ndarray:
    chunks = []
    for i in range(0, len(texts), config.timing.batch):
        feeds = tokenizer.encode(texts[i:i + config.timing.batch], max_length=config.timing.seq_len)
        out = live.outputs(feeds)
        if live.kind == "embeddings":
            out = acc.mean_pool(out, feeds["attention_mask"])
        chunks.append(np.asarray(out, dtype=np.float32))
        step()
    return np.concatenate(chunks, axis=0)


def evaluate(lives: Sequence[LoadedVariant], reference: LoadedVariant, tokenizer: Tokenizer, eval_set: EvalSet,
             config: BenchConfig, step: Callable[[], None]) -> dict[str, dict[str, Any]]:
    """Accuracy fields per variant name, every variant scored against ``reference``."""
    centroid_model, label_map = _classifier(reference, tokenizer, eval_set, config, step)
    outputs = {}
    for live in [reference, *[x for x in lives if x is not reference]]:
        outputs[live.spec.name] = _outputs_on(live, tokenizer, eval_set.texts, config, step)
    ref_out = outputs[reference.spec.name]
    results: dict[str, dict[str, Any]] = {}
    for live in lives:
        out = outputs[live.spec.name]
        if live.kind != reference.kind or out.shape != ref_out.shape:
            results[live.spec.name] = {"eval_source": eval_set.source,
                                       "eval_note": f"output {live.output_name} differs from the reference's"}
            continue
        metrics = acc.evaluate(reference.kind, ref_out, out, labels=eval_set.labels, centroid_model=centroid_model,
                               label_map=label_map)
        metrics["eval_source"] = eval_set.source
        if centroid_model is not None:
            metrics["eval_centroid_n"] = len(eval_set.train_texts)
        results[live.spec.name] = metrics
    return results


def _classifier(reference: LoadedVariant, tokenizer: Tokenizer, eval_set: EvalSet, config: BenchConfig,
                step: Callable[[], None]):
    """What turns outputs into task labels: nearest centroids of the reference's train embeddings
    (encoders), or the map from the reference head's labels to the data's (logits)."""
    if not eval_set.labels:
        return None, None
    if reference.kind == "embeddings" and eval_set.train_texts:
        train = _outputs_on(reference, tokenizer, eval_set.train_texts, config, step)
        return acc.centroids(train, eval_set.train_labels), None
    if reference.kind == "logits":
        return None, acc.label_index(reference.id2label, sorted(set(eval_set.labels)))
    return None, None
