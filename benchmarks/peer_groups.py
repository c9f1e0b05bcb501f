"""The groups of the peers suite (``benchmarks/peers.py``) and what it collects from them.

A ``Group`` is one interleaved run's models: the dense reference export (``ort-dense``) and the
project's exports, built by smp-bench's own planner:

- ``shipped_group``: the SMP-S checkpoint in ``checkpoints/`` in every variant x precision of the
  variant table, exported into ``--work-dir`` (reused while current); the reference is the
  unpruned MiniLM with the same head (smp-bench's baseline);
- ``magnitude_group``: the packaged MiniLM magnitude-pruned to each ``--sparsity``, every variant
  x precision, from smp-bench's export cache; the reference is the unpruned encoder.

``Collected`` is everything the run measured, for the report.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from peer_rows import export_bytes

from runtime.contract import MODEL_FILE
from runtime.errors import SmpError
from runtime.kernels import SPARSE_DOMAIN
from runtime.manifest import Manifest
from smp_bench.config import BenchConfig
from smp_bench.peers import RowInfo, Skipped

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("peers")          # the suite's own logger (benchmarks/peers.py sets it to INFO)
SHIPPED = ROOT / "checkpoints" / "minilm-bbc-smp-s-keep0.10"


@dataclass
class Group:
    """One interleaved run's models: the dense reference export and the project's exports."""

    name: str
    description: str
    reference: Path
    exports: list[tuple[RowInfo, Path]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Collected:
    """Everything the run measured, for the report."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    other_cores: dict[str, float | None] = field(default_factory=dict)   # others' busy cores while timing


# ---------------------------------------------------------------------------- the project's exports

def _bench_config(args: argparse.Namespace, **options: Any) -> BenchConfig:
    """smp-bench's config for the builds: ``auto`` tuned at the largest batch x seq-len and --threads."""
    return BenchConfig.from_flat(batch=max(args.batch), seq_len=args.seq_len, threads=args.threads,
                                 cache_dir=args.cache_dir, torch_eager=False, **options)


def _builds(config: BenchConfig, notes: list[str]) -> list[tuple[str, str]]:
    """Every (variant, precision) of the variant table that runs on the CPU, as smp-bench builds them."""
    from smp_bench.plan import export_builds

    return export_builds(config, notes)


def _current(out: Path, options: Any, source: Path) -> bool:
    """``out`` is a validated export of ``source`` made by this exporter code with ``options``."""
    from smp_export.export import export_options_record
    from smp_export.versions import SOURCE_DIGEST_KEY, source_digest

    try:
        manifest = Manifest.read(out)
        same_source = Path(manifest.source_path).resolve() == source.resolve()
    except (SmpError, OSError):
        return False
    return (same_source and (out / MODEL_FILE).is_file() and manifest.validation.passed
            and manifest.weights == options.weights and manifest.precision == options.precision
            and manifest.versions.get(SOURCE_DIGEST_KEY) == source_digest()
            and manifest.export_options == export_options_record(options))


def project_info(name: str, export_dir: Path, model: str, sparsity: float) -> RowInfo:
    """A project export as a row: what its manifest says it is; a dense peer unless it needs ai.smp."""
    manifest = Manifest.read(export_dir)
    kernels = SPARSE_DOMAIN in manifest.custom_op_domains
    method = f"smp-export --weights {manifest.weights} --precision {manifest.precision}"
    return RowInfo(name, "onnxruntime", model, manifest.precision, method + (" (ai.smp kernels)" if kernels else ""),
                   not kernels, export_bytes(export_dir), str(export_dir), sparsity)


def _reference_of(export_dirs: Sequence[Path], config: BenchConfig) -> Path:
    """smp-bench's ort-dense for these exports: the unpruned model of their source (cached)."""
    from smp_bench.plan import plan_variants

    specs, _, _ = plan_variants(BenchConfig.from_flat(**{**_flat(config), "export_dirs": tuple(export_dirs)}),
                                lambda message: logger.info("%s", message))
    return next(s.export_dir for s in specs if s.is_reference)


def _flat(config: BenchConfig) -> dict[str, Any]:
    return {k: v for group in config.to_dict().values() for k, v in group.items()}


def shipped_group(args: argparse.Namespace) -> Group:
    """A shipped checkpoint (``--checkpoint``, default the SMP-S 10% one) in every variant x CPU
    precision, exported into ``--work-dir``/shipped."""
    from smp_bench.plan import export_options, family_of
    from smp_export.export import export_onnx
    from smp_export.readers import read_checkpoint

    config = _bench_config(args, precisions=tuple(_precisions()))
    source = Path(getattr(args, "checkpoint", None) or SHIPPED)
    group = Group("shipped", "", source)
    ckpt = None
    built: list[tuple[str, Path]] = []
    for weights, precision in _builds(config, group.notes):
        family = family_of(weights, precision)
        out = args.work_dir / "shipped" / family
        options = export_options(config, weights, precision)
        try:
            if args.rebuild or not _current(out, options, source):
                ckpt = ckpt or read_checkpoint(source)
                logger.info("exporting %s --weights %s --precision %s -> %s", source, weights, precision, out)
                export_onnx(ckpt, out, options=options)
        except SmpError as exc:
            group.skipped.append(Skipped(group.name, f"{family}@shipped", f"smp-export failed: {exc}"))
            continue
        built.append((family, out))
    if not built:
        raise SystemExit(f"error: no export of {source} could be built: "
                         + "; ".join(f"{s.name}: {s.reason}" for s in group.skipped))
    group.reference = _reference_of([out for _, out in built], config)
    density = float(Manifest.read(built[0][1]).totals.get("density", 1.0)) if built else 1.0
    for family, out in built:
        group.exports.append((project_info(f"{family}@{1 - density:.2f}", out, f"SMP-S {density:.2f} kept",
                                           1 - density), out))
    own_dense = any(Path(group.reference).resolve() == out.resolve() for _, out in built)
    runs = (f"this checkpoint's own dense export ({group.reference}: its zeros kept, so the unpruned model's "
            "shapes and dense speed, but the pruned model's outputs; its source has no unpruned model on disk)"
            if own_dense else f"the unpruned MiniLM with the same head ({group.reference})")
    group.description = (f"The shipped SMP-S checkpoint ({_shown(source)}, {density:.1%} of the encoder's "
                         "linear weights kept, prototype head: logits) in every variant x precision; ort-dense and "
                         f"the peers run {runs}. task acc: the head's accuracy; cosine: of the logit rows.")
    return group


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def magnitude_group(args: argparse.Namespace) -> Group:
    """The packaged MiniLM magnitude-pruned to each ``--sparsity``, every variant x precision, via
    smp-bench's own export cache (one plan per build, so one failing build skips only itself)."""
    from smp_bench.plan import plan_variants

    group = Group("magnitude", "", Path())
    for level in args.sparsity:
        config = _bench_config(args, sweep=(level,), precisions=tuple(_precisions()))
        for weights, precision in _builds(config, group.notes):
            one = _bench_config(args, sweep=(level,), variants=(weights,), precisions=(precision,))
            try:
                specs, _, _ = plan_variants(one, lambda message: logger.info("%s", message))
            except SmpError as exc:
                name = f"{weights}-{precision}@{level:.2f}"
                group.skipped.append(Skipped(group.name, name, f"smp-export failed: {exc}"))
                continue
            group.reference = next(s.export_dir for s in specs if s.is_reference)
            for spec in specs:
                if not spec.is_reference:
                    group.exports.append((project_info(spec.name, spec.export_dir, f"magnitude {level:.2f}",
                                                       spec.sparsity), spec.export_dir))
    if not group.exports:
        raise SystemExit("error: no magnitude-pruned export could be built: "
                         + "; ".join(f"{s.name}: {s.reason}" for s in group.skipped))
    levels = ", ".join(f"{s:.2f}" for s in args.sparsity)
    group.description = (f"The packaged MiniLM magnitude-pruned per matrix to {levels} sparsity (smp-bench's "
                         "export cache), every variant x precision; ort-dense and the peers run the unpruned "
                         f"encoder ({group.reference}). task acc: nearest centroid with ort-dense's centroids; "
                         "cosine: of the mean-pooled embeddings.")
    return group


def _precisions() -> tuple[str, ...]:
    """The precisions timed on a CPU (fp16 is for GPUs: on a CPU it only adds a slow row)."""
    from smp_export.options import CPU_PRECISIONS

    return tuple(CPU_PRECISIONS)
