"""What a run writes: the environment, one flat record per variant, and the files
(``results.json`` / ``results.md`` / ``results.png`` / ``timings.json`` / ``profile.json``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import stats
from .config import BenchConfig
from .harness import TimingResult
from .memory import memory_fields
from .plan import LoadedVariant
from .records import build_record, write_json, write_markdown


def environment(config: BenchConfig) -> dict[str, Any]:
    """The machine, the versions and the thread settings the run measured with."""
    env = stats.environment()
    env["ort_intra_op_threads"] = config.timing.threads if config.timing.threads else "default"
    env["ort_spinning"] = config.timing.spin
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        if config.backends.device == "cuda" and torch.cuda.is_available():
            env["cuda_device"] = torch.cuda.get_device_name()
            env["torch_cuda"] = torch.version.cuda
    except ImportError:
        pass
    try:
        env["load_average"] = "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        pass
    return env


def _onnx_bytes(export_dir: Path | None) -> int | None:
    if export_dir is None:
        return None
    return sum(p.stat().st_size for p in Path(export_dir).iterdir()
               if p.is_file() and (p.suffix == ".onnx" or p.name.endswith(".onnx.data")))


def _info(live: LoadedVariant, reference: LoadedVariant, config: BenchConfig) -> dict[str, Any]:
    spec = live.spec
    return {"backend": spec.backend, "family": spec.family, "precision": spec.precision, "sparsity": spec.sparsity,
            "density": 1.0 - spec.sparsity, "device": config.backends.device, "providers": live.providers,
            "export_dir": str(spec.export_dir) if spec.export_dir else None,
            "is_reference": spec.is_reference, "reference": reference.spec.name,
            "seq_len": config.timing.seq_len, "warmup": config.timing.warmup, "output": live.output_name,
            "load_s": live.load_s, "onnx_bytes": _onnx_bytes(spec.export_dir)}


@dataclass
class Measurements:
    """What was measured besides timing, by variant name: memory-probe results, accuracy
    fields and onnxruntime operator profiles."""

    memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)
    profiles: dict[str, Any] = field(default_factory=dict)

    def record_fields(self, name: str) -> dict[str, Any]:
        """The flat record fields of one variant's measurements."""
        extra = memory_fields(self.memory.get(name))
        extra.update(self.evals.get(name, {}))
        if name in self.profiles:
            extra.update(self.profiles[name].to_fields())
        return extra


def build_records(lives: list[LoadedVariant], reference: LoadedVariant, config: BenchConfig, timing: TimingResult,
                  measured: Measurements, env: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat record per variant."""
    return [build_record(live.spec.name, info=_info(live, reference, config), summary=timing.summary(live.spec.name),
                         speedup=timing.speedup(live.spec.name, reference.spec.name),
                         extra=measured.record_fields(live.spec.name), environment=env, command=config.output.command)
            for live in lives]


def _write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def write_files(config: BenchConfig, records: list[dict[str, Any]], skipped: list[dict[str, str]], notes: list[str],
                timing: TimingResult, env: dict[str, Any], profiles: dict[str, Any],
                echo: Callable[[str], None]) -> dict[str, Path]:
    """Write the results files into ``config.output.output_dir``; returns them by kind."""
    out = Path(config.output.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["json"] = write_json(out / "results.json", records, skipped=skipped, notes=notes,
                               environment=env, command=config.output.command, config=config.to_dict())
    files["timings"] = _write_json(out / "timings.json", timing.to_dict())
    plot_name = _plot(config, records, out, env, files, notes, echo)
    md_notes = [*notes, *[f"skipped {s['name']}: {s['reason']}" for s in skipped]]
    files["markdown"] = write_markdown(out / "results.md", records, plot=plot_name, notes=md_notes)
    if profiles:
        files["profile"] = _write_json(out / "profile.json", {n: p.to_dict() for n, p in profiles.items()})
    return files


def _plot(config: BenchConfig, records: list[dict[str, Any]], out: Path, env: dict[str, Any],
          files: dict[str, Path], notes: list[str], echo: Callable[[str], None]) -> str | None:
    """``results.png`` (into ``files``), or None with a note why not."""
    if not config.output.plot:
        return None
    from .errors import PlotError
    from .plot import plot_results

    try:
        files["png"] = plot_results(records, out / "results.png",
                                    title=f"{config.output.command or 'smp-bench'} | {env.get('cpu_model')}")
    except PlotError as exc:
        notes.append(f"no plot: {exc}")
        echo(f"warning: no plot: {exc}")
        return None
    return "results.png"
