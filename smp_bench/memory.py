"""Peak memory per variant, each loaded and run once in its own process.

onnxruntime variants run ``python -m smp_bench.memprobe``; torch variants run
``python -m smp_bench.memory probe SOURCE_JSON --batch B --seq-len S [--csr]``, whose body
is ``probe_main`` here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Sequence

from runtime.contract import random_inputs

from . import stats
from .config import BenchConfig, CheckpointSource
from .memprobe import probe_in_subprocess
from .plan import LoadedVariant, VariantSpec
from .progress import bar_iter
from .torch_runners import build_torch_model

PROBE_MODULE = "smp_bench.memory"


def probe_argv(spec: VariantSpec, config: BenchConfig) -> list[str]:
    """The Python arguments of the child process that measures one variant's peak memory."""
    timing = config.timing
    common = ["--batch", str(timing.batch), "--seq-len", str(timing.seq_len), "--device", config.backends.device]
    if timing.threads:
        common += ["--threads", str(timing.threads)]
    if spec.backend == "onnxruntime":
        libs = [a for lib in config.backends.custom_op_libraries for a in ("--custom-op-library", lib)]
        return ["-m", "smp_bench.memprobe", str(spec.export_dir), *common, *libs]
    return ["-m", PROBE_MODULE, "probe", spec.source.to_json(), *common, *(["--csr"] if spec.csr else [])]


def probe_memory(lives: Sequence[LoadedVariant], config: BenchConfig, notes: list[str]) -> dict[str, dict[str, Any]]:
    """The probe's JSON per variant name; a probe that fails is a note."""
    memory: dict[str, dict[str, Any]] = {}
    for live in bar_iter(lives, "peak RSS (one process per variant)", config.output.progress):
        try:
            memory[live.spec.name] = probe_in_subprocess(probe_argv(live.spec, config))
        except (RuntimeError, OSError, ValueError) as exc:
            notes.append(f"{live.spec.name}: memory probe failed: {exc}")
    return memory


def memory_fields(mem: dict[str, Any] | None) -> dict[str, Any]:
    """The record fields of one probe's result."""
    if not mem:
        return {}
    fields: dict[str, Any] = {"peak_rss_mb": mem.get("peak_rss_mb")}
    if mem.get("peak_rss_mb") is not None and mem.get("import_rss_mb") is not None:
        fields["peak_rss_above_import_mb"] = mem["peak_rss_mb"] - mem["import_rss_mb"]
    fields["rss_method"] = "isolated process: imports + load + 1 batch"
    if "gpu_peak_mb" in mem:
        fields["gpu_peak_mb"] = mem["gpu_peak_mb"]
    return fields


def probe_main(argv: Sequence[str]) -> None:
    """``python -m smp_bench.memory probe SOURCE_JSON --batch B --seq-len S [--csr]``: peak RSS
    of building one torch variant and running one batch, in this fresh process."""
    parser = argparse.ArgumentParser(prog=f"python -m {PROBE_MODULE} probe")
    parser.add_argument("source")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--csr", action="store_true")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import_rss = stats.current_rss_mb()
    start = time.perf_counter()
    ckpt = CheckpointSource(**json.loads(args.source)).load()
    model = build_torch_model(ckpt, csr=args.csr, device=args.device)
    del ckpt
    load_s = time.perf_counter() - start
    feeds = random_inputs(args.batch, args.seq_len, vocab_size=model.config.vocab_size)
    with torch.inference_mode():
        model(**{name: torch.from_numpy(array).to(args.device) for name, array in feeds.items()})
    out = {"import_rss_mb": import_rss, "peak_rss_mb": stats.peak_rss_mb(), "load_s": load_s}
    if args.device == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "probe":
        probe_main(sys.argv[2:])
    else:
        sys.exit(f"usage: python -m {PROBE_MODULE} probe SOURCE_JSON [--batch B --seq-len S --csr]")
