"""The export pipeline: checkpoint -> (compaction) -> ONNX graph -> passes -> validation -> manifest.

Output is atomic: everything is written into a temporary sibling directory which is renamed
onto ``output_dir`` only after the model validated; a failure leaves no partial directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import onnx

from runtime.contract import CONFIG_FILE, MODEL_FILE, TOKENIZER_FILES
from runtime.kernels import SPARSE_DOMAIN, KernelLibraryError, custom_op_library_path
from runtime.manifest import LayerRecord, Manifest, ValidationRecord

from .autotune import AutotuneConfig, LinearChoice, autotune_linears
from .checkpoint import PrunedCheckpoint
from .errors import ExportError, OutputExistsError
from .formats.compact import CompactionConfig, CompactionResult, compact
from .onnx_graph import GraphOptions, build_onnx_model, linear_initializer_name
from .passes import sparse_initializer_pass
from .passes.qkv import qkv_fusion_pass
from .passes.sparse_kernel import module_of, sparse_kernel_pass
from .validate import ValidationConfig, validate_export
from .versions import SOURCE_DIGEST_KEY, collect_versions, source_digest

logger = logging.getLogger(__name__)

WeightsVariant = Literal["dense", "sparse-initializer", "compact", "sparse-kernel", "auto"]
WEIGHTS_VARIANTS: tuple[str, ...] = ("dense", "sparse-initializer", "compact", "sparse-kernel", "auto")
KERNEL_VARIANTS: tuple[str, ...] = ("sparse-kernel", "auto")


@dataclass(frozen=True)
class ExportOptions:
    """How to export. ``weights`` picks the variant:

    - ``dense``: zeros kept in dense matrices (the baseline);
    - ``sparse-initializer``: pruned linears stored as ``graph.sparse_initializer``
      (smaller file; onnxruntime densifies them at load, so dense speed);
    - ``compact``: removable heads and FFN neurons cut out, structurally smaller dense
      matrices (faster on every execution provider);
    - ``sparse-kernel``: every pruned linear is one ``ai.smp.SparseLinear`` node (CSR
      arrays as initializers; a feed-forward pair one ``ai.smp.SparseFFN``), run by the
      project's custom-op library in onnxruntime;
    - ``auto``: compaction first, then per linear the fastest of dense, CSR kernel and BSR
      kernel, timed on this machine (``autotune``); choices and timings in the manifest.
    """

    weights: WeightsVariant = "sparse-initializer"
    validate: bool = True
    overwrite: bool = False
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    compaction: CompactionConfig = field(default_factory=CompactionConfig)
    graph: GraphOptions = field(default_factory=GraphOptions)
    autotune: AutotuneConfig = field(default_factory=AutotuneConfig)


def export_onnx(ckpt: PrunedCheckpoint, output_dir: str | Path, *,
                options: ExportOptions = ExportOptions()) -> Manifest:
    """Export ``ckpt`` to ``output_dir`` (model.onnx, config, tokenizer, manifest.json)."""
    if options.weights not in WEIGHTS_VARIANTS:
        raise ExportError(f"unknown weights variant {options.weights!r}; choose from "
                          f"{', '.join(WEIGHTS_VARIANTS)}", field="--weights")
    output_dir = Path(output_dir)
    if output_dir.exists() and not options.overwrite:
        raise OutputExistsError("output directory exists (use --overwrite to replace it)", path=output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        manifest = _export_into(ckpt, tmp, options)
        _replace_dir(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("exported %s (%s) to %s", ckpt.source_path, options.weights, output_dir)
    return manifest


def _export_into(ckpt: PrunedCheckpoint, directory: Path, options: ExportOptions) -> Manifest:
    weights = ckpt.masked_weights()
    compaction: CompactionResult | None = None
    if options.weights in ("compact", "auto"):
        compaction = compact(weights, ckpt.config, options.compaction)
        weights = compaction.weights
    # The saved file is checked below, after the passes: no need to check the graph twice.
    graph = replace(options.graph, check=False, attention=attention_mode(options))
    model = build_onnx_model(ckpt.config, weights, ckpt.head, options=graph)
    choices = _kernel_choices(ckpt, weights, options)
    if options.weights == "sparse-initializer":
        model = sparse_initializer_pass(model, [linear_initializer_name(n) for n in ckpt.masks])
    layer_sizes = None
    if options.weights in KERNEL_VARIANTS:
        model = sparse_kernel_pass(model, {n: c.spec for n, c in choices.items() if c.spec is not None})
        layer_sizes = _initializer_bytes(model)   # per linear, before Q, K and V are stacked
        model = qkv_fusion_pass(model)
    model_path = directory / MODEL_FILE
    try:
        onnx.save(model, str(model_path))
        onnx.checker.check_model(str(model_path))
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        raise ExportError(f"cannot write a valid ONNX model: {exc}", path=model_path) from exc
    _write_config(ckpt, directory)
    _copy_tokenizer(ckpt, directory)
    validation = _validate(ckpt, model_path, options, _uses_kernels(model))
    manifest = _manifest(ckpt, model, weights, compaction, validation, options, choices, layer_sizes)
    manifest.files = _file_sizes(directory)
    manifest.write(directory)
    manifest.files = _file_sizes(directory)
    manifest.write(directory)   # second write: the manifest's own size is on record too
    return manifest


def attention_mode(options: ExportOptions) -> str:
    """How attention is emitted (GraphOptions.attention): as asked, else ``smp`` (the ai.smp
    kernel) for the kernel variants, which need the library anyway; plain ONNX for the others."""
    if options.graph.attention is not None:
        return options.graph.attention
    return "smp" if options.weights in KERNEL_VARIANTS else "onnx"


def _kernel_choices(ckpt: PrunedCheckpoint, weights: dict, options: ExportOptions) -> dict[str, LinearChoice]:
    """Per pruned linear, how the kernel variants store it (empty for the other variants)."""
    if options.weights == "sparse-kernel":
        return {name: LinearChoice(name=name, format="csr") for name in ckpt.masks}
    if options.weights == "auto":
        return autotune_linears(weights, list(ckpt.masks), options.autotune)
    return {}


def _uses_kernels(model: onnx.ModelProto) -> bool:
    return any(node.domain == SPARSE_DOMAIN for node in model.graph.node)


def _kernel_library() -> str:
    try:
        return str(custom_op_library_path())
    except KernelLibraryError as exc:
        raise ExportError(f"the {SPARSE_DOMAIN} kernels are not built: {exc}", field="--weights") from exc


def _validate(ckpt: PrunedCheckpoint, model_path: Path, options: ExportOptions,
              uses_kernels: bool = False) -> ValidationRecord:
    if not options.validate:
        logger.warning("validation skipped (--no-validate): %s is unchecked", model_path)
        return ValidationRecord(passed=False, skipped=True, atol=options.validation.atol)
    from .reference import build_reference_model  # torch/transformers model: only when validating

    reference = build_reference_model(ckpt)
    libraries = (_kernel_library(),) if uses_kernels else ()
    return validate_export(model_path, reference, vocab_size=ckpt.config.vocab_size,
                           type_vocab_size=ckpt.config.type_vocab_size,
                           output_name=ckpt.head.output_name, config=options.validation,
                           custom_op_libraries=libraries)


def _write_config(ckpt: PrunedCheckpoint, directory: Path) -> None:
    """A plain ``bert`` config.json that optimum's ORTModel classes understand."""
    config = ckpt.config.to_dict()
    for key in ("pruning_method", "mask_init", "mask_scale", "smp", "pruned_heads"):
        config.pop(key, None)
    config["model_type"] = "bert"
    if ckpt.head.kind == "none":
        config["architectures"] = ["BertModel"]
    else:
        config["architectures"] = ["BertForSequenceClassification"]
    if ckpt.head.kind == "smp-label-words":
        labels = list(ckpt.head.label_words) or [str(t) for t in ckpt.head.label_token_ids]
        config["id2label"] = {str(i): label for i, label in enumerate(labels)}
        config["label2id"] = {label: i for i, label in enumerate(labels)}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _copy_tokenizer(ckpt: PrunedCheckpoint, directory: Path) -> None:
    if ckpt.tokenizer_dir is None:
        logger.warning("no tokenizer files in %s: the export has none", ckpt.source_path)
        return
    for name in TOKENIZER_FILES:
        src = Path(ckpt.tokenizer_dir) / name
        if src.is_file():
            shutil.copy2(src, directory / name)


def _replace_dir(tmp: Path, output_dir: Path) -> None:
    """Rename ``tmp`` onto ``output_dir``; an existing one is moved aside first, then removed."""
    old = None
    if output_dir.exists():
        old = output_dir.parent / f".{output_dir.name}.old-{os.getpid()}"
        os.replace(output_dir, old)
    os.replace(tmp, output_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _file_sizes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}


def _initializer_bytes(model: onnx.ModelProto) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for init in model.graph.initializer:
        sizes[init.name] = len(init.raw_data) or onnx.numpy_helper.to_array(init).nbytes
    for sparse in model.graph.sparse_initializer:
        values, indices = sparse.values, sparse.indices
        sizes[values.name] = (len(values.raw_data) or onnx.numpy_helper.to_array(values).nbytes) + \
            (len(indices.raw_data) or onnx.numpy_helper.to_array(indices).nbytes)
    return sizes


def _layer_format(name: str, stored_shape: list[int], shape: list[int], options: ExportOptions,
                  choices: dict[str, LinearChoice]) -> str:
    """The manifest's per-layer format: the variant, or for the kernel variants csr / bsr /
    dense / compact (dense, after compaction shrank it)."""
    if options.weights not in KERNEL_VARIANTS:
        return options.weights
    fmt = choices[name].format
    return "compact" if fmt == "dense" and stored_shape != shape else fmt


def _layer_bytes(name: str, sizes: dict[str, int]) -> int:
    module = module_of(name)
    kernel = [f"{module}.{key}" for key in ("crow_indices", "col_indices", "values")]
    if kernel[0] in sizes:
        return sum(sizes.get(k, 0) for k in kernel)
    return sizes.get(linear_initializer_name(name), 0)


def _manifest(ckpt: PrunedCheckpoint, model: onnx.ModelProto, weights: dict, compaction: CompactionResult | None,
              validation: ValidationRecord, options: ExportOptions,
              choices: dict[str, LinearChoice] | None = None, layer_sizes: dict[str, int] | None = None) -> Manifest:
    sizes = _initializer_bytes(model)
    choices = choices or {}
    layers = []
    for name, mask in ckpt.masks.items():
        nnz = int(mask.sum())
        stored = list(weights[name].shape)
        choice = choices.get(name)
        layers.append(LayerRecord(
            name=name, shape=list(mask.shape), stored_shape=stored,
            density=nnz / mask.numel(), nnz=nnz,
            format=_layer_format(name, stored, list(mask.shape), options, choices),
            bytes=_layer_bytes(name, layer_sizes or sizes),
            block_shape=list(choice.block_shape) if choice and choice.format == "bsr" else [],
            timings_ms=dict(choice.timings_ms) if choice else {}))
    total = sum(r.shape[0] * r.shape[1] for r in layers)
    nnz = sum(r.nnz for r in layers)
    totals = {
        "pruned_linears": len(layers),
        "params": total,
        "nnz": nnz,
        "density": nnz / total if total else 1.0,
        "stored_params": sum(r.stored_shape[0] * r.stored_shape[1] for r in layers),
        "linear_bytes": sum(r.bytes for r in layers),
        "all_weight_bytes": sum(sizes.values()),
    }
    if compaction is not None:
        totals["heads_removed"] = compaction.heads_removed
        totals["neurons_removed"] = compaction.neurons_removed
    if options.weights in KERNEL_VARIANTS:
        totals["formats"] = {fmt: sum(r.format == fmt for r in layers) for fmt in sorted({r.format for r in layers})}
    head = {"kind": ckpt.head.kind, "label_token_ids": list(ckpt.head.label_token_ids),
            "label_words": list(ckpt.head.label_words)}
    return Manifest(
        source_format=ckpt.source_format, source_path=str(ckpt.source_path), method=ckpt.method,
        weights=options.weights, head=head,
        input_names=[i.name for i in model.graph.input], output_names=[o.name for o in model.graph.output],
        layers=layers, totals=totals, files={}, validation=validation,
        versions={**collect_versions(), SOURCE_DIGEST_KEY: source_digest()},
        custom_op_domains=[SPARSE_DOMAIN] if _uses_kernels(model) else [],
        metadata=_jsonable(ckpt.metadata), export_options=export_options_record(options), created=_now())


def export_options_record(options: ExportOptions) -> dict:
    """What shaped the graph beyond the checkpoint, as the manifest records it."""
    record: dict = {"attention": attention_mode(options)}
    if options.weights == "auto":
        record["autotune_tokens"] = list(options.autotune.tokens)
    return record


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return json.loads(json.dumps(value, default=str))


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")

