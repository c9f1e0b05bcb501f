"""``make demo``: export the SMP-pruned MiniLM shipped in the repository, every variant in every
precision it offers (fp32, and int8 where the variant has it), validated.

Run as ``python -m cli.demo --output build/demo``. The checkpoint is smp-train's SMP-S run at
10% of the encoder weights on BBC News (``checkpoints/minilm-bbc-smp-s-keep0.10``: packed masks
over the packaged all-MiniLM-L6-v2 plus its frozen prototype head); ``make train-demo``
reproduces it. ``make demo`` then benchmarks the exports with ``smp-bench``. An int8 export goes
to ``<variant>-int8``.
"""

from __future__ import annotations

from pathlib import Path

import click

from smp_export.autotune import AutotuneConfig
from smp_export.export import WEIGHTS_VARIANTS, ExportOptions, export_onnx
from smp_export.options import CPU_PRECISIONS, FP32
from smp_export.variants import get_variant
from smp_export.readers import read_checkpoint
from smp_export.summary import format_summary

from .common import cli_errors, configure_logging, split_names

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "minilm-bbc-smp-s-keep0.10"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("build/demo"), show_default=True)
@click.option("--checkpoint", type=click.Path(path_type=Path), default=SHIPPED, show_default=True,
              help="Checkpoint to export (any format smp-export reads).")
@click.option("--weights", "variants", type=str, default=",".join(WEIGHTS_VARIANTS), show_default=True,
              help="Comma-separated export variants.")
@click.option("--precisions", type=str, default=",".join(CPU_PRECISIONS), show_default=True,
              help="Comma-separated precisions; each variant is exported in those it offers (fp16 too, "
                   "for a GPU: on a CPU it is slower than fp32).")
@click.option("--autotune-tokens", type=click.IntRange(min=1), default=32 * 128, show_default=True,
              help="Activation rows --weights auto times each linear at: the benchmark's batch x seq.")
def main(output: Path, checkpoint: Path, variants: str, precisions: str, autotune_tokens: int) -> None:
    """Export the shipped SMP checkpoint as every variant, validate each, print the summaries."""
    configure_logging(False)
    rows = []
    with cli_errors(sigterm=True):
        ckpt = read_checkpoint(checkpoint)
        wanted = split_names(precisions)
        for weights in split_names(variants):
            for precision in [p for p in get_variant(weights).precisions if p in wanted]:
                name = weights if precision == FP32 else f"{weights}-{precision}"
                out = output / f"minilm-{ckpt.method}-{ckpt.density():.2f}-{name}"
                tune = f" --autotune-tokens {autotune_tokens}" if get_variant(weights).autotunes else ""
                flag = "" if precision == FP32 else f" --precision {precision}"
                click.echo(f"\n$ smp-export {checkpoint} --weights {weights}{flag}{tune} -o {out}")
                options = ExportOptions(weights=weights, precision=precision, overwrite=True,
                                        autotune=AutotuneConfig(tokens=(autotune_tokens,)))
                manifest = export_onnx(ckpt, out, options=options)
                click.echo(format_summary(manifest, out))
                rows.append((name, manifest.files["model.onnx"], manifest.validation.max_abs_diff))
    click.echo(f"\n{'variant':<20} {'model.onnx':>14} {'max |diff| vs masked torch':>28}")
    for weights, size, diff in rows:
        click.echo(f"{weights:<20} {size / 2**20:>10.2f} MiB {diff:>28.2e}")


if __name__ == "__main__":
    main()
