"""A short terminal table of what an export produced."""

from __future__ import annotations

from pathlib import Path

from runtime.manifest import LayerRecord, Manifest, ValidationRecord

from .checkpoint import parse_linear_name


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def _by_type(manifest: Manifest) -> dict[str, list[LayerRecord]]:
    groups: dict[str, list[LayerRecord]] = {}
    for record in manifest.layers:
        groups.setdefault(parse_linear_name(record.name)[1], []).append(record)
    return groups


def _top1_verdict(v: ValidationRecord) -> str:
    if v.top1_agreement is None:
        return ""
    if v.near_ties is None:                 # manifests written before near ties were set apart
        return f", top-1 {v.top1_agreement:.1%} >= {v.min_top1:.1%}"
    if v.top1_decisive is None:
        return f", top-1 not held (all {v.near_ties} rows near ties)"
    ties = f" ({v.near_ties} near ties not counted)" if v.near_ties else ""
    return f", top-1 {v.top1_decisive:.1%} >= {v.min_top1:.1%}{ties}"


def _verdict(manifest: Manifest) -> str:
    v = manifest.validation
    if v.skipped:
        return "SKIPPED (--no-validate)"
    diff = f"{v.max_abs_diff:.2e}" if v.max_abs_diff is not None else "n/a"
    if v.atol is None:          # int8: cosine and top-1 against thresholds
        top1 = _top1_verdict(v)
        return (f"passed (row cosine min {v.cosine_min:.4f} >= {v.min_cosine:g}, mean {v.cosine_mean:.5f}{top1}; "
                f"max |diff| {diff} on {len(v.shapes)} shapes)")
    labels = "" if v.labels_agree is None else f", labels agree: {v.labels_agree}"
    return f"passed (max |diff| {diff} <= atol {v.atol:g} on {len(v.shapes)} shapes{labels})"


def format_summary(manifest: Manifest, output_dir: str | Path) -> str:
    """Totals, per-matrix-type density and the validation verdict, one screen."""
    t = manifest.totals
    lines = [
        f"exported {manifest.source_format}/{manifest.method} -> {output_dir} [{manifest.weights}, "
        f"{manifest.precision}]",
        f"  pruned linears : {t['pruned_linears']}  density {t['density']:.4f}"
        f"  ({t['nnz']:,} of {t['params']:,} weights kept)",
        f"  stored params  : {t['stored_params']:,}  linear bytes {_mib(t['linear_bytes'])}",
        f"  model.onnx     : {_mib(manifest.files.get('model.onnx', 0))}",
        f"  validation     : {_verdict(manifest)}",
    ]
    if "heads_removed" in t:
        lines.append(f"  compaction     : {t['heads_removed']} heads, {t['neurons_removed']} FFN neurons removed")
    lines.append(f"  {'matrix type':<18} {'count':>5} {'shape':>10} {'stored params':>14} {'density':>8} {'bytes':>12}")
    for kind, rows in _by_type(manifest).items():
        shape = "x".join(map(str, rows[0].shape))
        stored = sum(r.stored_shape[0] * r.stored_shape[1] for r in rows)
        nnz = sum(r.nnz for r in rows)
        total = sum(r.shape[0] * r.shape[1] for r in rows)
        lines.append(f"  {kind:<18} {len(rows):>5} {shape:>10} {stored:>14,} {nnz / total:>8.4f}"
                     f" {sum(r.bytes for r in rows):>12,}")
    return "\n".join(lines)
