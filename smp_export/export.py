"""The export pipeline: checkpoint -> (compaction) -> ONNX graph -> passes -> validation -> manifest.

What differs between the ``--weights`` variants is the variant's to say (``smp_export.variants``):
this module runs what it declares. ``--precision int8`` quantizes the saved model in the temporary
directory (``smp_export.int8``) and ``--precision fp16`` converts it (``smp_export.fp16``), so
validation, the manifest and the final ``model.onnx`` are of that model. Output is atomic
(``output.write_atomically``): everything is written into a temporary sibling directory renamed
onto ``output_dir`` only after the model validated; a failure leaves no partial directory.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import onnx

from runtime.contract import MODEL_FILE
from runtime.kernels import SPARSE_DOMAIN, KernelLibraryError, custom_op_library_path
from runtime.manifest import Manifest, ValidationRecord

from .checkpoint import PrunedCheckpoint
from .describe import describe, initializer_bytes, layer_records, totals, uses_kernels
from .errors import ExportError
from .formats.compact import compact
from .graph import build_onnx_model
from .fp16 import CONVERSION as FP16_CONVERSION
from .int8 import KERNEL_QUANTIZATION, QUANTIZATION, fold_quantized_sizes
from .options import FP16, FP32, INT8, ExportOptions
from .output import copy_tokenizer, file_sizes, write_atomically, write_config
from .passes import attention_fusion_pass
from .passes.attention import MODES as ATTENTION_MODES
from .progress import Steps
from .variants import WEIGHTS_VARIANTS, ExportPlan, Variant, check_precision, get_variant

logger = logging.getLogger(__name__)

__all__ = ["WEIGHTS_VARIANTS", "ExportOptions", "attention_mode", "export_onnx", "export_options_record"]


def export_onnx(ckpt: PrunedCheckpoint, output_dir: str | Path, *,
                options: ExportOptions = ExportOptions()) -> Manifest:
    """Export ``ckpt`` to ``output_dir`` (model.onnx, config, tokenizer, manifest.json)."""
    variant = get_variant(options.weights)
    check_precision(variant, options.precision, options.attention)  # so does a precision the variant lacks
    attention_mode(options)                      # and an unknown mode
    manifest = write_atomically(Path(output_dir), options.overwrite,
                                lambda tmp: _export_into(ckpt, tmp, variant, options))
    logger.info("exported %s (%s, %s) to %s", ckpt.source_path, variant.name, options.precision, output_dir)
    return manifest


def attention_mode(options: ExportOptions) -> str:
    """How attention is emitted: as asked, else the variant's default (``smp`` for the kernel
    variants, which need the library anyway; plain ONNX for the others); ExportError naming
    ``--attention`` for an unknown mode."""
    mode = options.attention or get_variant(options.weights).attention
    if mode not in ATTENTION_MODES:
        raise ExportError(f"unknown attention {mode!r}; one of {', '.join(ATTENTION_MODES)}", field="--attention")
    return mode


def export_options_record(options: ExportOptions) -> dict:
    """What shaped the graph beyond the checkpoint, as the manifest records it (int8: the
    quantization settings too)."""
    variant = get_variant(options.weights)
    record = {"attention": attention_mode(options), **variant.record(options)}
    if variant.quantizes_graph(options.precision):
        record["quantization"] = dict(QUANTIZATION)
    elif options.precision == INT8:
        record["quantization"] = dict(KERNEL_QUANTIZATION)
    elif options.precision == FP16:
        record["conversion"] = dict(FP16_CONVERSION)
    return record


def _export_into(ckpt: PrunedCheckpoint, directory: Path, variant: Variant, options: ExportOptions) -> Manifest:
    steps = Steps("export", 6)
    steps.advance("masking" + (" and compacting" if variant.compacts else ""))
    weights, compaction = ckpt.masked_weights(), None
    if variant.compacts:
        compaction = compact(weights, ckpt.dims, options.compaction)
        weights = compaction.weights
    steps.advance("timing kernels per linear" if variant.autotunes else "choosing storage")
    plan = ExportPlan(ckpt=ckpt, choices=variant.choose(ckpt, weights, options))
    steps.advance("building the graph")
    # The saved file is checked below, after the passes: no need to check the graph twice.
    model = build_onnx_model(ckpt.config, weights, ckpt.head, arch=ckpt.arch,
                             options=replace(options.graph, check=False))
    model = attention_fusion_pass(model, attention_mode(options))
    storage, fusions = variant.passes(options.precision)
    for rewrite in storage:
        model = rewrite(model, plan)
    stored_sizes = initializer_bytes(model)      # per linear, before fusions stack Q, K and V
    for rewrite in fusions:
        model = rewrite(model, plan)
    steps.advance("saving")
    _save(model, directory / MODEL_FILE)
    conversion = variant.graph_conversion(options.precision)
    if conversion is not None:
        model = conversion(directory / MODEL_FILE)
        stored_sizes = fold_quantized_sizes(initializer_bytes(model))
    write_config(ckpt, directory)
    copy_tokenizer(ckpt, directory, include=options.tokenizer)
    steps.advance("validating against the masked model")
    validation = _validate(ckpt, directory / MODEL_FILE, variant, options, uses_kernels(model))
    steps.advance("writing the manifest")
    layers = layer_records(ckpt, weights, variant, plan.choices, stored_sizes)
    summary = totals(layers, initializer_bytes(model), compaction, kernel_formats=variant.needs_kernels)
    manifest = describe(ckpt, model, layers, summary, validation, variant, export_options_record(options),
                        precision=options.precision)
    manifest.files = file_sizes(directory)
    manifest.write(directory)
    manifest.files = file_sizes(directory)
    manifest.write(directory)   # second write: the manifest's own size is on record too
    steps.finish()
    return manifest


def _save(model: onnx.ModelProto, path: Path) -> None:
    try:
        onnx.save(model, str(path))
        onnx.checker.check_model(str(path))
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        raise ExportError(f"cannot write a valid ONNX model: {exc}", path=path) from exc


def _kernel_library() -> str:
    try:
        return str(custom_op_library_path())
    except KernelLibraryError as exc:
        raise ExportError(f"the {SPARSE_DOMAIN} kernels are not built: {exc}", field="--weights") from exc


def _validate(ckpt: PrunedCheckpoint, model_path: Path, variant: Variant, options: ExportOptions,
              needs_library: bool) -> ValidationRecord:
    if not options.validate:
        logger.warning("validation skipped (--no-validate): %s is unchecked", model_path)
        return ValidationRecord(passed=False, skipped=True,
                                atol=None if options.precision != FP32 else options.validation.atol)
    libraries = (_kernel_library(),) if needs_library else ()
    return variant.validator(options.precision)(model_path, ckpt, options.validation, libraries)
