"""Suite "isa-ab": the ai.smp kernels' instruction sets against each other and against dense
onnxruntime, interleaved in one process (``SMP_SPARSE_ISA`` is read on every kernel call).

Exports the shipped checkpoint (dense and sparse-kernel) unless given, then per batch size
times ORT dense fp32, sparse-kernel with SMP_SPARSE_ISA=avx2 and with SMP_SPARSE_ISA=avx512
(the best ISA the CPU has), round-robin (the two kernel runs alternate their order), and
records medians and which of the two the default (no variable) picks on this CPU.

    python benchmarks/isa_ab.py [--rounds 15] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime.contract import MODEL_FILE, random_inputs  # noqa: E402
from runtime.kernels import custom_op_library_path, resolved_isa  # noqa: E402
from smp_bench.stats import cpu_isa, cpu_model, environment, machine_slug  # noqa: E402

CHECKPOINT = ROOT / "checkpoints" / "minilm-bbc-smp-s-keep0.10"


def _export(out: Path, weights: str) -> Path:
    if not (out / MODEL_FILE).is_file():
        subprocess.run([str(Path(sys.executable).parent / "smp-export"), str(CHECKPOINT), "-o", str(out),
                        "--weights", weights], check=True, stdout=subprocess.DEVNULL)
    return out


def _session(path: Path, threads: int, library: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if library:
        options.register_custom_ops_library(str(custom_op_library_path()))
    return ort.InferenceSession(str(path / MODEL_FILE), options, providers=["CPUExecutionProvider"])


def _timed(session: ort.InferenceSession, feeds: dict, isa: str | None) -> float:
    if isa is None:
        os.environ.pop("SMP_SPARSE_ISA", None)
    else:
        os.environ["SMP_SPARSE_ISA"] = isa
    start = time.perf_counter()
    session.run(None, feeds)
    return time.perf_counter() - start


def measure(dense: ort.InferenceSession, sparse: ort.InferenceSession, batch: int, rounds: int) -> dict:
    """Medians (ms) of interleaved rounds: dense, then the two kernel ISAs in alternating order."""
    names = {i.name for i in dense.get_inputs()}
    feeds = {k: v for k, v in random_inputs(batch, 128, vocab_size=30522, type_vocab_size=2,
                                            rng=np.random.default_rng(0)).items() if k in names}
    arms = {"ort-dense": (dense, None)}
    for isa in ("avx2", "avx512"):   # an ISA the CPU lacks resolves to one below it: one arm
        arms[f"sparse-kernel {resolved_isa(isa)}"] = (sparse, isa)
    times: dict[str, list[float]] = {name: [] for name in arms}
    for session, isa in arms.values():
        for _ in range(2):
            _timed(session, feeds, isa)
    for i in range(rounds):
        order = list(arms) if i % 2 else [list(arms)[0], *reversed(list(arms)[1:])]
        for name in order:
            times[name].append(_timed(arms[name][0], feeds, arms[name][1]))
    os.environ.pop("SMP_SPARSE_ISA", None)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds at batch 32 (x4 at batch 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=ROOT / "build" / "isa-ab")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    dense = _session(_export(args.work_dir / "dense", "dense"), args.threads, False)
    sparse = _session(_export(args.work_dir / "sparse-kernel", "sparse-kernel"), args.threads, True)
    rows = {batch: measure(dense, sparse, batch, args.rounds * (1 if batch == 32 else 4)) for batch in (32, 1)}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    lines = [f"# ISA A/B: ai.smp sparse-kernel, shipped MiniLM SMP-S 10%, {args.threads} threads",
             "", f"- CPU: {cpu_model()} [{cpu_isa()}]", f"- onnxruntime {ort.__version__}",
             f"- default ISA of the kernels on this CPU: {resolved_isa('auto')}",
             f"- command: `python benchmarks/isa_ab.py --rounds {args.rounds} --threads {args.threads}`", "",
             "| batch x 128 | variant | median ms | vs ORT dense |", "| --- | --- | ---: | ---: |"]
    for batch, medians in rows.items():
        for name, ms in medians.items():
            lines.append(f"| {batch} | {name} | {ms:.1f} | {medians['ort-dense'] / ms:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"{stamp}-isa-ab-{machine_slug(cpu_model())}.md"
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps({"rows": rows, "environment": environment()}, indent=2))
    with open(args.out_dir / "INDEX.md", "a") as index:
        index.write(f"| {stamp} | isa A/B (sparse-kernel) | {cpu_model()} | {args.threads} | "
                    f"`python benchmarks/isa_ab.py --rounds {args.rounds}` | [{out.name}]({out.name}) |\n")


if __name__ == "__main__":
    main()
