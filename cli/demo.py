"""``make demo``: prune the embedded MiniLM, export every variant, validate, summarise.

Run as ``python -m cli.demo --output build/demo --sparsity 0.9``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from smp_export.default_model import default_model_dir, write_magnitude_mask_file
from smp_export.errors import SmpExportError
from smp_export.export import WEIGHTS_VARIANTS, ExportOptions, export_onnx
from smp_export.readers import ReadOptions, read_checkpoint
from smp_export.summary import format_summary


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("build/demo"), show_default=True)
@click.option("--sparsity", type=float, default=0.9, show_default=True, help="Magnitude sparsity per matrix.")
def main(output: Path, sparsity: float) -> None:
    """Prune the packaged MiniLM by magnitude, write the masks in the official packed-bit
    format, export dense / sparse-initializer / compact ONNX from them, validate each."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    model_dir = default_model_dir()
    mask_file = output / f"minilm-magnitude-sparsity{sparsity:.2f}.npy"
    rows = []
    try:
        write_magnitude_mask_file(model_dir, 1.0 - sparsity, mask_file)
        click.echo(f"masks: {mask_file} ({mask_file.stat().st_size:,} bytes)")
        ckpt = read_checkpoint(model_dir, ReadOptions(mask_file=mask_file))
        for weights in WEIGHTS_VARIANTS:
            out = output / f"minilm-{weights}"
            click.echo(f"\n$ smp-export {model_dir} --mask {mask_file} --weights {weights} -o {out}")
            manifest = export_onnx(ckpt, out, options=ExportOptions(weights=weights, overwrite=True))
            click.echo(format_summary(manifest, out))
            rows.append((weights, manifest.files["model.onnx"], manifest.validation.max_abs_diff))
    except SmpExportError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"\n{'variant':<20} {'model.onnx':>14} {'max |diff| vs masked torch':>28}")
    for weights, size, diff in rows:
        click.echo(f"{weights:<20} {size / 2**20:>10.2f} MiB {diff:>28.2e}")


if __name__ == "__main__":
    main()
