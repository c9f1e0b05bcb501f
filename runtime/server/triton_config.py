"""Triton's ``config.pbtxt`` for one model: the options and the text.

::

    name / platform onnxruntime_onnx / max_batch_size
    input [...] output [...]             from the model, batch axis cut when batched
    instance_group [{ count, kind }]
    parameters intra_op_thread_count     cores // instances (CPU), inter_op_thread_count 1
    model_operations { op_library_filename }   only for a model that needs the ai.smp library
    dynamic_batching { ... }             when every input and output has a dynamic batch axis

The ai.smp kernels run on onnxruntime's intra-op pool (``KernelContext_ParallelFor``), so the
thread count Triton gives each instance's session is the kernels' thread count: the cores the
instances share, split between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import TritonRepositoryError
from ..kernels import ORT_MIN_VERSION

TRITON_TYPES = {"tensor(int64)": "TYPE_INT64", "tensor(int32)": "TYPE_INT32",
                "tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16",
                "tensor(double)": "TYPE_FP64", "tensor(bool)": "TYPE_BOOL"}
LABELS_FILE = "labels.txt"


@dataclass(frozen=True)
class TritonOptions:
    """Triton settings: batching, instances and their threads, device, and where the ai.smp
    library is (``library_root``: the repository's path as Triton sees it, inside its
    container; default the repository's absolute path here; ``op_library``: the library file to
    ship, default the installed one). ``cores``: CPU cores the instances share (each gets
    ``cores // instance_count`` intra-op threads); None with one instance: onnxruntime's
    default, every core of the machine Triton runs on."""

    max_batch_size: int = 32
    max_queue_delay_us: int = 5000
    preferred_batch_sizes: tuple[int, ...] = ()     # () -> powers of two up to max_batch_size, from 4
    instance_count: int = 1
    device: str = "cpu"                             # cpu -> KIND_CPU, cuda -> KIND_GPU
    overwrite: bool = False
    cores: int | None = None
    library_root: str | None = None
    op_library: str | None = None

    def __post_init__(self) -> None:
        if self.max_batch_size < 0 or self.max_queue_delay_us < 0 or self.instance_count < 1:
            raise TritonRepositoryError("max_batch_size and max_queue_delay_us must be >= 0, "
                                        "instance_count >= 1", field="TritonOptions")
        if self.device not in ("cpu", "cuda"):
            raise TritonRepositoryError("device must be cpu or cuda", field="--device")
        if any(not 0 < b <= self.max_batch_size for b in self.preferred_batch_sizes):
            raise TritonRepositoryError("preferred batch sizes must be in 1..max_batch_size",
                                        field="preferred_batch_sizes")
        if self.cores is not None and not 1 <= self.instance_count <= self.cores:
            raise TritonRepositoryError(f"{self.cores} cores cannot be shared by {self.instance_count} "
                                        "instances (cores >= instances >= 1)", field="--cores")
        if self.cores is None and self.instance_count > 1 and self.device == "cpu":
            raise TritonRepositoryError(f"{self.instance_count} CPU instances need --cores (the cores they "
                                        "share): without it each instance's onnxruntime takes every core",
                                        field="--cores")
        if self.op_library is not None and not Path(self.op_library).is_file():
            raise TritonRepositoryError("the ai.smp library to ship is not a file", path=self.op_library,
                                        field="--op-library")
        if self.library_root is not None and not self.library_root.startswith("/"):
            raise TritonRepositoryError(f"{self.library_root!r} is not an absolute path (the repository's "
                                        "path inside Triton's container, e.g. /models)", field="--library-root")

    @property
    def intra_op_threads(self) -> int:
        """Intra-op threads per instance; 0 is onnxruntime's default (every core)."""
        return self.cores // self.instance_count if self.cores else 0


@dataclass(frozen=True)
class IOSpec:
    name: str
    data_type: str
    shape: tuple[int, ...]        # full ONNX shape, -1 for dynamic axes


def io_specs(values: Sequence[Any], where: Any) -> list[IOSpec]:
    """IOSpecs of onnxruntime's NodeArg list ``values``; TritonRepositoryError on a type Triton lacks."""
    specs = []
    for v in values:
        if v.type not in TRITON_TYPES:
            raise TritonRepositoryError(f"{v.name!r} has type {v.type}, which this writer does not "
                                        "map to a Triton type", path=where)
        specs.append(IOSpec(v.name, TRITON_TYPES[v.type],
                            tuple(d if isinstance(d, int) and d > 0 else -1 for d in v.shape)))
    return specs


def _dims(shape: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(d) for d in shape) + " ]"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tensor_block(spec: IOSpec, shape: tuple[int, ...], label_file: str | None) -> str:
    lines = [f"    name: {_quoted(spec.name)}", f"    data_type: {spec.data_type}", f"    dims: {_dims(shape)}"]
    if label_file:
        lines.append(f"    label_filename: {_quoted(label_file)}")
    return "  {\n" + "\n".join(lines) + "\n  }"


def _parameter(key: str, value: str) -> str:
    return f"parameters {{ key: {_quoted(key)} value: {{ string_value: {_quoted(value)} }} }}"


def _execution(options: TritonOptions, op_library: str | None) -> list[str]:
    """instance_group, the thread parameters (CPU) and the op library entry."""
    kind = "KIND_GPU" if options.device == "cuda" else "KIND_CPU"
    parts = [f"instance_group [\n  {{\n    count: {options.instance_count}\n    kind: {kind}\n  }}\n]"]
    if options.device == "cpu":
        parts += [_parameter("intra_op_thread_count", str(options.intra_op_threads)),
                  _parameter("inter_op_thread_count", "1")]
    if op_library:
        parts.append(f"# the ai.smp kernels: needs onnxruntime >= {ORT_MIN_VERSION} in Triton's onnxruntime backend\n"
                     f"model_operations {{ op_library_filename: {_quoted(op_library)} }}")
    return parts


def render_config(model_name: str, inputs: list[IOSpec], outputs: list[IOSpec],
                  options: TritonOptions, label_output: str | None = None, op_library: str | None = None) -> str:
    """config.pbtxt text (protobuf text format of Triton's ModelConfig); ``op_library``: the
    ``model_operations.op_library_filename`` to write (the path Triton will open)."""
    batched = options.max_batch_size > 0 and all(s.shape and s.shape[0] == -1 for s in inputs + outputs)
    max_batch = options.max_batch_size if batched else 0
    cut = (lambda s: s.shape[1:]) if batched else (lambda s: s.shape)
    ins = ",\n".join(_tensor_block(s, cut(s), None) for s in inputs)
    outs = ",\n".join(_tensor_block(s, cut(s), LABELS_FILE if s.name == label_output else None)
                      for s in outputs)
    parts = [f"name: {_quoted(model_name)}", 'platform: "onnxruntime_onnx"', 'backend: "onnxruntime"',
             f"max_batch_size: {max_batch}", f"input [\n{ins}\n]", f"output [\n{outs}\n]",
             *_execution(options, op_library), "version_policy: { latest: { num_versions: 1 } }"]
    if batched:
        preferred = options.preferred_batch_sizes or tuple(
            b for b in (4, 8, 16, 32, 64, 128, 256) if b <= max_batch) or (max_batch,)
        parts.append("dynamic_batching {\n"
                     f"  preferred_batch_size: {_dims(preferred)}\n"
                     f"  max_queue_delay_microseconds: {options.max_queue_delay_us}\n}}")
    return "\n".join(parts) + "\n"
