"""``--weights auto``: per pruned linear, the fastest of dense, CSR kernel and BSR kernel.

Each candidate is timed on this machine through onnxruntime as a one-node model with the
real activation shape ``[tokens, in]`` (``AutotuneConfig.tokens``: one or several token
counts), candidates interleaved run by run (threads not spinning) so load drifts hit all
alike. With several token counts the pick minimises the sum of per-shape relative times. The weights are
the compacted ones when the export compacted first, so "dense" there means compacted dense.
The choice and every candidate's median time go to the manifest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from runtime.kernels import KernelLibraryError, custom_op_library_path

from .errors import ExportError
from .passes.sparse_linear import KernelSpec, module_of, sparse_linear_pass
from .progress import report

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AutotuneConfig:
    """How candidates are timed.

    ``tokens``: activation rows (batch x sequence) timed, results summed; ``threads``:
    onnxruntime intra-op threads (None: its default); ``block_shapes``: BSR shapes tried;
    ``max_bsr_fill``: BSR is skipped when it would store more than this many values per
    nonzero weight (zeros inside blocks count).
    """

    tokens: tuple[int, ...] = (128,)
    repeats: int = 5
    warmup: int = 1
    threads: int | None = None
    block_shapes: tuple[tuple[int, int], ...] = ((1, 4), (4, 1), (2, 2))
    max_bsr_fill: float = 1.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.tokens or min(self.tokens) < 1:
            raise ValueError(f"tokens must be positive, got {self.tokens}")
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError("repeats must be >= 1 and warmup >= 0")


@dataclass
class LinearChoice:
    """The pick for one linear: ``dense``, ``csr`` or ``bsr`` (+ block shape), and the timings."""

    name: str
    format: str
    block_shape: tuple[int, int] = (1, 1)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def spec(self) -> KernelSpec | None:
        """The kernel spec for sparse_linear_pass, None when the linear stays dense."""
        return None if self.format == "dense" else KernelSpec(self.format, self.block_shape)


def _label(fmt: str, block: tuple[int, int]) -> str:
    return fmt if fmt != "bsr" else f"bsr{block[0]}x{block[1]}"


def dense_linear_model(weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """Y = X @ W^T + b with the graph's own naming (``lin.weight_t``, ``lin.bias``)."""
    out, inp = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "lin.weight_t"], ["XW"], name="/lin/MatMul"),
         helper.make_node("Add", ["XW", "lin.bias"], ["Y"], name="/lin/Add")],
        "autotune",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["tokens", inp])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["tokens", out])],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(weight.T), "lin.weight_t"),
                     numpy_helper.from_array(bias, "lin.bias")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _candidates(weight: np.ndarray, config: AutotuneConfig) -> list[tuple[str, tuple[int, int]]]:
    nnz = max(int(np.count_nonzero(weight)), 1)
    found = [("dense", (1, 1)), ("csr", (1, 1))]
    for bh, bw in config.block_shapes:
        rows, cols = weight.shape
        if rows % bh or cols % bw:
            continue
        blocks = weight.reshape(rows // bh, bh, cols // bw, bw).any(axis=(1, 3)).sum()
        if blocks * bh * bw <= config.max_bsr_fill * nnz:
            found.append(("bsr", (bh, bw)))
    return found


def _session(model: onnx.ModelProto, library: str, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Candidates run interleaved: spinning threads of one session would slow the next one's run.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
    options.register_custom_ops_library(library)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def time_linear(weight: np.ndarray, bias: np.ndarray, config: AutotuneConfig = AutotuneConfig(),
                library: str | None = None) -> dict[str, float]:
    """Median milliseconds per candidate label (summed over ``config.tokens``)."""
    return {label: sum(per) for label, per in time_linear_per_shape(weight, bias, config, library).items()}


def time_linear_per_shape(weight: np.ndarray, bias: np.ndarray, config: AutotuneConfig = AutotuneConfig(),
                          library: str | None = None) -> dict[str, list[float]]:
    """Median milliseconds per candidate label, one per token count of ``config.tokens``."""
    library = library or str(custom_op_library_path())
    dense = dense_linear_model(weight, bias)
    sessions = {}
    for fmt, block in _candidates(weight, config):
        model = dense if fmt == "dense" else sparse_linear_pass(dense, {"lin": KernelSpec(fmt, block)})
        sessions[_label(fmt, block)] = _session(model, library, config.threads)
    rng = np.random.default_rng(config.seed)
    medians: dict[str, list[float]] = {label: [] for label in sessions}
    for tokens in config.tokens:
        x = rng.standard_normal((tokens, weight.shape[1])).astype(np.float32)
        times: dict[str, list[float]] = {label: [] for label in sessions}
        for run in range(config.warmup + config.repeats):
            for label, session in sessions.items():
                start = time.perf_counter()
                session.run(None, {"X": x})
                if run >= config.warmup:
                    times[label].append(time.perf_counter() - start)
        for label in sessions:
            medians[label].append(float(np.median(times[label])) * 1e3)
    return medians


def pick(medians: Mapping[str, Sequence[float]]) -> str:
    """The label with the smallest sum over shapes of its time relative to that shape's fastest:
    every token count weighs the same, however long its runs (a plain sum would let the
    largest shape decide alone)."""
    shapes = len(next(iter(medians.values())))
    best = [min(times[i] for times in medians.values()) for i in range(shapes)]
    return min(medians, key=lambda label: sum(t / max(b, 1e-9) for t, b in zip(medians[label], best)))


def _parse(label: str) -> tuple[str, tuple[int, int]]:
    if label.startswith("bsr"):
        bh, bw = label[3:].split("x")
        return "bsr", (int(bh), int(bw))
    return label, (1, 1)


def autotune_linears(weights: Mapping[str, torch.Tensor], names: Sequence[str],
                     config: AutotuneConfig = AutotuneConfig()) -> dict[str, LinearChoice]:
    """For each weight name (``<module>.weight``), the fastest candidate on this machine."""
    try:
        library = str(custom_op_library_path())
    except KernelLibraryError as exc:
        raise ExportError(f"--weights auto needs the sparse-kernel library: {exc}", field="--weights") from exc
    choices = {}
    for i, name in enumerate(names):
        report("autotune", i, len(names), name)
        module = module_of(name)
        weight = weights[name].detach().cpu().to(torch.float32).numpy()
        bias = weights[f"{module}.bias"].detach().cpu().to(torch.float32).numpy()
        per_shape = time_linear_per_shape(weight, bias, config, library)
        timings = {label: sum(per) for label, per in per_shape.items()}
        fmt, block = _parse(pick(per_shape))
        choices[name] = LinearChoice(name=name, format=fmt, block_shape=block,
                                     timings_ms={k: round(v, 4) for k, v in timings.items()})
        logger.info("autotune %s %s: %s", name, list(weight.shape),
                    ", ".join(f"{k} {v:.3f} ms" for k, v in timings.items()))
    report("autotune", len(names), len(names), "done")
    return choices
