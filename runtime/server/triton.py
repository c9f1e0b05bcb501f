"""Write a Triton Inference Server model repository for an export directory.

::

    REPOSITORY/
      MODEL/
        config.pbtxt          platform onnxruntime_onnx, inputs/outputs, dynamic_batching
        labels.txt            id2label, one per line (Triton's classification extension)
        1/model.onnx
        config.json, tokenizer files, manifest.json   (for clients; Triton ignores them)

Only exports plain onnxruntime can run are written: a model needing a custom operator
domain (a native-kernel variant) is refused, since Triton's onnxruntime backend would need
that library too.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..contract import CONFIG_FILE, LOGITS, MODEL_FILE, TOKENIZER_FILES
from ..errors import TritonRepositoryError
from ..manifest import MANIFEST_NAME, Manifest
from ..providers import import_onnxruntime
from ..session import BUILTIN_DOMAINS, model_domains
from .config import sanitize_model_name
from .model import read_model_config

log = logging.getLogger(__name__)

TRITON_TYPES = {"tensor(int64)": "TYPE_INT64", "tensor(int32)": "TYPE_INT32",
                "tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16",
                "tensor(double)": "TYPE_FP64", "tensor(bool)": "TYPE_BOOL"}
SIDE_FILES = (CONFIG_FILE, MANIFEST_NAME, *TOKENIZER_FILES)
LABELS_FILE = "labels.txt"


@dataclass(frozen=True)
class TritonOptions:
    """Triton settings: batching, instances, device."""

    max_batch_size: int = 32
    max_queue_delay_us: int = 5000
    preferred_batch_sizes: tuple[int, ...] = ()     # () -> powers of two up to max_batch_size, from 4
    instance_count: int = 1
    device: str = "cpu"                             # cpu -> KIND_CPU, cuda -> KIND_GPU
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.max_batch_size < 0 or self.max_queue_delay_us < 0 or self.instance_count < 1:
            raise TritonRepositoryError("max_batch_size and max_queue_delay_us must be >= 0, "
                                        "instance_count >= 1", field="TritonOptions")
        if self.device not in ("cpu", "cuda"):
            raise TritonRepositoryError("device must be cpu or cuda", field="--device")
        if any(not 0 < b <= self.max_batch_size for b in self.preferred_batch_sizes):
            raise TritonRepositoryError("preferred batch sizes must be in 1..max_batch_size",
                                        field="preferred_batch_sizes")


@dataclass(frozen=True)
class IOSpec:
    name: str
    data_type: str
    shape: tuple[int, ...]        # full ONNX shape, -1 for dynamic axes


def _io(values: Sequence[Any], where: Path) -> list[IOSpec]:
    specs = []
    for v in values:
        if v.type not in TRITON_TYPES:
            raise TritonRepositoryError(f"{v.name!r} has type {v.type}, which this writer does not "
                                        "map to a Triton type", path=where)
        specs.append(IOSpec(v.name, TRITON_TYPES[v.type],
                            tuple(d if isinstance(d, int) and d > 0 else -1 for d in v.shape)))
    return specs


def read_io(model_path: Path) -> tuple[list[IOSpec], list[IOSpec]]:
    """Inputs and outputs of ``model_path``, read by onnxruntime (no graph optimisation)."""
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(model_path), sess_options=opts,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's pybind errors derive from Exception directly
        raise TritonRepositoryError(f"plain onnxruntime cannot load the model: {exc}",
                                    path=model_path) from exc
    return _io(session.get_inputs(), model_path), _io(session.get_outputs(), model_path)


def check_plain_onnxruntime(export_dir: Path) -> None:
    """Refuse models that need a custom operator domain."""
    domains: set[str] = set()
    if (export_dir / MANIFEST_NAME).is_file():
        domains |= set(Manifest.read(export_dir).custom_op_domains)
    domains |= model_domains(export_dir / MODEL_FILE) or set()
    custom = sorted(domains - BUILTIN_DOMAINS)
    if custom:
        raise TritonRepositoryError(f"the model needs custom operator domain(s) {', '.join(custom)}; "
                                    "Triton's onnxruntime backend cannot run it without that library "
                                    "(export the dense, sparse-initializer or compact variant)",
                                    path=export_dir / MODEL_FILE)


def _dims(shape: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(d) for d in shape) + " ]"


def _tensor_block(spec: IOSpec, shape: tuple[int, ...], label_file: str | None) -> str:
    lines = [f'    name: "{spec.name}"', f"    data_type: {spec.data_type}", f"    dims: {_dims(shape)}"]
    if label_file:
        lines.append(f'    label_filename: "{label_file}"')
    return "  {\n" + "\n".join(lines) + "\n  }"


def render_config(model_name: str, inputs: list[IOSpec], outputs: list[IOSpec],
                  options: TritonOptions, label_output: str | None = None) -> str:
    """config.pbtxt text (protobuf text format of Triton's ModelConfig)."""
    batched = options.max_batch_size > 0 and all(s.shape and s.shape[0] == -1 for s in inputs + outputs)
    max_batch = options.max_batch_size if batched else 0
    cut = (lambda s: s.shape[1:]) if batched else (lambda s: s.shape)
    ins = ",\n".join(_tensor_block(s, cut(s), None) for s in inputs)
    outs = ",\n".join(_tensor_block(s, cut(s), LABELS_FILE if s.name == label_output else None)
                      for s in outputs)
    kind = "KIND_GPU" if options.device == "cuda" else "KIND_CPU"
    parts = [f'name: "{model_name}"', 'platform: "onnxruntime_onnx"', 'backend: "onnxruntime"',
             f"max_batch_size: {max_batch}", f"input [\n{ins}\n]", f"output [\n{outs}\n]",
             f"instance_group [\n  {{\n    count: {options.instance_count}\n    kind: {kind}\n  }}\n]",
             "version_policy: { latest: { num_versions: 1 } }"]
    if batched:
        preferred = options.preferred_batch_sizes or tuple(
            b for b in (4, 8, 16, 32, 64, 128, 256) if b <= max_batch) or (max_batch,)
        parts.append("dynamic_batching {\n"
                     f"  preferred_batch_size: {_dims(preferred)}\n"
                     f"  max_queue_delay_microseconds: {options.max_queue_delay_us}\n}}")
    return "\n".join(parts) + "\n"


def _labels(export_dir: Path, outputs: list[IOSpec]) -> tuple[str | None, list[str]]:
    """The output to label (``logits`` [batch, n]) and its labels from config.json's id2label."""
    id2label = read_model_config(export_dir).get("id2label") or {}
    logits = next((o for o in outputs if o.name == LOGITS and len(o.shape) == 2), None)
    if logits is None or not isinstance(id2label, dict) or not id2label:
        return None, []
    try:
        labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    except ValueError:
        return None, []
    return logits.name, labels


def write_model_repository(export_dir: str | Path, repository: str | Path,
                           model_name: str | None = None,
                           options: TritonOptions = TritonOptions()) -> Path:
    """Write ``repository/model_name/`` for ``export_dir`` atomically; returns the model folder."""
    export_dir, repository = Path(export_dir), Path(repository)
    model_path = export_dir / MODEL_FILE
    if not model_path.is_file():
        raise TritonRepositoryError(f"{MODEL_FILE} not found in the export directory", path=model_path)
    name = sanitize_model_name(model_name or export_dir.resolve().name)
    target = repository / name
    if target.exists() and not options.overwrite:
        raise TritonRepositoryError("model folder exists in the repository (overwrite to replace it)",
                                    path=target)
    check_plain_onnxruntime(export_dir)
    inputs, outputs = read_io(model_path)
    label_output, labels = _labels(export_dir, outputs)
    repository.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=repository))
    try:
        tmp.chmod(0o755)            # mkdtemp makes it 0700: Triton often runs as another user
        (tmp / "1").mkdir()
        shutil.copy2(model_path, tmp / "1" / MODEL_FILE)
        for side in SIDE_FILES:
            if (export_dir / side).is_file():
                shutil.copy2(export_dir / side, tmp / side)
        if label_output:
            (tmp / LABELS_FILE).write_text("\n".join(labels) + "\n", encoding="utf-8")
        (tmp / "config.pbtxt").write_text(render_config(name, inputs, outputs, options, label_output))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TritonRepositoryError(f"cannot write the model folder: {exc}", path=target) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote Triton model %r to %s", name, target)
    return target
