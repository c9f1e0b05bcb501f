"""What one run measures: the variants (``VariantSpec`` before loading, ``LoadedVariant`` after), and the
masks and exports of the default model / sweep, built into the cache or reused.

With no EXPORT_DIR, the packaged MiniLM (or ``model_dir``) is magnitude-pruned to ``sparsity``
(each ``sweep`` level instead when given); exports are reused from ``cache_dir`` when they
match (same exporter code, options, precision, source and density), else built there; with
``--precisions fp32,int8`` each variant that supports int8 is built in it too (``dense-int8@0.90``,
family ``dense-int8``). With EXPORT_DIRs, the source checkpoint is
rebuilt from each manifest to get the unpruned baseline and the torch models; ``baseline_dir``
names the dense ONNX export explicitly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from runtime.errors import SmpError
from runtime.manifest import MANIFEST_NAME, Manifest

from .config import (DEFAULT_TAG, ORT_DENSE, TORCH_DENSE, BenchConfig, CheckpointCache, CheckpointSource,
                     checkpoint_from_manifest)
from .errors import BenchmarkError
from .harness import Runner

if TYPE_CHECKING:
    from smp_export.export import ExportOptions

logger = logging.getLogger(__name__)


def _baseline() -> str:
    """The variant speed-ups are measured against (imported lazily: the exporter imports torch)."""
    from smp_export.variants import BASELINE

    return BASELINE

Echo = Callable[[str], None]


@dataclass
class VariantSpec:
    """A variant before it is loaded."""

    name: str
    backend: str                          # onnxruntime | torch
    family: str                           # dense, sparse-initializer, compact, eager-dense, csr, ...
    sparsity: float
    export_dir: Path | None = None
    source: CheckpointSource | None = None
    csr: bool = False
    is_reference: bool = False
    precision: str = "fp32"               # what the export's weights are stored as (fp32 | int8)


@dataclass
class LoadedVariant:
    """A loaded variant: how to time it, how to get outputs for evaluation."""

    spec: VariantSpec
    runner: Runner
    outputs: Callable[[dict[str, np.ndarray]], np.ndarray]
    output_name: str
    load_s: float
    providers: str
    id2label: dict[int, str]

    @property
    def kind(self) -> str:
        """What the outputs are, for the accuracy metrics: ``embeddings`` or ``logits``."""
        return "embeddings" if self.output_name == "last_hidden_state" else "logits"


def _sparsity_of(export_dir: Path) -> float:
    density = Manifest.read(export_dir).totals.get("density")
    return 1.0 - float(density) if density is not None else 0.0


def export_options(config: BenchConfig, weights: str, precision: str = "fp32") -> ExportOptions:
    """The ExportOptions smp-bench exports with: ``auto`` is tuned at the benchmark's own shape."""
    from smp_export.autotune import AutotuneConfig
    from smp_export.export import ExportOptions

    timing = config.timing
    return ExportOptions(weights=weights, overwrite=True, precision=precision,
                         autotune=AutotuneConfig(tokens=(timing.batch * timing.seq_len,), threads=timing.threads))


def family_of(weights: str, precision: str) -> str:
    """A variant's family in the tables and plots: the weights variant, ``-int8`` when quantized."""
    return weights if precision == "fp32" else f"{weights}-{precision}"


def export_builds(config: BenchConfig, notes: list[str]) -> list[tuple[str, str]]:
    """The (weights, precision) exports of the default model: every ``--precisions`` entry of each
    variant that supports it; a note for those that do not, BenchmarkError when nothing is left."""
    from smp_export.variants import VARIANTS

    builds, lacking = [], {}
    for weights in config.export_variants():
        for precision in config.model.precisions:
            if precision in VARIANTS[weights].precisions:
                builds.append((weights, precision))
            else:
                lacking.setdefault(precision, []).append(weights)
    for precision, names in lacking.items():
        notes.append(f"no {precision} export of {', '.join(names)}: not available for these variants "
                     f"(smp-export --precision {precision} says why)")
    if not builds:
        raise BenchmarkError(f"none of the variants {', '.join(config.export_variants())} supports precision "
                             f"{', '.join(config.model.precisions)}", field="--precisions")
    return builds


def _export(ckpt, options, out: Path) -> Path:
    from smp_export.export import export_onnx

    export_onnx(ckpt, out, options=options)
    return out


def _current(manifest: Manifest, options) -> bool:
    """Made by this exporter's code (source digest) with the options asked for now."""
    from smp_export.export import export_options_record
    from smp_export.versions import SOURCE_DIGEST_KEY, source_digest

    return (manifest.versions.get(SOURCE_DIGEST_KEY) == source_digest()
            and manifest.export_options == export_options_record(options))


# ---------------------------------------------------------------------------- the default model

def _model_dir(config: BenchConfig) -> tuple[Path, str]:
    if config.model.model_dir is None:
        from smp_export.default_model import default_model_dir

        return default_model_dir(), DEFAULT_TAG
    path = Path(config.model.model_dir).resolve()
    if not path.is_dir():
        raise BenchmarkError("model directory not found", path=path, field="--model-dir")
    return path, f"{path.name}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"


def _manifest_ok(directory: Path, *, options, source: Path, density: float | None) -> bool:
    try:
        manifest = Manifest.read(directory)
    except (SmpError, OSError):
        return False
    if (manifest.weights != options.weights or manifest.precision != options.precision
            or not (directory / "model.onnx").is_file()):
        return False
    if not _current(manifest, options):
        logger.info("not reusing %s: made by other exporter code or options", directory)
        return False
    if not manifest.validation.passed:
        return False
    try:
        same = Path(manifest.source_path).resolve() == source.resolve()
    except OSError:
        return False
    got = manifest.totals.get("density")
    return same and (density is None or (got is not None and abs(float(got) - density) < 2e-3))


class _Builder:
    """Builds (or finds) masks and exports of the default model, with a log line per build."""

    def __init__(self, config: BenchConfig, echo: Echo):
        self.config = config
        self.echo = echo
        self.model_dir, self.tag = _model_dir(config)
        self.cache = Path(config.model.cache_dir) / self.tag
        self.checkpoint = CheckpointCache()

    def mask_source(self, level: float) -> CheckpointSource:
        from smp_export.magnitude import write_magnitude_mask_file

        mask = (self.cache / f"magnitude-sparsity{level:.2f}.npy").resolve()
        if not mask.is_file() or self.config.model.rebuild:
            self.echo(f"building magnitude masks at sparsity {level:.2f}: {mask}")
            write_magnitude_mask_file(self.model_dir, 1.0 - level, mask)
        return CheckpointSource("packed", str(self.model_dir), mask_file=str(mask))

    def dense_source(self) -> CheckpointSource:
        return CheckpointSource("dense", str(self.model_dir), unpruned=True)

    def export(self, source: CheckpointSource, weights: str, out: Path, *, density: float | None,
               precision: str = "fp32") -> Path:
        options = export_options(self.config, weights, precision)
        if not self.config.model.rebuild and _manifest_ok(out, options=options, source=self.model_dir, density=density):
            logger.info("reusing %s", out)
            return out
        self.echo(f"exporting {family_of(weights, precision)} ({'unpruned' if source.unpruned else source.mask_file}) "
                  f"-> {out}")
        return _export(self.checkpoint(source), options, out)

    def dense_export(self) -> Path:
        return self.export(self.dense_source(), _baseline(), self.cache / "unpruned-dense", density=1.0)

    def level_exports(self, level: float, builds: list[tuple[str, str]]) -> list[VariantSpec]:
        source = self.mask_source(level)
        specs = []
        for weights, precision in builds if self.config.uses_ort else ():
            family = family_of(weights, precision)
            out = self.export(source, weights, self.cache / f"sparsity{level:.2f}-{family}", density=1.0 - level,
                              precision=precision)
            specs.append(VariantSpec(f"{family}@{level:.2f}", "onnxruntime", family, _sparsity_of(out), out, source,
                                     precision=precision))
        if self.config.uses_torch_csr:
            specs.append(VariantSpec(f"torch-csr@{level:.2f}", "torch", "csr", level, None, source, csr=True))
        return specs


# ---------------------------------------------------------------------------- the plan

@dataclass
class _Plan:
    """The variants found so far, and where the dense references can come from."""

    config: BenchConfig
    echo: Echo
    pruned: list[VariantSpec] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    taken: set[str] = field(default_factory=lambda: {ORT_DENSE, TORCH_DENSE})
    dense_source: CheckpointSource | None = None
    dense_export: Path | None = None

    def unique(self, name: str) -> str:
        out, i = name, 2
        while out in self.taken:
            out, i = f"{name}#{i}", i + 1
        self.taken.add(out)
        return out


def plan_variants(config: BenchConfig, echo: Echo) -> tuple[list[VariantSpec], list[dict[str, str]], list[str]]:
    """Every variant to measure (reference first), what was skipped, notes for the reader."""
    plan = _Plan(config, echo)
    if not config.model.export_dirs or config.model.sweep:
        _add_default_model(plan)
    _add_user_exports(plan)
    ort_dense = [_ort_reference(plan)] if config.uses_ort else []
    torch_dense = _torch_reference(plan) if config.uses_torch_eager else []
    # Interleaving order: torch eager first, then the reference, then the variants.
    return torch_dense + ort_dense + plan.pruned, plan.skipped, plan.notes


def _add_default_model(plan: _Plan) -> None:
    config = plan.config
    builder = _Builder(config, plan.echo)
    builds = export_builds(config, plan.notes) if config.uses_ort else []
    for level in (config.model.sweep or (config.model.sparsity,)):
        for spec in builder.level_exports(level, builds):
            spec.name = plan.unique(spec.name)
            plan.pruned.append(spec)
    plan.dense_source = builder.dense_source()
    if config.uses_ort and config.model.baseline_dir is None:
        plan.dense_export = builder.dense_export()


def _user_source(directory: Path, notes: list[str]) -> CheckpointSource | None:
    try:
        checkpoint_from_manifest(directory)   # fails early when the source is gone
        return CheckpointSource("manifest", str(directory.resolve()))
    except SmpError as exc:
        notes.append(f"{directory}: source checkpoint not available ({exc}); no torch model of it")
        return None


def _add_user_exports(plan: _Plan) -> None:
    """An onnxruntime runner per EXPORT_DIR, a torch-csr one per distinct source checkpoint."""
    config = plan.config
    user_sources: dict[tuple, CheckpointSource | None] = {}
    for directory in map(Path, config.model.export_dirs):
        manifest = Manifest.read(directory)
        sparsity = 1.0 - float(manifest.totals.get("density", 1.0))
        key = (manifest.source_format, manifest.source_path,
               json.dumps(manifest.metadata, sort_keys=True, default=str))
        if key not in user_sources:
            user_sources[key] = _user_source(directory, plan.notes)
        source = user_sources[key]
        if config.uses_ort:
            plan.pruned.append(VariantSpec(plan.unique(directory.name), "onnxruntime",
                                           family_of(manifest.weights, manifest.precision), sparsity, directory,
                                           source, precision=manifest.precision))
        if source is not None and plan.dense_source is None:
            plan.dense_source = dataclasses.replace(source, unpruned=True)
    if not config.uses_torch_csr:
        return
    for key, source in user_sources.items():
        if source is None:
            plan.skipped.append({"name": f"torch-csr ({key[1]})", "reason": "source checkpoint not available"})
            continue
        sparsity = _sparsity_of(Path(source.path))
        plan.pruned.append(VariantSpec(plan.unique(f"torch-csr@{sparsity:.2f}"), "torch", "csr", sparsity, None,
                                 source, csr=True))


def _torch_reference(plan: _Plan) -> list[VariantSpec]:
    """``torch-eager-dense``, or nothing (skipped) without a source checkpoint."""
    if plan.dense_source is not None:
        return [VariantSpec(TORCH_DENSE, "torch", "eager-dense", 0.0, None, plan.dense_source,
                      is_reference=not plan.config.uses_ort)]
    plan.skipped.append({"name": TORCH_DENSE, "reason": "no source checkpoint to build the torch model from"})
    if not plan.config.uses_ort:
        raise BenchmarkError("--backend torch needs the source checkpoints of the exports (none is "
                             "available)", field="--backend")
    return []


def _ort_reference(plan: _Plan) -> VariantSpec:
    """``ort-dense``: the dense onnxruntime reference of every speed-up."""
    dense_export = _dense_export(plan)
    sparsity = _sparsity_of(dense_export) if (dense_export / MANIFEST_NAME).is_file() else 0.0
    return VariantSpec(ORT_DENSE, "onnxruntime", _baseline(), sparsity, dense_export, None, is_reference=True)


def _dense_export(plan: _Plan) -> Path:
    """``--baseline``, else the unpruned export of the default model or of the exports' source,
    else (no source) a ``--weights dense`` export among the EXPORT_DIRs."""
    config = plan.config
    if config.model.baseline_dir is not None:
        dense_export = Path(config.model.baseline_dir)
        if not (dense_export / "model.onnx").is_file():
            raise BenchmarkError("no model.onnx in the baseline directory", path=dense_export, field="--baseline")
        return dense_export
    if plan.dense_export is not None:
        return plan.dense_export
    if plan.dense_source is not None:
        digest = hashlib.sha1(plan.dense_source.to_json().encode()).hexdigest()[:10]
        out = Path(config.model.cache_dir) / f"unpruned-{digest}"
        return _export_unpruned(plan.dense_source, out, config, plan.echo)
    zeros = [s for s in plan.pruned if s.backend == "onnxruntime" and s.family == _baseline()]
    if not zeros:
        raise BenchmarkError("no dense baseline: the exports' source checkpoints are not available; pass "
                             "--baseline DIR (a dense ONNX export) or include a --weights dense export",
                             field="--baseline")
    plan.pruned.remove(zeros[0])
    plan.notes.append(f"ort-dense is {zeros[0].export_dir} (the pruned model with its zeros kept dense): same "
                      "speed as the unpruned model, but agreement is measured against the pruned one")
    return zeros[0].export_dir


def _export_unpruned(source: CheckpointSource, out: Path, config: BenchConfig, echo: Echo) -> Path:
    options = export_options(config, _baseline())
    if not config.model.rebuild and (out / MANIFEST_NAME).is_file() and (out / "model.onnx").is_file():
        try:
            if _current(Manifest.read(out), options):
                return out
        except SmpError:
            pass
    echo(f"exporting the unpruned dense baseline of {source.path} -> {out}")
    return _export(source.load(), options, out)
