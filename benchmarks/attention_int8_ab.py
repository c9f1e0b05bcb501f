"""Suite "attention-int8": ai.smp.Attention fp32 against precision="int8" on each int8 path the
CPU has, one operator in onnxruntime sessions, interleaved in one process.

MiniLM's attention (12 heads x 32) and BERT-base's (12 x 64), packed [batch, seq, 3 x width]
QKV as the stacked projection gives it, batch 32 and 1 x 128 tokens, no padding. Each round runs
every variant once (order rotated; intra-op threads do not spin between runs, so one
session's pool never competes with the next); the ratio is of medians against fp32. The cosine column is
the smallest per-row cosine of the int8 output to the fp32 one.

    python benchmarks/attention_int8_ab.py [--rounds 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from int8_linear_ab import measure  # noqa: E402

from runtime.kernels import SPARSE_DOMAIN, custom_op_library_path  # noqa: E402
from runtime.kernels_int8 import INT8_PATHS, int8_path  # noqa: E402
from smp_bench.stats import cpu_isa, cpu_model, environment, machine_slug  # noqa: E402

SHAPES = [(12, 32), (12, 64)]


def _session(heads: int, d: int, precision: str, threads: int) -> ort.InferenceSession:
    node = helper.make_node("Attention", ["QKV", "", "", "M"], ["Y"], domain=SPARSE_DOMAIN, shape=[heads, d],
                            precision=precision)
    graph = helper.make_graph([node], "att", [
        helper.make_tensor_value_info("QKV", TensorProto.FLOAT, ["b", "s", 3 * heads * d]),
        helper.make_tensor_value_info("M", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["b", "s", heads * d])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(SPARSE_DOMAIN, 1)],
                              ir_version=8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # Interleaved sessions: a pool left spinning after its run would take cores from the next.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.register_custom_ops_library(str(custom_op_library_path()))
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _variant(sess: ort.InferenceSession, path: str | None):
    def run(feeds: dict) -> np.ndarray:
        if path is not None:
            os.environ["SMP_SPARSE_INT8"] = path     # read by the op on every call
        return sess.run(None, feeds)[0]
    return run


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    return float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).min())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    paths = [p for p in INT8_PATHS if p != "auto" and int8_path(p) == p]
    records = []
    for heads, d in SHAPES:
        variants = {"fp32": _variant(_session(heads, d, "fp32", args.threads), None)}
        int8 = _session(heads, d, "int8", args.threads)
        variants.update({f"int8-{p}": _variant(int8, p) for p in paths})
        for batch in (32, 1):
            feeds = {"QKV": rng.standard_normal((batch, 128, 3 * heads * d)).astype(np.float32),
                     "M": np.ones((batch, 128), np.int64)}
            med = measure(variants, feeds, args.rounds if batch > 1 else args.rounds * 10)
            ref = variants["fp32"](feeds)
            cos = {n: _min_cosine(f(feeds), ref) for n, f in variants.items() if n != "fp32"}
            base = med["fp32"]
            records.append({"heads": heads, "head_dim": d, "batch": batch, "median_ms": med, "min_cosine": cos,
                            "speedup_vs_fp32": {n: base / t for n, t in med.items()}})
            line = "  ".join(f"{n} {t:.3f} ms ({base / t:.2f}x)" for n, t in med.items())
            print(f"{heads}x{d} batch {batch:2d}: {line}", flush=True)
    _write(args, records)


def _write(args: argparse.Namespace, records: list[dict]) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = ROOT / "benchmarks" / "results" / f"{stamp}-attention-int8-{machine_slug(cpu_model())}"
    meta = {"command": "python benchmarks/attention_int8_ab.py " + " ".join(sys.argv[1:]), "cpu": cpu_model(),
            "cpu_isa": cpu_isa(), "threads": args.threads, "rounds": args.rounds, "environment": environment()}
    out.with_suffix(".json").write_text(json.dumps({**meta, "records": records}, indent=2) + "\n")
    names = list(records[0]["median_ms"])
    lines = ["# ai.smp.Attention: fp32 vs precision=\"int8\" (one operator)", "",
             f"- CPU: {meta['cpu']} [{meta['cpu_isa']}]",
             f"- threads {args.threads}, {args.rounds} rounds (x10 at batch 1), 128 tokens, medians, order rotated",
             f"- command: `{meta['command']}`", "",
             "| heads x dim | batch | " + " | ".join(names) + " | min row cosine (int8 vs fp32) |",
             "|---|---:|" + "---:|" * (len(names) + 1)]
    for r in records:
        cells = " | ".join(f"{t:.3f} ms ({r['speedup_vs_fp32'][n]:.2f}x)" for n, t in r["median_ms"].items())
        cos = min(r["min_cosine"].values())
        lines.append(f"| {r['heads']}x{r['head_dim']} | {r['batch']} | {cells} | {cos:.5f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.md", file=sys.stderr)


if __name__ == "__main__":
    main()
