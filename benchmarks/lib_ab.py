"""Suite "lib-ab": two builds of the ai.smp library on the same export, interleaved in one process.

For a kernel change that the export does not see (the same model.onnx, another libsmp_sparse.so):
one onnxruntime session per library, runs alternating (the order flips every round, intra-op
threads do not spin), medians per library, the ratio A / B, and the max |diff| of their outputs.

    python benchmarks/lib_ab.py EXPORT_DIR --a OLD.so --b NEW.so [--batches 32,1] [--rounds 15] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def _session(model: Path, library: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.register_custom_ops_library(str(library))
    return ort.InferenceSession(str(model / "model.onnx"), options, providers=["CPUExecutionProvider"])


def _feeds(session: ort.InferenceSession, batch: int, seq: int) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(0).integers(1000, 20000, (batch, seq)).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {i.name: feeds[i.name] for i in session.get_inputs()}


def measure(model: Path, libraries: list[Path], batch: int, seq: int, rounds: int, threads: int) -> dict:
    sessions = [_session(model, lib, threads) for lib in libraries]
    feeds = _feeds(sessions[0], batch, seq)
    outs = [s.run(None, feeds)[0] for s in sessions]
    times: list[list[float]] = [[] for _ in sessions]
    for r in range(rounds + 2):
        order = range(len(sessions)) if r % 2 else reversed(range(len(sessions)))
        for k in order:
            start = time.perf_counter()
            sessions[k].run(None, feeds)
            if r >= 2:
                times[k].append((time.perf_counter() - start) * 1e3)
    medians = [statistics.median(t) for t in times]
    return {"batch": batch, "a_ms": medians[0], "b_ms": medians[1], "a_over_b": medians[0] / medians[1],
            "max_abs_diff": float(np.abs(outs[0] - outs[1]).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exports", nargs="+", type=Path)
    parser.add_argument("--a", type=Path, required=True, help="the library before the change")
    parser.add_argument("--b", type=Path, required=True, help="the library after it")
    parser.add_argument("--batches", default="32,1")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print("| export | batch | A ms | B ms | A / B | max abs diff |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for export in args.exports:
        for batch in (int(b) for b in args.batches.split(",")):
            r = measure(export, [args.a, args.b], batch, args.seq_len, args.rounds, args.threads)
            print(f"| {export.name} | {batch} | {r['a_ms']:.2f} | {r['b_ms']:.2f} | {r['a_over_b']:.3f}x "
                  f"| {r['max_abs_diff']:.3g} |", flush=True)


if __name__ == "__main__":
    main()
