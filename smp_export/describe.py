"""The manifest of an export: what every pruned linear became, totals, validation, versions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import onnx
from onnx import numpy_helper

from runtime.kernels import SPARSE_DOMAIN
from runtime.manifest import LayerRecord, Manifest, ValidationRecord

from .autotune import LinearChoice
from .checkpoint import PrunedCheckpoint
from .formats.compact import CompactionResult
from .graph import linear_initializer_name
from .passes import module_of
from .passes.sparse_linear import ARRAY_KEYS
from .passes.sparse_linear_int8 import INT8_KEYS
from .variants import Variant
from .versions import SOURCE_DIGEST_KEY, collect_versions, source_digest


def initializer_bytes(model: onnx.ModelProto) -> dict[str, int]:
    """Bytes of every initializer (a sparse initializer: values + indices, under the values' name)."""
    def size(tensor: onnx.TensorProto) -> int:
        return len(tensor.raw_data) or numpy_helper.to_array(tensor).nbytes

    sizes = {init.name: size(init) for init in model.graph.initializer}
    for sparse in model.graph.sparse_initializer:
        sizes[sparse.values.name] = size(sparse.values) + size(sparse.indices)
    return sizes


def uses_kernels(model: onnx.ModelProto) -> bool:
    return any(node.domain == SPARSE_DOMAIN for node in model.graph.node)


def _layer_bytes(name: str, sizes: Mapping[str, int]) -> int:
    kernel = [f"{module_of(name)}.{key}" for key in dict.fromkeys((*ARRAY_KEYS, *INT8_KEYS))]
    if kernel[0] in sizes:
        return sum(sizes.get(k, 0) for k in kernel)
    return sizes.get(linear_initializer_name(name), 0)


def layer_records(ckpt: PrunedCheckpoint, weights: Mapping[str, Any], variant: Variant,
                  choices: Mapping[str, LinearChoice], sizes: Mapping[str, int]) -> list[LayerRecord]:
    """One record per pruned linear: shapes, density, the stored format, its bytes, autotune timings."""
    records = []
    for name, mask in ckpt.masks.items():
        nnz, shape, stored = int(mask.sum()), list(mask.shape), list(weights[name].shape)
        choice = choices.get(name)
        records.append(LayerRecord(
            name=name, shape=shape, stored_shape=stored, density=nnz / mask.numel(), nnz=nnz,
            format=variant.layer_format(choice, shape, stored), bytes=_layer_bytes(name, sizes),
            block_shape=list(choice.block_shape) if choice and choice.format == "bsr" else [],
            timings_ms=dict(choice.timings_ms) if choice else {}))
    return records


def totals(layers: list[LayerRecord], sizes: Mapping[str, int], compaction: CompactionResult | None,
           kernel_formats: bool) -> dict[str, Any]:
    total = sum(r.shape[0] * r.shape[1] for r in layers)
    nnz = sum(r.nnz for r in layers)
    out: dict[str, Any] = {
        "pruned_linears": len(layers), "params": total, "nnz": nnz, "density": nnz / total if total else 1.0,
        "stored_params": sum(r.stored_shape[0] * r.stored_shape[1] for r in layers),
        "linear_bytes": sum(r.bytes for r in layers), "all_weight_bytes": sum(sizes.values()),
    }
    if compaction is not None:
        out["heads_removed"] = compaction.heads_removed
        out["neurons_removed"] = compaction.neurons_removed
    if kernel_formats:
        out["formats"] = {fmt: sum(r.format == fmt for r in layers) for fmt in sorted({r.format for r in layers})}
    return out


def describe(ckpt: PrunedCheckpoint, model: onnx.ModelProto, layers: list[LayerRecord], summary: dict[str, Any],
             validation: ValidationRecord, variant: Variant, export_options: dict[str, Any], *,
             precision: str = "fp32") -> Manifest:
    """The export's manifest (its ``files`` are filled in once the directory is written)."""
    head = {"kind": ckpt.head.kind, "label_token_ids": list(ckpt.head.label_token_ids),
            "label_words": list(ckpt.head.label_words)}
    return Manifest(
        source_format=ckpt.source_format, source_path=str(ckpt.source_path), method=ckpt.method,
        weights=variant.name, head=head, input_names=[i.name for i in model.graph.input],
        output_names=[o.name for o in model.graph.output], layers=layers, totals=summary, files={},
        validation=validation, versions={**collect_versions(), SOURCE_DIGEST_KEY: source_digest()},
        custom_op_domains=[SPARSE_DOMAIN] if uses_kernels(model) else [], metadata=_jsonable(ckpt.metadata),
        export_options=export_options, precision=precision,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return json.loads(json.dumps(value, default=str))
