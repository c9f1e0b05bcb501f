"""From plan to runners: the device check, the timed batch, and every variant loaded
(onnxruntime sessions here, torch models in ``torch_runners``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from runtime.bench.harness import Runner
from runtime.errors import DeviceError, RuntimeErrorBase
from runtime.providers import select_providers
from runtime.tokenize import Tokenizer

from ..errors import SmpExportError
from .config import BenchConfig, CheckpointCache
from .evaluation import EvalSet
from .progress import bar_iter
from .torch_runners import _load_torch
from .variants import _Live, _Spec


def _check_device(config: BenchConfig) -> None:
    """Refuse CUDA early, with the reason, when a backend in use cannot run on it."""
    if config.device != "cuda":
        return
    if config.uses_ort:
        try:
            select_providers("cuda")
        except DeviceError as exc:
            raise DeviceError(f"{exc}. Without onnxruntime-gpu, measure the torch CUDA path alone with "
                              "--backend torch", field="--device") from exc
    if config.uses_torch_csr or config.uses_torch_eager:
        import torch

        if not torch.cuda.is_available():
            raise DeviceError(f"CUDA requested but torch.cuda.is_available() is False (torch "
                              f"{torch.__version__}, built for CUDA {torch.version.cuda or 'none'}): no GPU or "
                              "a CPU-only torch build; use --device cpu", field="--device")


def _tokenizer_for(specs: Sequence[_Spec], checkpoint: CheckpointCache) -> tuple[Tokenizer | None, int]:
    """The reference's tokenizer (export dir, else the source checkpoint's) and the vocab size."""
    for spec in sorted(specs, key=lambda s: not s.is_reference):
        if spec.export_dir is not None and any((Path(spec.export_dir) / n).is_file()
                                               for n in ("tokenizer.json", "vocab.txt")):
            config = Path(spec.export_dir) / "config.json"
            vocab = json.loads(config.read_text()).get("vocab_size", 30522) if config.is_file() else 30522
            return Tokenizer.from_dir(spec.export_dir), int(vocab)
    for spec in specs:
        if spec.source is not None:
            ckpt = checkpoint(spec.source)
            tok = Tokenizer.from_dir(ckpt.tokenizer_dir) if ckpt.tokenizer_dir else None
            return tok, int(ckpt.config.vocab_size)
    return None, 100


def _timing_feeds(config: BenchConfig, tokenizer: Tokenizer | None, eval_set: EvalSet | None,
                  vocab_size: int) -> tuple[dict[str, np.ndarray], str]:
    """One fixed [batch, seq_len] batch: real texts padded / truncated to seq_len when there are
    some, else seeded random token ids."""
    if tokenizer is not None and eval_set is not None and eval_set.texts:
        texts = [eval_set.texts[i % len(eval_set.texts)] for i in range(config.batch)]
        return tokenizer.encode(texts, max_length=config.seq_len, pad_to=config.seq_len), "eval texts"
    rng = np.random.default_rng(config.seed)
    ids = rng.integers(1000 if vocab_size > 2000 else 1, vocab_size, size=(config.batch, config.seq_len),
                       dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}, \
        "random token ids"


def _load_ort(spec: _Spec, config: BenchConfig, feeds: dict[str, np.ndarray]) -> _Live:
    from runtime.session import ModelSession, SessionConfig

    session = ModelSession.load(spec.export_dir, SessionConfig(
        device=config.device, intra_op_threads=config.threads, spinning=config.spin,
        custom_op_libraries=tuple(config.custom_op_libraries)))
    declared = set(session.input_names)
    inputs = {k: v for k, v in feeds.items() if k in declared}
    output = "logits" if "logits" in session.output_names else session.output_names[0]
    ort_session = session.session
    return _Live(spec, Runner(spec.name, lambda: ort_session.run(None, inputs)),
                 lambda f: session.run(f)[output], output, session.load_seconds,
                 ",".join(session.providers), dict(session.id2label))


def load_variants(specs: Sequence[_Spec], config: BenchConfig, feeds: dict[str, np.ndarray],
                  checkpoint: CheckpointCache, skipped: list[dict[str, str]],
                  echo: Callable[[str], None]) -> list[_Live]:
    """Every variant loaded, in order; one that fails is skipped (the reference's failure is fatal)."""
    lives: list[_Live] = []
    for spec in bar_iter(specs, "loading", config.progress):
        try:
            live = _load_ort(spec, config, feeds) if spec.backend == "onnxruntime" else \
                _load_torch(spec, config, feeds, checkpoint)
        except (SmpExportError, RuntimeErrorBase) as exc:
            if spec.is_reference:
                raise
            skipped.append({"name": spec.name, "reason": str(exc)})
            echo(f"skipping {spec.name}: {exc}")
            continue
        lives.append(live)
    return lives
