"""``smp-export MODEL_DIR --format onnx [-o OUT_DIR]``: a thin click layer over smp_export."""

from __future__ import annotations

# ruff: noqa: E402  (the extra is checked before its packages are imported)

import tempfile
from dataclasses import fields
from pathlib import Path

import click

from .common import cli_errors, configure_logging, require_extra, split_names
from .triton_options import build_handoff, given, handoff_options

require_extra("smp-export", "export", "torch", "transformers", "onnx")

from smp_export.arch.limits import DEFAULT_LIMITS, ConfigLimits
from smp_export.autotune import AutotuneConfig
from smp_export.export import ExportOptions, export_onnx
from smp_export.output import default_output_dir
from smp_export.passes.attention import MODES as ATTENTION_MODES
from smp_export.readers import ReadOptions, read_checkpoint
from smp_export.summary import format_summary
from smp_export.options import PRECISIONS
from smp_export.validate import FP16_MIN_COSINE, QuantizedValidationConfig, ValidationConfig
from smp_export.variants import TRITON, VARIANTS, check_handoff, check_precision, get_variant
from runtime.server.kserve import KServeOptions
from runtime.server.triton_config import TritonOptions



def _keep_from(keep: float | None, sparsity: float | None) -> float | None:
    if keep is not None and sparsity is not None:
        raise click.UsageError("give --keep or --sparsity, not both")
    return 1.0 - sparsity if sparsity is not None else keep


def _autotune(tokens: str) -> AutotuneConfig:
    try:
        return AutotuneConfig(tokens=tuple(int(t) for t in tokens.split(",") if t.strip()))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--autotune-tokens") from exc


def _limits(pairs: tuple[str, ...]) -> ConfigLimits:
    try:
        return ConfigLimits.from_pairs(pairs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--config-limit") from exc


def _label_words(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    words = split_names(text)
    if not words:
        raise click.BadParameter("no label words given", param_hint="--label-words")
    return words


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["onnx", "triton"]), default="onnx", show_default=True,
              help="Output format; triton: -o is a Triton model repository, the model is named "
                   "after MODEL_DIR.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Export directory (--format triton: the model repository) [default: ./<MODEL_DIR name>-<format>].")
@click.option("--input-format", type=str, default=None,
              help="Force the input format instead of detecting it (see --list-formats).")
@click.option("--weights", type=click.Choice(list(VARIANTS)), default="sparse-initializer", show_default=True,
              help="How pruned weights are stored: " + "; ".join(f"{v.name}: {v.stores}" for v in VARIANTS.values())
                   + ".")
@click.option("--autotune-tokens", type=str, default="128", show_default=True,
              help="--weights auto: activation rows (batch x sequence) each linear is timed at, comma-separated.")
@click.option("--attention", type=click.Choice(["auto", *ATTENTION_MODES]), default="auto", show_default=True,
              help="Attention core per layer. onnx: plain ONNX ops (any runtime); mha: one "
                   "com.microsoft.MultiHeadAttention node (onnxruntime); smp: one ai.smp.Attention node (this "
                   "project's kernel library); auto: smp for sparse-kernel / auto, onnx for the others.")
@click.option("--keep", type=float, default=None, help="Final keep ratio v (SMP), in (0, 1].")
@click.option("--sparsity", type=float, default=None, help="Final sparsity, 1 - keep.")
@click.option("--smp-s/--smp-l", "smp_s", default=None,
              help="SMP-S (per-matrix ratios) or SMP-L (uniform TopK); default: from the checkpoint.")
@click.option("--smp-s-temperature", type=float, default=None,
              help="Temperature p of SMP-S: R(S) = sum(sigmoid(S / p)); default: the checkpoint's, else 1.")
@click.option("--threshold", type=float, default=None, help="Movement-pruning threshold.")
@click.option("--granularity", default=None,
              help="Check that the masks have this structure before any output: neuron, head, structured, "
                   "block:RxC or N:M (e.g. 2:4); hybrid and weight claim no checkable structure. smp-train "
                   "checkpoints are also checked against their own record, which must agree.")
@click.option("--mask", "mask_file", type=click.Path(path_type=Path), default=None,
              help="Packed-bit .npy mask (official SMP release format); MODEL_DIR is the dense base.")
@click.option("--label-words", type=str, default=None,
              help="SMP head label words or token ids, comma-separated (e.g. 'yes,no' or '2748,2053').")
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="Compare the export with the masked PyTorch model.")
@click.option("--atol", type=float, default=1e-4, show_default=True, help="Validation tolerance (fp32).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="int8: onnxruntime dynamic quantization of the MatMul weights (per channel; embeddings "
                   "stay fp32) or, for sparse-kernel, the int8 kernels; fp16: float16 weights and activations "
                   "(LayerNorm and softmax in fp32) for GPUs. Both are validated by --min-cosine / --min-top1 "
                   "instead of --atol. int8: " + ", ".join(v.name for v in VARIANTS.values() if "int8" in v.precisions)
                   + "; fp16: " + ", ".join(v.name for v in VARIANTS.values() if "fp16" in v.precisions) + ".")
@click.option("--min-cosine", type=click.FloatRange(-1.0, 1.0), default=None,
              help="int8 / fp16: least cosine similarity of any output row with the fp32 model "
                   f"[default: int8 {QuantizedValidationConfig().min_cosine:g}, fp16 {FP16_MIN_COSINE:g}].")
@click.option("--min-top1", type=click.FloatRange(0.0, 1.0), default=QuantizedValidationConfig().min_top1,
              show_default=True, help="int8 / fp16, logits: least share of validation rows (near ties aside) with "
                                      "the fp32 model's argmax.")
@click.option("--tie-margin", type=click.FloatRange(min=0.0), default=QuantizedValidationConfig().tie_margin,
              show_default=True, help="int8 / fp16, logits: rows whose fp32 top-2 margin is below this x the "
                                      "batch's logit scale and whose top two swapped are near ties, left out of "
                                      "--min-top1.")
@click.option("--tokenizer/--no-tokenizer", default=True, show_default=True,
              help="Copy the checkpoint's tokenizer files, loaded and round-tripped on a sample text first; "
                   "--no-tokenizer leaves them out (the export then takes token ids only).")
@click.option("--config-limit", "config_limits", multiple=True, metavar="FIELD=N",
              help="Raise a config.json size limit, e.g. layers=512 (fields: " + ", ".join(
                  f"{f.name} {getattr(DEFAULT_LIMITS, f.name)}" for f in fields(ConfigLimits)) + ").")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress.")
@handoff_options
def main(model_dir: Path, fmt: str, output: Path | None, input_format: str | None, weights: str,
         keep: float | None, sparsity: float | None, smp_s: bool | None, smp_s_temperature: float | None,
         threshold: float | None, mask_file: Path | None, label_words: str | None, validate: bool,
         atol: float, overwrite: bool, verbose: bool, autotune_tokens: str = "128", attention: str = "auto",
         tokenizer: bool = True, config_limits: tuple[str, ...] = (), precision: str = "fp32",
         min_cosine: float | None = None, min_top1: float = 0.95, granularity: str | None = None,
         tie_margin: float = 0.1, **handoff) -> None:
    """Export a pruning checkpoint in MODEL_DIR to a validated sparse ONNX model.

    Input formats, detected automatically (or forced with --input-format): packed (a
    packed-bit --mask file over a dense base model), smp (official SMP training output and
    smp-train checkpoints), shipped (smp-train's small shipped checkpoints: smp_train.json +
    packed masks), movement (Hugging Face movement pruning), torch_prune (torch.nn.utils.prune
    state dicts), dense (zeros in a plain BERT or DistilBERT checkpoint are the sparsity).
    Without -o the export goes to ./<MODEL_DIR name>-<format>/.
    """
    configure_logging(verbose)
    read_options = ReadOptions(keep=_keep_from(keep, sparsity), smp_s=smp_s,
                               smp_s_temperature=smp_s_temperature, threshold=threshold,
                               mask_file=mask_file, label_words=_label_words(label_words),
                               limits=_limits(config_limits), granularity=granularity)
    def thresholds(default_cosine: float) -> QuantizedValidationConfig:
        return QuantizedValidationConfig(min_cosine=default_cosine if min_cosine is None else min_cosine,
                                         min_top1=min_top1, tie_margin=tie_margin)

    validation = ValidationConfig(atol=atol, quantized=thresholds(QuantizedValidationConfig().min_cosine),
                                  fp16=thresholds(FP16_MIN_COSINE))
    options = ExportOptions(weights=weights, validate=validate, overwrite=overwrite, tokenizer=tokenizer,
                            validation=validation,
                            autotune=_autotune(autotune_tokens), precision=precision,
                            attention=None if attention == "auto" else attention)
    output = output or default_output_dir(model_dir, fmt)
    if fmt != "triton" and given(handoff):
        raise click.UsageError(f"{', '.join(given(handoff))} need --format triton")
    with cli_errors(sigterm=True):
        check_precision(get_variant(weights), precision, options.attention)
        if fmt == "triton":
            check_handoff(get_variant(weights), TRITON)
            triton, kserve = build_handoff(handoff, overwrite=overwrite)
            _check_destination(output, model_dir, get_variant(weights).needs_kernels, triton, kserve)
        ckpt = read_checkpoint(model_dir, read_options, input_format=input_format)
        if fmt == "triton":
            manifest, output = _export_triton(ckpt, model_dir, output, options, triton, kserve)
        else:
            manifest = export_onnx(ckpt, output, options=options)
    click.echo(format_summary(manifest, output))


def _check_destination(repository: Path, model_dir: Path, needs_kernels: bool, triton: TritonOptions,
                       kserve: KServeOptions | None) -> None:
    """--format triton: refuse the repository, the model name, the device and the library
    before the checkpoint is read, so a wrong -o costs no export."""
    from runtime.server.triton import check_repository, kernel_library

    check_repository(repository, model_dir.resolve().name, triton, kserve)
    if needs_kernels:
        kernel_library(triton)


def _export_triton(ckpt, model_dir: Path, repository: Path, options: ExportOptions, triton: TritonOptions,
                   kserve: KServeOptions | None):
    """--format triton: the usual ONNX export into a temporary folder, then a Triton model
    repository entry REPOSITORY/<MODEL_DIR name>/ written by runtime.server.triton."""
    from runtime.server.triton import write_model_repository

    with tempfile.TemporaryDirectory(prefix=".smp-export-triton-") as tmp:
        manifest = export_onnx(ckpt, Path(tmp) / "export", options=options)
        target = write_model_repository(Path(tmp) / "export", repository, model_dir.resolve().name, triton,
                                        kserve=kserve)
    return manifest, target

