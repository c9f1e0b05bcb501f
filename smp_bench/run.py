"""``run_benchmark``: plan, load, time interleaved, evaluate, probe memory, profile, write."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from runtime.providers import CUDA, TENSORRT
from runtime.tokenize import Tokenizer
from smp_export.progress import listening

from .config import BenchConfig, CheckpointCache
from .evaluation import EvalSet, eval_batches, evaluate, load_eval_set
from .harness import TimingPlan, TimingResult, time_interleaved
from .loading import check_device, load_variants, timing_feeds, tokenizer_for
from .memory import probe_memory
from .plan import LoadedVariant, plan_variants
from .progress import TaskBars, bar, bar_iter
from .records import terminal_table
from .report import Measurements, build_records, environment, write_files

logger = logging.getLogger(__name__)


@dataclass
class BenchResult:
    """What ``run_benchmark`` measured and wrote, and the terminal table of it."""

    records: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    files: dict[str, Path]
    table: str
    timing: TimingResult
    profile_text: str | None = None
    notes: list[str] = field(default_factory=list)


def run_benchmark(config: BenchConfig, *, echo: Callable[[str], None] | None = None) -> BenchResult:
    """Build, time, evaluate, probe and write one benchmark run (see the package docstring)."""
    echo = echo or (lambda message: logger.info("%s", message))
    check_device(config)
    if config.timing.threads:
        import torch

        torch.set_num_threads(config.timing.threads)
    bars = TaskBars(config.output.progress)
    try:
        with listening(bars):                 # export steps and autotune, on a terminal
            specs, skipped, notes = plan_variants(config, echo)
    finally:
        bars.close()
    eval_set = load_eval_set(config)          # its texts also make the timed batch
    checkpoint = CheckpointCache()            # shared by the tokenizer lookup and the torch variants
    tokenizer, vocab = tokenizer_for(specs, checkpoint)
    feeds, feeds_from = timing_feeds(config, tokenizer, eval_set, vocab)
    lives = load_variants(specs, config, feeds, checkpoint, skipped, echo)
    checkpoint.clear()
    reference = next(x for x in lives if x.spec.is_reference)

    env_start = environment(config)
    timing = _time(lives, config)
    measured = Measurements(evals=_accuracy(lives, reference, tokenizer, eval_set, config, notes))
    if config.output.memory:
        measured.memory = probe_memory(lives, config, notes)
    measured.profiles, profile_text = _profile(lives, config, feeds, notes)

    env = environment(config)
    env["load_average_start"] = env_start.get("load_average")
    env["timing_inputs"] = feeds_from
    records = build_records(lives, reference, config, timing, measured, env)
    files = write_files(config, records, skipped, notes, timing, env, measured.profiles, echo)
    return BenchResult(records=records, skipped=skipped, files=files, table=terminal_table(records),
                       timing=timing, profile_text=profile_text, notes=notes)


def _time(lives: Sequence[LoadedVariant], config: BenchConfig) -> TimingResult:
    plan = TimingPlan(runs=config.timing.runs, warmup=config.timing.warmup)
    progress = bar(len(lives) * (plan.runs + plan.warmup), "timing (interleaved)", config.output.progress)
    timing = time_interleaved([x.runner for x in lives], plan, batch_size=config.timing.batch,
                              on_call=lambda phase, name: progress.update())
    progress.close()
    return timing


def _accuracy(lives: Sequence[LoadedVariant], reference: LoadedVariant, tokenizer: Tokenizer | None,
              eval_set: EvalSet | None, config: BenchConfig, notes: list[str]) -> dict[str, dict[str, Any]]:
    if eval_set is None or config.data.eval_samples == 0:
        return {}
    if tokenizer is None:
        notes.append("no tokenizer: accuracy not measured")
        return {}
    progress = bar(eval_batches(eval_set, len(lives), config.timing.batch), "accuracy", config.output.progress)
    evals = evaluate(lives, reference, tokenizer, eval_set, config, progress.update)
    progress.close()
    return evals


def _profile(lives: Sequence[LoadedVariant], config: BenchConfig, feeds: dict[str, np.ndarray],
             notes: list[str]) -> tuple[dict[str, Any], str | None]:
    """onnxruntime's per-operator profile of every onnxruntime variant, and its printed summary;
    on a GPU, every node that ran on another provider is named in ``notes`` (never a silent
    CPU fallback)."""
    if not config.output.profile:
        return {}, None
    from runtime.session import SessionConfig, required_custom_op_libraries, session_providers

    from .profile import format_profile, profile_model

    profiles = {}
    ort_lives = [x for x in lives if x.spec.backend == "onnxruntime"]
    for live in bar_iter(ort_lives, "profiling", config.output.progress):
        libraries = required_custom_op_libraries(live.spec.export_dir, config.backends.custom_op_libraries)
        profiles[live.spec.name] = profile_model(
            Path(live.spec.export_dir) / "model.onnx", feeds, runs=config.output.profile_runs,
            providers=session_providers(live.spec.export_dir, SessionConfig(
                device=config.backends.device, tensorrt=config.backends.tensorrt)),
            intra_op_threads=config.timing.threads,
            custom_op_libraries=libraries, name=live.spec.name)
        if config.backends.device == "cuda":
            _note_fallbacks(live.spec.name, profiles[live.spec.name].nodes_off({CUDA, TENSORRT}), notes)
    return profiles, (format_profile(profiles) if profiles else None)


def _note_fallbacks(name: str, off: list[str], notes: list[str]) -> None:
    if not off:
        return
    message = (f"{name}: {len(off)} node(s) ran outside the GPU providers (CPU fallback): "
               + ", ".join(off[:12]) + (" ..." if len(off) > 12 else "")
               + " (the profile's times of CUDA nodes are their launches on the host, not GPU time)")
    logger.warning("%s", message)
    notes.append(message)
