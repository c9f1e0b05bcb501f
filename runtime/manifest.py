"""The manifest schema: defined once here, written by smp-export, read by the runtime, the lab and the server.

``manifest.json`` sits beside ``model.onnx`` and records where the model came from, what
every pruned linear became (shape, density, stored format, bytes), totals, file sizes,
the validation result and the versions that produced it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ManifestError

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


@dataclass
class LayerRecord:
    """One pruned linear as stored in the exported graph."""

    name: str                     # canonical weight name, e.g. encoder.layer.0.attention.self.query.weight
    shape: list[int]              # [out, in] of the original matrix
    stored_shape: list[int]       # [out, in] after compaction (== shape otherwise)
    density: float                # kept / numel of the original matrix
    nnz: int                      # kept weights
    format: str                   # dense | sparse-initializer | compact | csr | bsr (kernel variants)
    bytes: int                    # bytes the stored tensor(s) take in model.onnx
    block_shape: list[int] = field(default_factory=list)         # [bh, bw] of a bsr layer
    timings_ms: dict[str, float] = field(default_factory=dict)   # autotune: median ms per candidate


@dataclass
class ValidationRecord:
    """How the export was checked against the masked fp32 PyTorch model. fp32: every value within
    ``atol``. int8 (``atol`` None): per-row cosine and top-1 agreement against the ``min_*``
    thresholds, with the measured ``cosine_*`` / ``top1_*`` beside them; top-1 is held on the
    rows that are not near ties (``smp_export.int8``)."""

    passed: bool
    skipped: bool = False
    atol: float | None = 1e-4
    max_abs_diff: float | None = None
    shapes: list[list[int]] = field(default_factory=list)   # [batch, seq] pairs compared
    labels_agree: bool | None = None                        # argmax agreement (logits only)
    failures: list[str] = field(default_factory=list)
    cosine_mean: float | None = None                        # int8: per-row cosine vs fp32, mean
    cosine_min: float | None = None                         # int8: ... and the worst row
    top1_agreement: float | None = None                     # int8, logits: rows with the same argmax
    top1_decisive: float | None = None                      # ... over the rows that are not near ties
    near_ties: int | None = None                            # rows set aside: top two swapped, margin < tie_margin
    min_cosine: float | None = None                         # int8: the thresholds it was held to
    min_top1: float | None = None                           # (held by top1_decisive)
    tie_margin: float | None = None


@dataclass
class Manifest:
    source_format: str
    source_path: str
    method: str
    weights: str                                  # export variant: dense | sparse-initializer | compact
                                                  # | sparse-kernel | auto
    head: dict[str, Any]                          # kind, label_token_ids, label_words
    input_names: list[str]
    output_names: list[str]
    layers: list[LayerRecord]
    totals: dict[str, Any]
    files: dict[str, int]
    validation: ValidationRecord
    versions: dict[str, str]
    custom_op_domains: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    export_options: dict[str, Any] = field(default_factory=dict)   # attention, autotune tokens, ...
    created: str = ""
    precision: str = "fp32"                       # fp32 | int8 (onnxruntime dynamic quantization)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, path: str | Path | None = None) -> "Manifest":
        if not isinstance(data, dict):
            raise ManifestError("manifest must be a JSON object", path=path)
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(f"unsupported schema version {version!r} (expected {SCHEMA_VERSION})",
                                path=path, field="schema_version")
        known = {f.name for f in fields(cls)}
        missing = [name for name in ("source_format", "source_path", "method", "weights", "head",
                                     "input_names", "output_names", "layers", "totals", "files",
                                     "validation", "versions") if name not in data]
        if missing:
            raise ManifestError(f"missing keys: {', '.join(missing)}", path=path, field=missing[0])
        kwargs = {k: v for k, v in data.items() if k in known}
        try:
            kwargs["layers"] = [LayerRecord(**layer) for layer in data["layers"]]
            kwargs["validation"] = ValidationRecord(**data["validation"])
        except TypeError as exc:
            raise ManifestError(f"malformed record: {exc}", path=path, field="layers/validation") from exc
        return cls(**kwargs)

    @classmethod
    def read(cls, directory: str | Path) -> "Manifest":
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError("manifest.json not found", path=path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestError(f"cannot read JSON: {exc}", path=path) from exc
        return cls.from_dict(data, path=path)
