"""One linear, dense onnxruntime MatMul vs the ai.smp.SparseLinear kernel, and the whole MiniLM.

    python benchmarks/bench_linear.py                      # one linear: 4096 and 128 tokens, 90% and 97%
    python benchmarks/bench_linear.py --suite minilm       # MiniLM-L6: batch 32 x 128 and 1 x 128
    python benchmarks/bench_linear.py --suite bert-base    # BERT-base shapes (random weights): same table

One linear: X [tokens, 768] @ W^T [768, 3072] + b, random magnitude-free mask at the given
sparsity. Peers in the same rounds: onnxruntime's com.microsoft.SparseToDenseMatMul (CSR fed as
a sparse OrtValue, Y^T = W X^T; it cannot take a sparse initializer) and torch CSR
(``torch.sparse.mm``), each followed by the bias add and transpose the linear needs; and what
compaction could remove (all-zero rows and columns of W: none for a random mask at these
sparsities, so the compacted linear is the dense one). Whole model: the packaged MiniLM
magnitude-pruned per matrix, exported dense, compact (heads and FFN neurons that are provably
dead removed) and sparse-kernel (and auto with --auto), run through
runtime.session.ModelSession; ``sparse-kernel-int8`` is ``--weights sparse-kernel --precision int8``
(the int8 kernels, validated by row cosine / top-1). ``dense-mha`` and ``sparse-kernel-mha`` use
onnxruntime's com.microsoft.MultiHeadAttention (sparse-kernel itself uses the ai.smp.Attention
kernel): dense-mha is the part of a speed-up that fused attention alone gives a dense model.
bert-base is a
BERT-base-shaped encoder (12 layers, hidden 768, 12 heads, FFN 3072) with random weights built
here (no download): speed depends on shapes and masks, not on the values.

Every round runs each variant once, interleaved (A B A B ...), after warm-up rounds; the
speed-up is the ratio of medians against onnxruntime dense in the same run (smp_bench.stats).
Results go to benchmarks/results/<UTC stamp>-<suite>-<cpu>.json and .md with the machine's
load average: record on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# torch's OpenMP threads otherwise spin after every torch-csr call and slow the onnxruntime
# runs interleaved after it (at 128 tokens the dense baseline measured 9.7 ms instead of ~5).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from runtime.contract import random_inputs  # noqa: E402
from smp_bench.harness import Runner, TimingPlan, time_interleaved  # noqa: E402
from smp_bench.stats import environment, machine_slug, speedup, summarize  # noqa: E402

# Targets of issue #4 (ratio of medians vs onnxruntime dense).
LINEAR_TARGETS = {(4096, 0.9): 7.0, (4096, 0.97): 20.0, (128, 0.9): 5.0, (128, 0.97): 12.0}
MINILM_TARGETS = {(32, 0.9): 3.6, (32, 0.97): 5.0, (1, 0.9): 3.0, (1, 0.97): 4.0}


def _interleaved(runs: dict, rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call for each variant: the harness's interleaved rounds after warm-up."""
    plan = TimingPlan(runs=rounds, warmup=warmup)
    return time_interleaved([Runner(n, fn) for n, fn in runs.items()], plan, batch_size=1).times_s


SPIN = {"spin": False}   # set from --spin


def _session(model, threads: int | None, library: bool):
    import onnxruntime as ort

    from runtime.kernels import custom_op_library_path

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    if not SPIN["spin"]:
        # Each session has its own intra-op pool whose threads spin after a run; interleaved
        # sessions would then fight over the cores (on 2 cores a 35 ms kernel measured 48 ms).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if library:
        options.register_custom_ops_library(str(custom_op_library_path()))
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _peers(w: np.ndarray, b: np.ndarray, x: np.ndarray, threads: int | None) -> dict:
    """ort-sparse-to-dense and torch-csr runs of ``x @ w.T + b``, checked against numpy first."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    csr = torch.from_numpy(w).to_sparse_csr()
    node = helper.make_node("SparseToDenseMatMul", ["A", "B"], ["Y"], domain="com.microsoft")
    graph = helper.make_graph([node], "s2d", [helper.make_sparse_tensor_value_info("A", TensorProto.FLOAT, list(w.shape)),
                                              helper.make_tensor_value_info("B", TensorProto.FLOAT, [w.shape[1], None])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [w.shape[0], None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    session = _session(model, threads, False)
    a = ort.OrtValue.ort_value_from_sparse_tensor(ort.SparseTensor.sparse_csr_from_numpy(
        list(w.shape), csr.values().numpy(), csr.col_indices().numpy().astype(np.int64),
        csr.crow_indices().numpy().astype(np.int64), ort.OrtDevice.make("cpu", 0)))
    xt = torch.from_numpy(x)

    def s2d() -> np.ndarray:
        bt = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x.T))
        return session.run_with_ort_values(["Y"], {"A": a, "B": bt})[0].numpy().T + b

    def torch_csr() -> np.ndarray:
        with torch.inference_mode():
            return (torch.sparse.mm(csr, xt.T).T + torch.from_numpy(b)).contiguous().numpy()

    if threads:
        torch.set_num_threads(threads)
    expected = x @ w.T + b
    for run in (s2d, torch_csr):
        np.testing.assert_allclose(run(), expected, rtol=1e-4, atol=1e-3)
    return {"ort-sparse-to-dense": s2d, "torch-csr": torch_csr}


def _single(run, calls: int) -> list[float]:
    """Seconds of ``calls`` calls after one warm-up call (for peers too slow for the rounds)."""
    import time

    run()
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        run()
        out.append(time.perf_counter() - start)
    return out


def _compaction(w: np.ndarray) -> dict:
    """What structural compaction could drop from one linear: all-zero rows of W (outputs that
    are just the bias) and all-zero columns (inputs never read). With none, the compacted linear
    is the dense one and its time is ort-dense's."""
    return {"zero_rows": int((~w.any(axis=1)).sum()), "zero_cols": int((~w.any(axis=0)).sum()),
            "rows": int(w.shape[0]), "cols": int(w.shape[1])}


def linear_suite(args) -> list[dict]:
    from smp_export.autotune import dense_linear_model
    from smp_export.passes import KernelSpec, sparse_linear_pass

    rng = np.random.default_rng(0)
    records = []
    for sparsity in args.sparsity:
        w = rng.standard_normal((3072, 768)).astype(np.float32)
        w[rng.random(w.shape) < sparsity] = 0.0
        b = rng.standard_normal(3072).astype(np.float32)
        dense_model = dense_linear_model(w, b)
        dense = _session(dense_model, args.threads, False)
        sparse = _session(sparse_linear_pass(dense_model, {"lin": KernelSpec()}), args.threads, True)
        for tokens in args.tokens:
            x = rng.standard_normal((tokens, 768)).astype(np.float32)
            np.testing.assert_allclose(sparse.run(None, {"X": x})[0], dense.run(None, {"X": x})[0],
                                       rtol=1e-4, atol=1e-3)
            rounds = args.rounds or (9 if tokens >= 1024 else 200)
            dense_run = (lambda dense=dense, x=x: dense.run(None, {"X": x}))
            runs = {"ort-dense": dense_run, "sparse-kernel": lambda sparse=sparse, x=x: sparse.run(None, {"X": x})}
            extra = {"shape": [tokens, 768, 3072], "compaction": _compaction(w)}
            times = _interleaved(runs, rounds, args.warmup)
            peer_times = None
            if not args.no_peers:
                # Peers in rounds of their own, with onnxruntime dense again: a peer's threads
                # (or a 0.4 s SparseToDenseMatMul call) would otherwise slow the runs after it.
                peers = _peers(w, b, x, args.threads)
                if tokens > 1024:
                    # ~15 s a call at 4096 tokens here: timed twice on its own, not in the rounds.
                    s2d = peers.pop("ort-sparse-to-dense")
                    extra["ort_sparse_to_dense_ms_separate"] = [round(1e3 * t, 1) for t in _single(s2d, 2)]
                peer_times = _interleaved({"ort-dense": dense_run, **peers}, max(rounds // 4, 5), args.warmup)
            records.append(_record("linear", tokens, sparsity, times, LINEAR_TARGETS.get((tokens, sparsity)), extra,
                                   peer_times))
    return records


def _model_dir(suite: str, directory: Path) -> Path:
    """The packaged MiniLM, or a BERT-base-shaped BertModel with random weights saved here."""
    from smp_export.default_model import default_model_dir

    if suite == "minilm":
        return default_model_dir()
    import torch
    from transformers import BertConfig, BertModel

    out = directory / "bert-base-shaped"
    if not (out / "model.safetensors").is_file():
        torch.manual_seed(0)
        BertModel(BertConfig(), add_pooling_layer=False).save_pretrained(out, safe_serialization=True)
    return out


def _model_exports(suite: str, sparsity: float, directory: Path, args) -> dict[str, Path]:
    from smp_export.autotune import AutotuneConfig
    from smp_export.export import ExportOptions, export_onnx
    from smp_export.magnitude import write_magnitude_mask_file
    from smp_export.readers import ReadOptions, read_checkpoint

    model_dir = _model_dir(suite, directory)
    mask = directory / f"mask-{sparsity}.npy"
    write_magnitude_mask_file(model_dir, 1.0 - sparsity, mask)
    ckpt = read_checkpoint(model_dir, ReadOptions(mask_file=mask), input_format="packed")
    tune = AutotuneConfig(tokens=tuple(b * args.seq_len for b in args.batch), threads=args.threads)
    variants = {"dense": {}, "compact": {}, "dense-mha": {"attention": "mha"},
                "sparse-kernel-mha": {"attention": "mha"}, "sparse-kernel": {},
                "sparse-kernel-int8": {"precision": "int8"}}
    if args.auto:
        variants["auto"] = {"autotune": tune}
    out = {}
    for name, extra in variants.items():
        out[name] = directory / f"{suite}-{sparsity}-{name}"
        weights = "dense" if name.startswith("dense") else name.removesuffix("-mha").removesuffix("-int8")
        export_onnx(ckpt, out[name], options=ExportOptions(weights=weights, overwrite=True, **extra))
    return out


def model_suite(args) -> list[dict]:
    from runtime.session import ModelSession, SessionConfig

    records = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="smp-bench-minilm-") as tmp:
        for sparsity in args.sparsity:
            exports = _model_exports(args.suite, sparsity, Path(tmp), args)
            sessions = {k: ModelSession.load(p, SessionConfig(intra_op_threads=args.threads))
                        for k, p in exports.items()}
            if not SPIN["spin"]:
                sessions = {k: _respin(s, args.threads) for k, s in sessions.items()}
            for batch in args.batch:
                feeds = random_inputs(batch, args.seq_len, vocab_size=20000, low_id=1000, rng=rng)
                runs = {("ort-dense" if k == "dense" else k): (lambda s=s, f=feeds: s.run(f)) for k, s in sessions.items()}
                rounds = args.rounds or (7 if batch >= 8 else 60)
                times = _interleaved(runs, rounds, args.warmup)
                targets = MINILM_TARGETS if args.suite == "minilm" else {}
                records.append(_record(args.suite, batch, sparsity, times, targets.get((batch, sparsity)),
                                       {"batch": batch, "seq_len": args.seq_len}))
    return records


def _respin(loaded, threads: int | None):
    """The same model in a session without spinning threads (see _session); ModelSession's
    run() is used for feeds, so only its onnxruntime session is replaced."""
    import onnx

    loaded.session = _session(onnx.load(str(loaded.directory / "model.onnx")), threads, True)
    return loaded


def _record(suite: str, size: int, sparsity: float, times: dict[str, list[float]], target: float | None,
            extra: dict, peer_times: dict[str, list[float]] | None = None) -> dict:
    """One row: every variant's summary and ratio against ort-dense of the same rounds (peers:
    against ort-dense of the peers' own rounds, kept as ``peer_rounds_ort_dense``)."""
    variants = {}
    for rounds in (times, peer_times or {}):
        for name, t in rounds.items():
            summary = summarize(t, 1)
            if name != "ort-dense":
                summary["speedup"] = speedup(rounds["ort-dense"], t)
                variants[name] = summary
            elif rounds is times:
                variants[name] = summary
    if peer_times:
        extra = dict(extra, peer_rounds_ort_dense=summarize(peer_times["ort-dense"], 1))
        times = dict(times, **{f"{k} (peer rounds)" if k == "ort-dense" else k: v for k, v in peer_times.items()})
    ratio = variants["sparse-kernel"]["speedup"]["ratio_of_medians"]
    row = {"suite": suite, "size": size, "sparsity": sparsity, "target": target, "ratio": ratio,
           "meets_target": None if target is None else bool(ratio >= target), "variants": variants,
           "timings_ms": {k: [round(v * 1e3, 4) for v in t] for k, t in times.items()}, **extra}
    print(f"{suite:6} size {size:5} sparsity {sparsity:.2f}: dense {variants['ort-dense']['p50_ms']:9.2f} ms  "
          + "  ".join(f"{k} {v['p50_ms']:8.2f} ms ({v['speedup']['ratio_of_medians']:.2f}x)"
                      for k, v in variants.items() if k != "ort-dense")
          + (f"  target {target}x {'met' if ratio >= target else 'NOT met'}" if target else ""), flush=True)
    return row


def _write(records: list[dict], suite: str, args) -> Path:
    env = environment()
    env["load_average"] = os.getloadavg()
    from runtime.kernels import resolved_isa

    env["kernel_isa"] = resolved_isa()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out_dir) / f"{stamp}-{suite}-{machine_slug(env['cpu_model'])}"
    payload = {"command": sys.argv, "environment": env, "records": records}
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(payload, f"{suite} suite, {stamp} UTC"))
    print(f"recorded {out}.json / .md")
    return out


def markdown(payload: dict, title: str) -> str:
    """The results table of a recorded suite (every variant any row has; '-' where a row lacks it)."""
    records, env = payload["records"], payload["environment"]
    lines = [f"# {title}", "", f"`{' '.join(payload['command'])}` on {env['cpu_model']} "
             f"({env['usable_cores']} cores), load average {env['load_average']}, kernel ISA {env['kernel_isa']}",
             "", "p50 ms per variant, with its ratio of medians against ort-dense in the same run; the target "
             "applies to sparse-kernel.", ""]
    names = list(dict.fromkeys(n for r in records for n in r["variants"] if n != "ort-dense"))
    lines += ["| size | sparsity | ort-dense | " + " | ".join(names) + " | target |",
              "| ---: | ---: | ---: | " + " | ".join("---:" for _ in names) + " | --- |"]
    for r in records:
        v = r["variants"]
        target = "" if r["target"] is None else f"{r['target']}x {'met' if r['meets_target'] else 'NOT met'}"
        cells = [f"{v[n]['p50_ms']:.2f} ({v[n]['speedup']['ratio_of_medians']:.2f}x)" if n in v else "-"
                 for n in names]
        lines.append(f"| {r['size']} | {r['sparsity']} | {v['ort-dense']['p50_ms']:.2f} | " + " | ".join(cells)
                     + f" | {target} |")
    if any("peer_rounds_ort_dense" in r for r in records):
        lines.append("\nPeers (torch-csr, ort-sparse-to-dense) ran in rounds of their own with ort-dense again; "
                     "their ratios are against that: " + ", ".join(
                         f"{r['size']} tokens / {r['sparsity']}: ort-dense {r['peer_rounds_ort_dense']['p50_ms']:.2f} ms"
                         for r in records if "peer_rounds_ort_dense" in r) + ".")
    for r in records:
        if "compaction" in r:
            c = r["compaction"]
            lines.append(f"\ncompaction at {r['size']} tokens, sparsity {r['sparsity']}: {c['zero_rows']} of {c['rows']} "
                         f"rows and {c['zero_cols']} of {c['cols']} columns of W are all zero"
                         + (", so the compacted linear is the dense one (the ort-dense column)"
                            if c["zero_rows"] == c["zero_cols"] == 0 else ""))
        if "ort_sparse_to_dense_ms_separate" in r:
            lines.append(f"\nort-sparse-to-dense at {r['size']} tokens, sparsity {r['sparsity']}: "
                         f"{r['ort_sparse_to_dense_ms_separate']} ms (two calls after a warm-up, outside the rounds: "
                         "too slow to interleave)")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=["linear", "minilm", "bert-base"], default="linear")
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 128], help="linear: activation rows")
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 1], help="minilm: batch sizes")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.9, 0.97])
    parser.add_argument("--rounds", type=int, default=0, help="timed rounds (0: by size)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all)")
    parser.add_argument("--auto", action="store_true", help="minilm: also export and time --weights auto")
    parser.add_argument("--spin", action="store_true",
                        help="leave onnxruntime's spinning intra-op threads on (interleaved sessions then "
                             "compete for the cores)")
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.add_argument("--no-peers", action="store_true",
                        help="linear: skip the SparseToDenseMatMul and torch CSR peers (slow at 4096 tokens)")
    args = parser.parse_args()
    SPIN["spin"] = args.spin
    records = linear_suite(args) if args.suite == "linear" else model_suite(args)
    if not args.no_record:
        _write(records, args.suite, args)


if __name__ == "__main__":
    main()
