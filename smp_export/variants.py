"""The export variants (``--weights``): one object each, in one table.

A variant declares what it stores, whether the weights are compacted first, how each pruned
linear is stored (``choose``), the graph passes that store them (``storage``, after which the
manifest measures each linear's bytes) and those that fuse what follows (``fusions``), its
default attention, whether running it needs the ``ai.smp`` library, where it runs and which
handoffs load it (bringing the library where it needs one), the precisions it can be exported
in (``precisions``) and how it is validated (``validate``: fp32 within ``--atol``;
``validate_int8``: per-row cosine and top-1 agreement, ``smp_export.int8``). ``export.py`` asks
the variant and never compares variant names; a new precision or mask structure is a new entry
plus its passes.

int8 (``--precision int8``) is onnxruntime's own dynamic quantization of the saved graph, so it
is offered where the graph holds plain dense MatMuls: ``dense`` and ``compact``. Not on
``sparse-initializer``: onnxruntime densifies sparse initializers at load, and quantize_dynamic
cannot read them ("Invalid model with unknown initializers"); its int8 form would be ``dense``
int8, so it is refused rather than duplicated. ``sparse-kernel`` int8 is this project's own
kernel: its ``int8_storage`` pass writes every pruned linear as ``ai.smp.SparseLinearInt8``
(int8 CSR, per-row weight scales, per-token activations) and the same fusions as fp32 follow
(``int8_fusions``: GELU / residual / LayerNorm folded into the int8 nodes, feed-forward pairs as
``ai.smp.SparseFFNInt8``, Q/K/V stacked, then ``ai.smp.Attention`` in int8; the recorded
``benchmarks/results/*-int8-variant-*``, slower than fp32 ``sparse-kernel`` on the shipped
MiniLM, predate these int8 fusions; ``*-peers-*`` from 20261207-151936 on has them).
Not on ``auto``: its per-layer choice among dense, CSR and BSR has no int8 candidates yet.
``check_precision`` refuses these before any work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from runtime.manifest import ValidationRecord

from .autotune import LinearChoice, autotune_linears
from .checkpoint import PrunedCheckpoint
from .errors import ExportError
from .graph import linear_initializer_name
from .fp16 import convert_fp16
from .int8 import quantize_int8
from .reduced import validate_fp16, validate_int8
from .options import FP16, FP32, INT8, PRECISIONS, ExportOptions
from .passes import INT8_KERNEL_FUSIONS as _INT8_FUSIONS
from .passes import KERNEL_FUSIONS as _FUSIONS
from .passes import sparse_initializer_pass, sparse_linear_int8_pass, sparse_linear_pass
from .validate import ValidationConfig, validate_fp32

CPU, CUDA = "cpu", "cuda"
TRITON, OPTIMUM = "triton", "optimum"


@dataclass(frozen=True)
class ExportPlan:
    """What the passes of one export may need: the checkpoint and each pruned linear's storage
    choice (kernel variants)."""

    ckpt: PrunedCheckpoint
    choices: Mapping[str, LinearChoice]


Pass = Callable[[onnx.ModelProto, ExportPlan], onnx.ModelProto]
Validator = Callable[[Path, PrunedCheckpoint, ValidationConfig, tuple[str, ...]], ValidationRecord]
Chooser = Callable[[PrunedCheckpoint, Mapping[str, torch.Tensor], ExportOptions], dict[str, LinearChoice]]


def _no_choices(ckpt: PrunedCheckpoint, weights: Mapping[str, torch.Tensor], options: ExportOptions) -> dict:
    return {}


def _csr_everywhere(ckpt: PrunedCheckpoint, weights: Mapping[str, torch.Tensor],
                    options: ExportOptions) -> dict[str, LinearChoice]:
    return {name: LinearChoice(name=name, format="csr") for name in ckpt.masks}


def _autotuned(ckpt: PrunedCheckpoint, weights: Mapping[str, torch.Tensor],
               options: ExportOptions) -> dict[str, LinearChoice]:
    return autotune_linears(weights, list(ckpt.masks), options.autotune)


def _sparse_initializers(model: onnx.ModelProto, plan: ExportPlan) -> onnx.ModelProto:
    return sparse_initializer_pass(model, [linear_initializer_name(name) for name in plan.ckpt.masks])


def _sparse_linears(model: onnx.ModelProto, plan: ExportPlan) -> onnx.ModelProto:
    return sparse_linear_pass(model, {n: c.spec for n, c in plan.choices.items() if c.spec is not None})


def _sparse_linears_int8(model: onnx.ModelProto, plan: ExportPlan) -> onnx.ModelProto:
    return sparse_linear_int8_pass(model, [n for n, c in plan.choices.items() if c.spec is not None])


def _model_pass(fn: Callable[[onnx.ModelProto], onnx.ModelProto]) -> Pass:
    """A pass that needs nothing but the model."""
    def run(model: onnx.ModelProto, plan: ExportPlan) -> onnx.ModelProto:
        return fn(model)

    run.__name__ = fn.__name__
    return run


_FUSION_STEPS: tuple[Pass, ...] = tuple(_model_pass(fn) for fn in _FUSIONS)
_INT8_FUSION_STEPS: tuple[Pass, ...] = tuple(_model_pass(fn) for fn in _INT8_FUSIONS)


@dataclass(frozen=True)
class Variant:
    """One ``--weights`` choice (see the module docstring). ``devices``: where it runs;
    ``handoffs``: runtimes that load it (Triton's onnxruntime backend, optimum's ORTModel
    classes); for a variant that ``needs_kernels`` the handoff brings the ai.smp library
    (``runtime.server.triton`` ships it in the repository, ``runtime.ortmodel`` registers it)."""

    name: str
    stores: str
    compacts: bool = False
    choose: Chooser = _no_choices
    autotunes: bool = False          # ``choose`` times candidates at ``ExportOptions.autotune.tokens``
    storage: tuple[Pass, ...] = ()
    fusions: tuple[Pass, ...] = ()
    attention: str = "onnx"
    needs_kernels: bool = False
    devices: tuple[str, ...] = (CPU, CUDA)
    handoffs: frozenset[str] = frozenset({TRITON, OPTIMUM})
    precisions: tuple[str, ...] = (FP32,)
    precision_note: str = ""         # why the precisions it lacks are not offered (check_precision says it)
    validate: Validator = validate_fp32
    validate_int8: Validator = validate_int8
    # int8 by this project's kernels (``ai.smp.SparseLinearInt8``) instead of onnxruntime's dynamic
    # quantization of the saved graph: these storage / fusion passes replace the fp32 ones.
    int8_storage: tuple[Pass, ...] | None = None
    int8_fusions: tuple[Pass, ...] = ()

    def passes(self, precision: str) -> tuple[tuple[Pass, ...], tuple[Pass, ...]]:
        """(storage, fusions) for ``precision``."""
        if precision == INT8 and self.int8_storage is not None:
            return self.int8_storage, self.int8_fusions
        return self.storage, self.fusions

    def quantizes_graph(self, precision: str) -> bool:
        """Whether ``precision`` is reached by onnxruntime's quantize_dynamic of the saved graph."""
        return precision == INT8 and self.int8_storage is None

    def graph_conversion(self, precision: str) -> Callable[[Path], onnx.ModelProto] | None:
        """What turns the saved fp32 graph into ``precision`` (in place), if anything does."""
        if self.quantizes_graph(precision):
            return quantize_int8
        return convert_fp16 if precision == FP16 else None

    def validator(self, precision: str) -> Validator:
        """How an export of this variant in ``precision`` is validated."""
        return {INT8: self.validate_int8, FP16: validate_fp16}.get(precision, self.validate)

    def layer_format(self, choice: LinearChoice | None, shape: list[int], stored_shape: list[int]) -> str:
        """The manifest's per-layer format: the variant, or what the kernel variants chose
        (csr / bsr / dense, ``compact`` for a dense linear that compaction shrank)."""
        if choice is None:
            return self.name
        return "compact" if choice.format == "dense" and stored_shape != shape else choice.format

    def record(self, options: ExportOptions) -> dict[str, Any]:
        """What shaped this variant's graph beyond the checkpoint, for the manifest."""
        return {"autotune_tokens": list(options.autotune.tokens)} if self.autotunes else {}


_DENSIFIED = ("onnxruntime densifies sparse initializers at load and can neither quantize nor convert them; "
              "its int8 / fp16 form would be the dense one")
_KERNELS_FP32_INT8 = "the ai.smp kernels run fp32 and int8 on the CPU; fp16 is for GPUs, where compact is the variant"
_NO_INT8_KERNELS = ("its per-layer choice among dense, CSR and BSR kernels has no int8 candidates yet, and "
                    "no export pass writes the int8 kernel (ai.smp.SparseLinearInt8) for it; the kernels have no "
                    "fp16")

VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("dense", stores="zeros kept in dense matrices (the baseline)", precisions=(FP32, INT8, FP16)),
    Variant("sparse-initializer", storage=(_sparse_initializers,), precision_note=_DENSIFIED,
            stores="pruned linears as graph.sparse_initializer (onnxruntime densifies them at load: smaller "
                   "file, dense speed)"),
    Variant("compact", compacts=True, precisions=(FP32, INT8, FP16),
            stores="provably dead heads and FFN neurons removed: structurally smaller dense matrices"),
    Variant("sparse-kernel", compacts=True, choose=_csr_everywhere, storage=(_sparse_linears,), fusions=_FUSION_STEPS,
            attention="smp", needs_kernels=True, devices=(CPU,), precisions=(FP32, INT8),
            precision_note=_KERNELS_FP32_INT8,
            int8_storage=(_sparse_linears_int8,), int8_fusions=_INT8_FUSION_STEPS,
            stores="compaction, then every pruned linear as ai.smp.SparseLinear (CSR; feed-forward pairs as "
                   "SparseFFN, Q/K/V stacked; int8: SparseLinearInt8 / SparseFFNInt8), attention as ai.smp.Attention"),
    Variant("auto", compacts=True, choose=_autotuned, autotunes=True, storage=(_sparse_linears,), fusions=_FUSION_STEPS,
            attention="smp", needs_kernels=True, devices=(CPU,), precision_note=_NO_INT8_KERNELS,
            stores="compaction, then per linear the fastest of dense, CSR and BSR kernels, timed on this machine"),
)}
WEIGHTS_VARIANTS: tuple[str, ...] = tuple(VARIANTS)
BASELINE = "dense"                   # what speed-ups are measured against: the zeros kept dense


def get_variant(name: str) -> Variant:
    """The variant called ``name``; ExportError naming ``--weights`` when there is none."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ExportError(f"unknown weights variant {name!r}; choose from {', '.join(VARIANTS)}",
                          field="--weights") from None


def check_handoff(variant: Variant, handoff: str) -> None:
    """ExportError before any work when ``handoff`` cannot load what ``variant`` writes."""
    if handoff not in variant.handoffs:
        able = [v.name for v in VARIANTS.values() if handoff in v.handoffs]
        raise ExportError(f"the {handoff} handoff cannot load the {variant.name} variant; use one of "
                          f"{', '.join(able)}", field="--weights")


def check_precision(variant: Variant, precision: str, attention: str | None = None) -> None:
    """ExportError naming ``--precision`` before any work when ``variant`` cannot be exported in
    ``precision`` (see the module docstring for why int8 is dense / compact only, for now), or
    ``--attention`` when its attention node cannot (``smp`` is an fp32 / int8 kernel)."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}",
                          field="--precision")
    if precision in variant.precisions:
        if precision == FP16 and (attention or variant.attention) == "smp":
            raise ExportError("--precision fp16 converts every activation to float16, and ai.smp.Attention takes "
                              "float32 only: use --attention onnx or mha", field="--attention")
        return
    able = [v.name for v in VARIANTS.values() if precision in v.precisions]
    raise ExportError(f"--precision {precision} is not available for --weights {variant.name}: "
                      f"{variant.precision_note or 'not supported'}; use --weights {' or '.join(able)}",
                      field="--precision")
