"""DeepSparse 1.8.0 rows of the peers suite, in DeepSparse's own virtualenv and process.

DeepSparse pins numpy 1.26 and onnx 1.14 (the project venv has numpy 2 and onnx 1.23), so it
cannot share the suite's process: ``deepsparse_rows`` writes each model with the sequence axis
fixed (DeepSparse compiles static shapes), the timing and evaluation inputs as ``.npz``, and runs
this file as a worker in that venv (``build/deepsparse-venv``, made by
``benchmarks/peers_setup.sh``). The worker times onnxruntime dense fp32 (the unpruned model,
the same onnxruntime version) and every DeepSparse engine interleaved with the project's
harness, and writes the engines' outputs on the evaluation inputs; the suite scores those
against its own ``ort-dense`` outputs. A model DeepSparse cannot compile or run is a
``Skipped`` row carrying DeepSparse's message.

    python benchmarks/peer_deepsparse.py --job JOB.json    # the worker (inside the venv)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VENV = ROOT / "build" / "deepsparse-venv"
OWN_REFERENCE = "ort-dense (deepsparse venv)"

logger = logging.getLogger(__name__)


@dataclass
class DeepSparseResult:
    """What the worker measured: rows (``smp_bench.peers.RowInfo``), per-batch times in seconds
    (its own ``OWN_REFERENCE`` among them), evaluation outputs, what failed and why."""

    infos: list[Any] = field(default_factory=list)
    times: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)       # (row name, reason)
    version: str | None = None


def static_copy(onnx_path: Path, seq_len: int, out: Path) -> Path:
    """``onnx_path`` with every input's sequence axis fixed to ``seq_len`` (the batch axis stays)."""
    import onnx

    model = onnx.load(str(onnx_path))
    for value in model.graph.input:
        dim = value.type.tensor_type.shape.dim[1]
        dim.ClearField("dim_param")
        dim.dim_value = seq_len
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["(empty log)"])[-1][:300]


def _save(path: Path, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> str:
    np.savez(path, **{name: np.ascontiguousarray(feeds[name], dtype=np.int64) for name in names})
    return str(path)


def deepsparse_rows(*, python: Path, reference_onnx: Path, models: Sequence[tuple[Any, Path]],
                    input_names: Sequence[str], timing_feeds: Mapping[int, Mapping[str, np.ndarray]],
                    eval_feeds: Mapping[str, np.ndarray], eval_batch: int, rounds: Mapping[int, int], warmup: int,
                    threads: int, seq_len: int, work: Path, timeout_s: float = 900.0) -> DeepSparseResult:
    """Run the worker in the DeepSparse venv on ``models`` ((RowInfo, ONNX file) pairs) and
    collect its timings and outputs. ``eval_feeds`` hold whole chunks of ``eval_batch`` rows."""
    result = DeepSparseResult()
    if not Path(python).is_file():
        venv = Path(python).parents[1]
        log = venv.with_name(venv.name + ".install.log")
        why = f" (pip could not install it: {_last_line(log)}; see {log})" if log.is_file() else ""
        reason = f"no DeepSparse virtualenv at {venv}: run `make peers-setup`{why}"
        result.skipped = [(info.name, reason) for info, _ in models]
        return result
    work.mkdir(parents=True, exist_ok=True)
    paths = {info.name: str(static_copy(path, seq_len, work / f"{i}.onnx")) for i, (info, path) in enumerate(models)}
    job = {"reference": str(static_copy(reference_onnx, seq_len, work / "reference.onnx")), "models": paths,
           "inputs": list(input_names), "threads": threads, "warmup": warmup, "eval_batch": eval_batch,
           "rounds": {str(b): n for b, n in rounds.items()},
           "timing_feeds": {str(b): _save(work / f"timing-{b}.npz", f, input_names) for b, f in timing_feeds.items()},
           "eval_feeds": _save(work / "eval.npz", eval_feeds, input_names), "out": str(work / "result.json"),
           "outputs": str(work / "outputs.npz")}
    (work / "job.json").write_text(json.dumps(job, indent=1))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NM_DISABLE_ANALYTICS": "1"}
    logger.info("DeepSparse worker: %s %s", python, work / "job.json")
    try:
        run = subprocess.run([str(python), __file__, "--job", str(work / "job.json")], capture_output=True, text=True,
                             env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        result.skipped = [(info.name, f"the DeepSparse worker ran past {timeout_s:.0f} s") for info, _ in models]
        return result
    if run.returncode != 0:
        tail = (run.stderr or run.stdout).strip().splitlines()[-12:]
        result.skipped = [(info.name, "the DeepSparse worker failed: " + " / ".join(tail)) for info, _ in models]
        return result
    payload = json.loads((work / "result.json").read_text())
    result.version = payload.get("deepsparse")
    errors = payload.get("errors", {})
    supported = payload.get("fraction_of_supported_ops", {})
    for info, _ in models:
        if info.name in errors:
            result.skipped.append((info.name, f"DeepSparse {result.version} could not run it: {errors[info.name]}"))
            continue
        fraction = supported.get(info.name)
        note = f"; fraction_of_supported_ops {fraction:.4f}" if isinstance(fraction, (int, float)) else ""
        result.infos.append(replace(info, method=info.method + note))
    result.times = {int(b): times for b, times in payload["times_s"].items()}
    with np.load(work / "outputs.npz") as outputs:
        result.outputs = {name: outputs[name] for name in outputs.files}
    return result


# ---------------------------------------------------------------------------- the worker (DeepSparse venv)

def _chunks(feeds: Mapping[str, np.ndarray], names: Sequence[str], batch: int) -> list[list[np.ndarray]]:
    n = len(feeds[names[0]])
    return [[np.ascontiguousarray(feeds[name][i:i + batch]) for name in names] for i in range(0, n, batch)]


_PROBE = """
import sys
import numpy as np
from deepsparse import compile_model
path, batch, threads, feeds, names = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
with np.load(feeds) as data:
    arrays = [np.ascontiguousarray(data[name][:batch]) for name in names]
compile_model(path, batch_size=batch, num_cores=threads).run(arrays)
"""


def _probe(path: str, batch: int, threads: int, feeds_path: str, names: Sequence[str]) -> str | None:
    """Compile and run ``path`` once in a child process: DeepSparse aborts the whole process on
    some graphs (an assertion in its planner), which must not take the worker with it. None
    when it ran, else DeepSparse's own message."""
    try:
        run = subprocess.run([sys.executable, "-c", _PROBE, path, str(batch), str(threads), feeds_path, *names],
                             capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return f"compile_model(batch_size={batch}) and one run took over 600 s"
    if run.returncode == 0:
        return None
    lines = [line.strip() for line in (run.stderr + run.stdout).splitlines() if line.strip()]
    key = [line for line in lines if "Assertion" in line or "Error" in line] or lines[-1:] or ["(no output)"]
    return f"compile_model(batch_size={batch}) ended the process (exit {run.returncode}): {key[0]}"


def _compile(models: Mapping[str, str], batch: int, threads: int, feeds_path: str, names: Sequence[str],
             errors: dict[str, str], supported: dict[str, float]) -> dict[str, Any]:
    """Every model not failed yet, probed (``_probe``) then compiled at ``batch``; a failure is
    recorded in ``errors`` (the model is not tried again), ``fraction_of_supported_ops`` in ``supported``."""
    from deepsparse import compile_model

    engines = {}
    for name, path in models.items():
        if name in errors:
            continue
        errors_here = _probe(path, batch, threads, feeds_path, names)
        if errors_here:
            errors[name] = errors_here
            continue
        try:
            engine = compile_model(path, batch_size=batch, num_cores=threads)
            supported[name] = float(getattr(engine, "fraction_of_supported_ops", float("nan")))
            engines[name] = engine
        except Exception as exc:  # DeepSparse raises plain Exceptions / RuntimeErrors
            errors[name] = f"{type(exc).__name__}: {str(exc).strip()[-600:]}"
    return engines


def _time_batches(job: Mapping[str, Any], reference: Any, engines: Callable[[int, str], dict[str, Any]],
                  errors: dict[str, str]) -> dict[str, dict[str, list[float]]]:
    """Per timing batch: every engine that runs once, timed interleaved with onnxruntime dense."""
    from smp_bench.harness import Runner, TimingPlan, time_interleaved

    names = job["inputs"]
    times: dict[str, dict[str, list[float]]] = {}
    for batch_text, feeds_path in job["timing_feeds"].items():
        batch = int(batch_text)
        with np.load(feeds_path) as data:
            feeds = [data[name] for name in names]
        runnable = {}
        for name, engine in engines(batch, feeds_path).items():
            try:
                engine.run(feeds)
                runnable[name] = engine
            except Exception as exc:
                errors[name] = f"{type(exc).__name__} at run: {str(exc).strip()[-600:]}"
        inputs = dict(zip(names, feeds))
        runners = [Runner(OWN_REFERENCE, lambda x=inputs: reference.run(None, x))]
        runners += [Runner(name, (lambda e=engine, f=feeds: e.run(f))) for name, engine in runnable.items()]
        plan = TimingPlan(runs=int(job["rounds"][batch_text]), warmup=int(job["warmup"]))
        times[batch_text] = time_interleaved(runners, plan, batch_size=batch).times_s
    return times


def _eval_outputs(job: Mapping[str, Any], engines: Callable[[int, str], dict[str, Any]],
                  errors: dict[str, str]) -> dict[str, np.ndarray]:
    """Each engine that has not failed, on the evaluation inputs in chunks of ``eval_batch`` rows."""
    names = job["inputs"]
    outputs = {}
    with np.load(job["eval_feeds"]) as data:
        eval_feeds = {name: data[name] for name in names}
    for name, engine in engines(int(job["eval_batch"]), job["eval_feeds"]).items():
        if name in errors:
            continue
        try:
            outputs[name] = np.concatenate([engine.run(chunk)[0] for chunk in _chunks(eval_feeds, names,
                                                                                       int(job["eval_batch"]))])
        except Exception as exc:
            errors[name] = f"{type(exc).__name__} on the eval batches: {str(exc).strip()[-600:]}"
    return outputs


def _worker(job_path: Path) -> None:
    """Inside the DeepSparse venv: compile, time interleaved with onnxruntime dense, write outputs."""
    import deepsparse
    import onnxruntime as ort

    sys.path.insert(0, str(ROOT))
    job = json.loads(Path(job_path).read_text())
    names, threads = job["inputs"], job["threads"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    reference = ort.InferenceSession(job["reference"], options, providers=["CPUExecutionProvider"])
    errors: dict[str, str] = {}
    supported: dict[str, float] = {}
    engines_at: dict[int, dict[str, Any]] = {}

    def engines(batch: int, feeds_path: str) -> dict[str, Any]:
        if batch not in engines_at:
            engines_at[batch] = _compile(job["models"], batch, threads, feeds_path, names, errors, supported)
        return engines_at[batch]

    times = _time_batches(job, reference, engines, errors)
    outputs = _eval_outputs(job, engines, errors)
    np.savez(job["outputs"], **outputs)
    Path(job["out"]).write_text(json.dumps({"deepsparse": deepsparse.__version__, "onnxruntime": ort.__version__,
                                            "times_s": times, "errors": errors,
                                            "fraction_of_supported_ops": supported}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, required=True, help="job.json written by deepsparse_rows")
    _worker(parser.parse_args().job)


if __name__ == "__main__":
    main()
