"""Validation: the exported ONNX model must compute what the masked PyTorch model computes.

For every ``[batch, seq]`` shape of the config, seeded random inputs (rows after the first
get trailing padding in every other row) go through onnxruntime (CPU) and the reference
module. Compared in order: output NAMES (exactly the expected one), SHAPES, VALUES
(``max |diff| <= atol``) and, for ``logits``, argmax labels. Every failure over all shapes
is collected before ``ValidationError`` is raised. ``paired_outputs`` is that loop alone: an
int8 export (``smp_export.int8``) is compared on the same inputs, by other metrics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from runtime.contract import INPUT_NAMES, LOGITS, random_inputs, select_inputs
from runtime.manifest import ValidationRecord

from .checkpoint import PrunedCheckpoint
from .errors import ValidationError

logger = logging.getLogger(__name__)

_ORT_ERRORS = (ort_state.Fail, ort_state.InvalidArgument, ort_state.InvalidGraph, ort_state.InvalidProtobuf,
               ort_state.NoSuchFile, ort_state.NotImplemented, ort_state.RuntimeException,
               RuntimeError, ValueError)


#: fp16 keeps about 3 decimal digits per value: the worst output row of the shipped MiniLM's fp16
#: compact export has cosine 0.99999995 with fp32 (max |diff| 1.1e-3 on the logits; validation.json
#: of benchmarks/results/20261208-054528-fp16-accuracy-AMD-EPYC); 0.999 leaves
#: room for deeper or wider models without passing a broken graph.
FP16_MIN_COSINE = 0.999


@dataclass(frozen=True, kw_only=True)
class QuantizedValidationConfig:
    """What an int8 export is held to instead of ``atol`` (see ``smp_export.int8`` for the
    measurements behind the defaults): every output row's cosine similarity with the masked
    fp32 model at least ``min_cosine`` (a row: one logits vector, one real token's hidden
    state) and, for logits, the share of rows with the same argmax at least ``min_top1``,
    counted over the rows that are not near ties (fp32 top-2 margin below ``tie_margin`` x the
    batch's logit scale and the two labels swapped, ``smp_export.reduced._top1``: on random
    validation tokens a classifier's logits are often that close, and one swap among six rows
    used to refuse an export as accurate as fp32)."""

    min_cosine: float = 0.99
    min_top1: float = 0.95
    tie_margin: float = 0.1

    def __post_init__(self) -> None:
        for name in ("min_cosine", "min_top1"):
            value = getattr(self, name)
            if not -1.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [-1, 1], got {value}")
        if not 0.0 <= self.tie_margin < float("inf"):
            raise ValueError(f"tie_margin must be >= 0, got {self.tie_margin}")


@dataclass(frozen=True)
class ValidationConfig:
    """Tolerance, the ``(batch, seq)`` shapes compared, input seed, argmax check for logits;
    ``quantized`` / ``fp16``: the thresholds of an int8 / fp16 export (which have no ``atol``)."""

    atol: float = 1e-4
    shapes: tuple[tuple[int, int], ...] = ((1, 8), (2, 16), (3, 37))
    seed: int = 0
    check_labels: bool = True
    quantized: QuantizedValidationConfig = field(default_factory=QuantizedValidationConfig)
    fp16: QuantizedValidationConfig = field(
        default_factory=lambda: QuantizedValidationConfig(min_cosine=FP16_MIN_COSINE))

    def reduced(self, precision: str) -> QuantizedValidationConfig:
        """The thresholds a ``precision`` export (int8 or fp16) is held to."""
        return self.fp16 if precision == "fp16" else self.quantized


@dataclass(frozen=True)
class OutputPair:
    """One validation shape: its inputs, what onnxruntime gave (None with ``error``) and what
    the reference gave."""

    where: str
    inputs: dict[str, np.ndarray]
    got: np.ndarray | None
    want: np.ndarray
    error: str | None = None


def _session(path: Path, custom_op_libraries: Sequence[str] = ()) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    for library in custom_op_libraries:
        options.register_custom_ops_library(str(library))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check_io(session: ort.InferenceSession, output_name: str) -> list[str]:
    """Failures about the model's input and output names (empty if it can be compared)."""
    failures = []
    outputs = [o.name for o in session.get_outputs()]
    if outputs != [output_name]:
        failures.append(f"output names: expected [{output_name!r}], the ONNX model has {outputs}")
    unknown = [i.name for i in session.get_inputs() if i.name not in INPUT_NAMES]
    if unknown:
        failures.append(f"input names: unexpected {unknown} (known: {list(INPUT_NAMES)})")
    return failures


def _compare(got: np.ndarray, want: np.ndarray, *, where: str, atol: float,
             labels: bool) -> tuple[list[str], float | None, bool | None]:
    """(failures, max |diff| or None if shapes differ, labels agree or None if not checked)."""
    if got.shape != want.shape:
        return [f"{where}: shape {list(got.shape)} != reference {list(want.shape)}"], None, None
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if got.size else 0.0
    failures = []
    if math.isnan(diff) or diff > atol:
        diff = math.inf if math.isnan(diff) else diff
        failures.append(f"{where}: max |diff| {diff:.3g} > atol {atol:g}")
    agree = None
    if labels:
        agree = bool(np.array_equal(got.argmax(-1), want.argmax(-1)))
        if not agree:
            failures.append(f"{where}: argmax labels {got.argmax(-1).tolist()} != reference "
                            f"{want.argmax(-1).tolist()}")
    return failures, diff, agree


def _clamped_shapes(shapes: tuple[tuple[int, int], ...], max_positions: int | None) -> list[list[int]]:
    out = []
    for batch, seq in shapes:
        if max_positions is not None and seq > max_positions:
            logger.info("validation: seq %d clamped to max_position_embeddings %d", seq, max_positions)
            seq = max_positions
        out.append([batch, seq])
    return out


def paired_outputs(onnx_path: Path, reference: torch.nn.Module, *, vocab_size: int, type_vocab_size: int,
                   output_name: str, config: ValidationConfig, max_positions: int | None = None,
                   custom_op_libraries: Sequence[str] = ()) -> tuple[list[list[int]], list[OutputPair]]:
    """The compared shapes (clamped to ``max_positions``) and, per shape, the seeded inputs with
    both models' outputs; ValidationError when the model cannot be loaded or has the wrong names."""
    onnx_path = Path(onnx_path)
    try:
        session = _session(onnx_path, custom_op_libraries)
    except _ORT_ERRORS as exc:
        raise ValidationError([f"onnxruntime cannot load the model: {exc}"], path=onnx_path) from exc
    failures = _check_io(session, output_name)
    shapes = _clamped_shapes(config.shapes, max_positions)
    if failures:
        raise ValidationError(failures, path=onnx_path)
    reference.eval()
    rng = np.random.default_rng(config.seed)
    feed_names = [i.name for i in session.get_inputs()]
    pairs = []
    for batch, seq in shapes:
        inputs = random_inputs(batch, seq, vocab_size=vocab_size, type_vocab_size=type_vocab_size, rng=rng,
                               padded_rows=True)
        with torch.no_grad():
            want = reference(*(torch.from_numpy(inputs[n]) for n in INPUT_NAMES)).float().cpu().numpy()
        where = f"{output_name} at [{batch}, {seq}]"
        try:
            got, error = np.asarray(session.run([output_name], select_inputs(inputs, feed_names))[0]), None
        except _ORT_ERRORS as exc:
            got, error = None, f"{where}: onnxruntime failed: {exc}"
        pairs.append(OutputPair(where, inputs, got, want, error))
    return shapes, pairs


def validate_export(onnx_path: Path, reference: torch.nn.Module, *, vocab_size: int, type_vocab_size: int,
                    output_name: str, config: ValidationConfig = ValidationConfig(),
                    max_positions: int | None = None,
                    custom_op_libraries: Sequence[str] = ()) -> ValidationRecord:
    """Compare ``onnx_path`` with ``reference``; ValidationRecord if it agrees, else ValidationError.

    ``max_positions`` (default: ``reference.config.max_position_embeddings`` if present)
    clamps longer sequence lengths. ``custom_op_libraries`` are registered with onnxruntime
    (the ``ai.smp`` sparse kernels of the kernel variants).
    """
    if max_positions is None:
        max_positions = getattr(getattr(reference, "config", None), "max_position_embeddings", None)
    shapes, pairs = paired_outputs(onnx_path, reference, vocab_size=vocab_size, type_vocab_size=type_vocab_size,
                                   output_name=output_name, config=config, max_positions=max_positions,
                                   custom_op_libraries=custom_op_libraries)
    labels = config.check_labels and output_name == LOGITS
    failures: list[str] = []
    max_diff: float | None = None
    agree_all: bool | None = True if labels else None
    for pair in pairs:
        if pair.got is None:
            failures.append(str(pair.error))
            continue
        found, diff, agree = _compare(pair.got, pair.want, where=pair.where, atol=config.atol, labels=labels)
        failures.extend(found)
        if diff is not None:
            max_diff = diff if max_diff is None else max(max_diff, diff)
        if agree is False:
            agree_all = False
    if failures:
        raise ValidationError(failures, max_abs_diff=max_diff, path=onnx_path)
    logger.info("validated %s: max |diff| %.3g over shapes %s", onnx_path, max_diff or 0.0, shapes)
    return ValidationRecord(passed=True, atol=config.atol, max_abs_diff=max_diff, shapes=shapes,
                            labels_agree=agree_all)


def validate_fp32(model_path: Path, ckpt: PrunedCheckpoint, config: ValidationConfig = ValidationConfig(),
                  custom_op_libraries: Sequence[str] = ()) -> ValidationRecord:
    """The fp32 variants' validation: ``model_path`` against the masked model of ``ckpt``
    (built from the transformers classes) on ``config.shapes``, values within ``config.atol``."""
    from .reference import build_reference_model  # torch/transformers model: only when validating

    dims = ckpt.dims
    return validate_export(model_path, build_reference_model(ckpt), vocab_size=dims.vocab_size,
                           type_vocab_size=max(dims.type_vocab_size, 1), output_name=ckpt.head.output_name,
                           config=config, max_positions=dims.max_positions, custom_op_libraries=custom_op_libraries)


def checkpoint_pairs(model_path: Path, ckpt: PrunedCheckpoint, config: ValidationConfig = ValidationConfig(),
                     custom_op_libraries: Sequence[str] = ()) -> tuple[list[list[int]], list[OutputPair]]:
    """``paired_outputs`` of ``model_path`` and the masked model of ``ckpt``: the inputs and
    references ``validate_fp32`` compares, for validations with other metrics (int8)."""
    from .reference import build_reference_model  # torch/transformers model: only when validating

    dims = ckpt.dims
    return paired_outputs(model_path, build_reference_model(ckpt), vocab_size=dims.vocab_size,
                          type_vocab_size=max(dims.type_vocab_size, 1), output_name=ckpt.head.output_name,
                          config=config, max_positions=dims.max_positions, custom_op_libraries=custom_op_libraries)
