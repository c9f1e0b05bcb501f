"""``smp-bench [EXPORT_DIR ...]``: a thin click layer over ``smp_bench.run.run_benchmark``.

Each option is spelled once, in its decorator: its parameter name is a field of one of the
``BenchConfig`` groups (``smp_bench.config.GROUPS``), and ``BenchConfig.from_flat`` gives it there.
"""

from __future__ import annotations

# ruff: noqa: E402  (the extra is checked before its packages are imported)

import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from .common import cli_errors, configure_logging, require_extra, split_names

require_extra("smp-bench", "bench", "torch", "transformers", "onnx", "matplotlib")

from smp_bench.config import BACKENDS, BenchConfig
from smp_bench.run import run_benchmark


#: Parameters handled here rather than passed on as config fields: -o/--output becomes
#: ``output_dir`` (with its timestamped default), -v/--verbose sets up logging.
CLI_ONLY = frozenset({"output", "verbose"})


class _RecordingCommand(click.Command):
    """Keeps the raw arguments, so results record the exact command line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["smp_bench_argv"] = list(args)
        return super().parse_args(ctx, args)


def _floats(text: str | None, option: str) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"not a comma-separated list of numbers: {text!r}", param_hint=option) from None


def _names(text: str | None) -> tuple[str, ...] | None:
    """None when not given (every variant); a given list that names nothing stays () and is refused."""
    return None if not text else split_names(text)


def bench_config(ctx: click.Context, options: dict[str, Any], *, sweep: str | None, variants: str | None,
                 output: Path | None, precisions: str = "fp32") -> BenchConfig:
    """The run's config: the click parameters as they are (EXPORT_DIRs included), the lists parsed,
    plus the output directory and the command line to record."""
    command = "smp-bench " + shlex.join(ctx.meta.get("smp_bench_argv", sys.argv[1:]))
    return BenchConfig.from_flat(
        **options, sweep=_floats(sweep, "--sweep"), variants=_names(variants), precisions=split_names(precisions),
        output_dir=output or Path(f"bench-{datetime.now():%Y%m%d-%H%M%S}"), command=command)


@click.command(cls=_RecordingCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("export_dirs", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--batch", type=int, default=32, show_default=True, help="Sequences per timed batch.")
@click.option("--seq-len", type=int, default=128, show_default=True,
              help="Tokens per sequence (timed batch padded/truncated to it; eval truncated at it).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--io-binding/--no-io-binding", default=None,
              help="onnxruntime: time runs with inputs and outputs bound on the device (no host copies) "
                   "[default: on with --device cuda, off on the CPU].")
@click.option("--tensorrt", is_flag=True, help="--device cuda: TensorRT in front of CUDA (fp16 / sparse tactics "
                                               "for fp16 / 2:4 exports; engines cached in each export's trt-cache/).")
@click.option("--backend", type=click.Choice(BACKENDS), default="ort", show_default=True,
              help="ort: onnxruntime exports (+ torch eager dense); torch: torch eager dense + masked "
                   "torch.sparse CSR models; all: both.")
@click.option("--runs", type=int, default=20, show_default=True, help="Timed runs per variant.")
@click.option("--warmup", type=int, default=3, show_default=True, help="Warm-up runs per variant (not counted).")
@click.option("--threads", type=int, default=None, help="Intra-op threads (onnxruntime and torch); default: theirs.")
@click.option("--spin/--no-spin", default=False, show_default=True,
              help="Let onnxruntime's intra-op threads spin between runs. Off by default: the variants run "
                   "interleaved, and one session's spinning threads take the cores from the next one's run.")
@click.option("--sparsity", type=float, default=0.9, show_default=True,
              help="Magnitude sparsity of the default model when no EXPORT_DIR is given.")
@click.option("--sweep", type=str, default=None,
              help="Comma-separated sparsity levels: magnitude-prune the default model at each, plot the curve.")
@click.option("--variants", type=str, default=None,
              help="Export variants to build for the default model / sweep (comma-separated); default: all.")
@click.option("--precisions", type=str, default="fp32", show_default=True,
              help="Precisions each export variant is built in, comma-separated (fp32, int8): int8 builds "
                   "dense-int8, compact-int8 (the variants that support it) beside the fp32 ones.")
@click.option("--model-dir", type=click.Path(path_type=Path), default=None,
              help="Dense model directory (BERT, DistilBERT) to prune instead of the packaged MiniLM.")
@click.option("--baseline", "baseline_dir", type=click.Path(path_type=Path), default=None,
              help="Dense ONNX export to use as the ort-dense reference.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path("build/bench-cache"),
              show_default=True, help="Where built masks and exports are kept between runs.")
@click.option("--rebuild", is_flag=True, help="Rebuild masks and exports instead of reusing them.")
@click.option("--torch-eager/--no-torch-eager", default=True, show_default=True,
              help="Time the dense model in PyTorch eager too (--backend ort).")
@click.option("--data", type=str, default="bbc", show_default=True,
              help="Eval data: bbc (BBC News test split), none, or a .csv/.tsv/.jsonl file.")
@click.option("--text-column", type=str, default=None, help="Text column of --data (GLUE TSVs: detected).")
@click.option("--text-pair-column", type=str, default=None, help="Second text column (sentence pairs).")
@click.option("--label-column", type=str, default=None, help="Label column of --data.")
@click.option("--eval-samples", type=int, default=256, show_default=True, help="Eval texts (0: no accuracy).")
@click.option("--centroid-samples", type=int, default=256, show_default=True,
              help="Train texts for the nearest-centroid accuracy of encoders.")
@click.option("--seed", type=int, default=13, show_default=True, help="Data split / sampling seed.")
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="Peak RSS per variant, each in its own process.")
@click.option("--profile", is_flag=True, help="Print onnxruntime's per-operator time split per variant.")
@click.option("--profile-runs", type=int, default=3, show_default=True)
@click.option("--plot/--no-plot", default=True, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--custom-op-library", "custom_op_libraries", multiple=True, type=click.Path(path_type=Path),
              help="onnxruntime custom-op library to register (repeatable).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Results directory [default: ./bench-YYYYmmdd-HHMMSS].")
@click.option("-v", "--verbose", is_flag=True, help="Log progress.")
@click.pass_context
def main(ctx: click.Context, sweep: str | None, variants: str | None, output: Path | None, verbose: bool,
         precisions: str = "fp32", **options: Any) -> None:
    """Measure what pruning buys: latency, throughput, speed-up, memory, size and accuracy of
    every variant, interleaved, against the dense model.

    With no EXPORT_DIR: the packaged MiniLM dense vs. its magnitude-pruned exports (--sparsity,
    or every --sweep level). Writes results.json, results.md, results.png and timings.json.
    """
    configure_logging(verbose)
    with cli_errors(sigterm=True):
        config = bench_config(ctx, options, sweep=sweep, variants=variants, output=output, precisions=precisions)
        result = run_benchmark(config, echo=lambda message: click.echo(message, err=True))
    click.echo(result.table)
    for item in result.skipped:
        click.echo(f"skipped {item['name']}: {item['reason']}")
    for note in result.notes:
        click.echo(f"note: {note}")
    if result.profile_text:
        click.echo("")
        click.echo(result.profile_text)
    click.echo("")
    for kind, path in result.files.items():
        click.echo(f"{kind}: {path}")


if __name__ == "__main__":
    main()
