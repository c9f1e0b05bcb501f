"""From plan to runners: the device check, the timed batch, and every variant loaded
(onnxruntime sessions here, torch models in ``torch_runners``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from runtime.contract import CONFIG_FILE, has_tokenizer, random_inputs, select_inputs
from runtime.errors import DeviceError, SmpError
from runtime.providers import select_providers
from runtime.tokenize import Tokenizer

from .config import BenchConfig, CheckpointCache
from .evaluation import EvalSet
from .harness import Runner
from .plan import LoadedVariant, VariantSpec
from .progress import bar_iter
from .torch_runners import load_torch_variant


def check_device(config: BenchConfig) -> None:
    """Refuse CUDA early, with the reason, when a backend in use cannot run on it."""
    if config.backends.device != "cuda":
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


def tokenizer_for(specs: Sequence[VariantSpec], checkpoint: CheckpointCache) -> tuple[Tokenizer | None, int]:
    """The reference's tokenizer (export dir, else the source checkpoint's) and the vocab size."""
    for spec in sorted(specs, key=lambda s: not s.is_reference):
        if spec.export_dir is not None and has_tokenizer(spec.export_dir):
            config = Path(spec.export_dir) / CONFIG_FILE
            vocab = json.loads(config.read_text()).get("vocab_size", 30522) if config.is_file() else 30522
            return Tokenizer.from_dir(spec.export_dir), int(vocab)
    for spec in specs:
        if spec.source is not None:
            ckpt = checkpoint(spec.source)
            tok = Tokenizer.from_dir(ckpt.tokenizer_dir) if ckpt.tokenizer_dir else None
            return tok, int(ckpt.config.vocab_size)
    return None, 100


def timing_feeds(config: BenchConfig, tokenizer: Tokenizer | None, eval_set: EvalSet | None,
                  vocab_size: int) -> tuple[dict[str, np.ndarray], str]:
    """One fixed [batch, seq_len] batch: real texts padded / truncated to seq_len when there are
    some, else seeded random token ids."""
    batch, seq_len = config.timing.batch, config.timing.seq_len
    if tokenizer is not None and eval_set is not None and eval_set.texts:
        texts = [eval_set.texts[i % len(eval_set.texts)] for i in range(batch)]
        return tokenizer.encode(texts, max_length=seq_len, pad_to=seq_len), "eval texts"
    feeds = random_inputs(batch, seq_len, vocab_size=vocab_size, low_id=1000 if vocab_size > 2000 else 1,
                          rng=np.random.default_rng(config.data.seed))
    return feeds, "random token ids"


def load_ort_variant(spec: VariantSpec, config: BenchConfig, feeds: dict[str, np.ndarray]) -> LoadedVariant:
    """An onnxruntime variant: its session, timed on ``feeds``."""
    from runtime.session import ModelSession, SessionConfig

    session = ModelSession.load(spec.export_dir, SessionConfig(
        device=config.backends.device, intra_op_threads=config.timing.threads, spinning=config.timing.spin,
        custom_op_libraries=tuple(config.backends.custom_op_libraries), tensorrt=config.backends.tensorrt))
    inputs = select_inputs(feeds, session.input_names)
    output = "logits" if "logits" in session.output_names else session.output_names[0]
    ort_session = session.session
    # I/O binding: inputs on the device once, outputs left there (no host round trip per run).
    call = session.bind(inputs).run if config.backends.binds else (lambda: ort_session.run(None, inputs))
    return LoadedVariant(spec, Runner(spec.name, call),
                 lambda f: session.run(f)[output], output, session.load_seconds,
                 ",".join(session.providers), dict(session.id2label))


def load_variants(specs: Sequence[VariantSpec], config: BenchConfig, feeds: dict[str, np.ndarray],
                  checkpoint: CheckpointCache, skipped: list[dict[str, str]],
                  echo: Callable[[str], None]) -> list[LoadedVariant]:
    """Every variant loaded, in order; one that fails is skipped (the reference's failure is fatal)."""
    lives: list[LoadedVariant] = []
    for spec in bar_iter(specs, "loading", config.output.progress):
        try:
            live = load_ort_variant(spec, config, feeds) if spec.backend == "onnxruntime" else \
                load_torch_variant(spec, config, feeds, checkpoint)
        except SmpError as exc:
            if spec.is_reference:
                raise
            skipped.append({"name": spec.name, "reason": str(exc)})
            echo(f"skipping {spec.name}: {exc}")
            continue
        lives.append(live)
    return lives
