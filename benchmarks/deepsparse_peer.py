"""The peer to beat: DeepSparse 1.8.0 on the same pruned MiniLM, in its own virtualenv.

    python benchmarks/deepsparse_peer.py [--sparsity 0.9 0.97] [--batch 32 1]

Exports the packaged MiniLM magnitude-pruned (zeros kept dense: DeepSparse finds the
sparsity itself) with the sequence length fixed, creates a separate virtualenv with
deepsparse==1.8.0 and onnxruntime (it pins versions this project cannot share), and there
times DeepSparse and onnxruntime dense interleaved in one process; the ratio of medians
against onnxruntime dense is recorded. Where deepsparse cannot be installed (no wheel for
this Python or platform, no registry), a note with pip's reason is recorded instead and the
script exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = "deepsparse==1.8.0"


def _export(sparsity: float, seq_len: int, directory: Path) -> Path:
    """model.onnx of the pruned MiniLM (dense storage) with a fixed sequence axis."""
    sys.path.insert(0, str(ROOT))
    import onnx

    from smp_export.default_model import default_model_dir
    from smp_export.export import ExportOptions, export_onnx
    from smp_export.magnitude import write_magnitude_mask_file
    from smp_export.readers import ReadOptions, read_checkpoint

    model_dir = default_model_dir()
    mask = directory / f"mask-{sparsity}.npy"
    write_magnitude_mask_file(model_dir, 1.0 - sparsity, mask)
    out = directory / f"minilm-{sparsity}"
    export_onnx(read_checkpoint(model_dir, ReadOptions(mask_file=mask)), out,
                options=ExportOptions(weights="dense", overwrite=True, validate=False))
    model = onnx.load(str(out / "model.onnx"))
    for value in model.graph.input:
        value.type.tensor_type.shape.dim[1].dim_value = seq_len
    path = directory / f"minilm-{sparsity}-seq{seq_len}.onnx"
    onnx.save(model, str(path))
    return path


def _venv(path: Path) -> tuple[Path | None, str]:
    """The peer virtualenv's python, or None and pip's reason."""
    python = path / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", PEER, "onnxruntime"],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        return None, (pip.stderr or pip.stdout).strip()[-1500:]
    return python, ""


def run_peer(models: list[str], batches: list[int], rounds: int, warmup: int) -> list[dict]:
    """Inside the peer virtualenv: DeepSparse vs onnxruntime dense, interleaved."""
    import numpy as np
    import onnxruntime as ort
    from deepsparse import compile_model

    sys.path.insert(0, str(ROOT))        # the harness is plain Python: usable from the peer venv
    from smp_bench.harness import Runner, TimingPlan, time_interleaved

    records = []
    for model in models:
        for batch in batches:
            seq = int(model.rsplit("seq", 1)[1].split(".")[0])
            rng = np.random.default_rng(0)
            ids = rng.integers(1000, 20000, size=(batch, seq), dtype=np.int64)
            feeds = [ids, np.ones_like(ids), np.zeros_like(ids)]
            engine = compile_model(model, batch_size=batch)
            options = ort.SessionOptions()
            # As in bench_linear.py: no spinning pool threads competing with the peer's threads.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            names = [i.name for i in session.get_inputs()]
            runs = {"ort-dense": lambda: session.run(None, dict(zip(names, feeds))),
                    "deepsparse": lambda: engine.run(feeds)}
            times = time_interleaved([Runner(n, fn) for n, fn in runs.items()],
                                     TimingPlan(runs=rounds, warmup=warmup), batch_size=batch).times_s
            med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
            records.append({"model": Path(model).name, "batch": batch, "median_ms": med,
                            "ratio_of_medians": med["ort-dense"] / med["deepsparse"],
                            "timings_ms": {k: [t * 1e3 for t in v] for k, v in times.items()}})
            print(f"{Path(model).name} batch {batch}: ort dense {med['ort-dense']:.1f} ms, deepsparse "
                  f"{med['deepsparse']:.1f} ms ({records[-1]['ratio_of_medians']:.2f}x)", file=sys.stderr)
    return records


def _record(payload: dict) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = ROOT / "benchmarks" / "results" / f"{stamp}-deepsparse-peer.json"
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"recorded {out}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.9, 0.97])
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 1])
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--venv", type=Path, default=ROOT / "build" / "deepsparse-venv")
    parser.add_argument("--run", nargs="+", help=argparse.SUPPRESS)   # inside the peer venv
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_peer(args.run, args.batch, args.rounds, args.warmup)))
        return
    work = ROOT / "build" / "deepsparse-models"
    work.mkdir(parents=True, exist_ok=True)
    python, reason = _venv(args.venv)
    payload = {"peer": PEER, "command": sys.argv, "load_average": os.getloadavg()}
    if python is None:
        payload.update(skipped=True, reason=f"pip could not install {PEER}: {reason}")
        print(f"skipped: {payload['reason']}")
        _record(payload)
        return
    models = [str(_export(s, args.seq_len, work)) for s in args.sparsity]
    run = subprocess.run([str(python), __file__, "--run", *models, "--batch", *map(str, args.batch),
                          "--rounds", str(args.rounds), "--warmup", str(args.warmup)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        payload.update(skipped=True, reason=f"deepsparse failed: {run.stderr.strip()[-1500:]}")
        print(f"skipped: {payload['reason']}")
    else:
        payload["records"] = json.loads(run.stdout.strip().splitlines()[-1])
    _record(payload)


if __name__ == "__main__":
    main()
