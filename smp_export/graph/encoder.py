"""The encoder + head of a (possibly compacted) checkpoint as one ONNX graph in plain operators.

The graph computes exactly what the architecture's eager transformers model computes. The
number of heads and the intermediate size of every layer are read from that layer's weight
shapes (``heads_l = query.weight.shape[0] // d`` with ``d = hidden // heads``,
``inter_l = intermediate.dense.weight.shape[0]``), so compacted weights build as they are.
Fused attention (``com.microsoft.MultiHeadAttention``, ``ai.smp.Attention``) and the sparse
kernels are rewrites of this graph (``smp_export.passes``), not other builders.

Sketch (B = batch_size, S = sequence_length, H = hidden, d = head_dim)::

    input_ids ── Gather(word) ─┐
    token_type_ids ── Gather(type) ─ Add ─ Add(Slice(position)[:S]) ─ LayerNorm ─► X [B,S,H]
        (no token types, e.g. DistilBERT: word + position)
    attention_mask ── Cast ─ (1 - m) * finfo.min ─ Unsqueeze[1,2] ─► M [B,1,1,S]
    per layer l:
      X ─ MatMul(query.weight_t) ─ Add(query.bias) ─ Reshape[0,0,h_l,d] ─ Transpose ─► Q [B,h,S,d]
      (K the same, transposed to [B,h,d,S]; V like Q)
      Softmax(Q @ K / sqrt(d) + M) @ V ─ Transpose ─ Reshape[0,0,h_l*d]
        ─ MatMul(attention.output.dense.weight_t) ─ Add ─ Add(X) ─ LayerNorm ─► A
      A ─ MatMul(intermediate.dense.weight_t) ─ Add ─ act ─ MatMul(output.dense.weight_t) ─ Add
        ─ Add(A) ─ LayerNorm ─► X
    head: see ``smp_export.graph.heads``

Every linear is ``MatMul`` with an initializer ``<module>.weight_t`` (W^T, shape [in, out])
followed by ``Add`` with ``<module>.bias``. A layer whose heads (or FFN neurons) were all
removed keeps only the output bias of that block: ``LayerNorm(X + bias)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper
from transformers import PretrainedConfig

from ..arch import BERT, Architecture, EncoderDims
from ..checkpoint import HeadSpec
from ..errors import ExportError
from .builder import BATCH, SEQUENCE, GraphBuilder, GraphOptions, node_path
from .heads import build_head

logger = logging.getLogger(__name__)


def _embeddings(b: GraphBuilder, arch: Architecture, dims: EncoderDims, config: PretrainedConfig) -> str:
    """word (+ token_type) + position[:S] embeddings, then LayerNorm."""
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise ExportError("only absolute position embeddings are supported", field="position_embedding_type")
    x = b.node("Gather", [b.param("embeddings.word_embeddings.weight"), "input_ids"],
               "/embeddings/word_embeddings/Gather", axis=0)
    types = b.node("Gather", [b.param("embeddings.token_type_embeddings.weight"), "token_type_ids"],
                   "/embeddings/token_type_embeddings/Gather", axis=0) if arch.token_types else None
    seq = b.node("Shape", ["input_ids"], "/embeddings/Shape", start=1, end=2)
    table = b.param("embeddings.position_embeddings.weight")
    zero = b.const("zero_i64", [0], np.int64)
    positions = b.node("Slice", [table, zero, seq, zero], "/embeddings/position_embeddings/Slice")
    if types is not None:
        x = b.node("Add", [x, types], "/embeddings/Add")
    x = b.node("Add", [x, positions], "/embeddings/Add_1")
    out = b.layer_norm(x, "embeddings.LayerNorm", dims.layer_norm_eps)
    # Inference loses S at the Slice; naming it keeps every [B,S,*] shape comparable downstream.
    b.value_info.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [BATCH, SEQUENCE, dims.hidden]))
    return out


def _additive_mask(b: GraphBuilder) -> str:
    """``(1 - attention_mask) * finfo(float32).min`` broadcast as [B,1,1,S]."""
    m = b.node("Cast", ["attention_mask"], "/mask/Cast", to=TensorProto.FLOAT)
    inv = b.node("Sub", [b.const("one", 1.0), m], "/mask/Sub")
    neg = b.node("Mul", [inv, b.const("finfo_min", float(np.finfo(np.float32).min))], "/mask/Mul")
    return b.node("Unsqueeze", [neg, b.const("axes_1_2", [1, 2], np.int64)], "/mask/Unsqueeze")


def _layer_dims(b: GraphBuilder, layer: int, hidden: int, head_dim: int) -> tuple[int, int]:
    """(heads, intermediate size) of one layer from its weight shapes; ExportError if inconsistent."""
    p = f"encoder.layer.{layer}"
    rows = b.weight(f"{p}.attention.self.query.weight").shape[0]
    if rows % head_dim:
        raise ExportError(f"{rows} rows is not a multiple of head_dim {head_dim}",
                          field=f"{p}.attention.self.query.weight")
    inter = b.weight(f"{p}.intermediate.dense.weight").shape[0]
    expected = {f"{p}.attention.self.{m}.weight": (rows, hidden) for m in ("query", "key", "value")}
    expected.update({f"{p}.attention.self.{m}.bias": (rows,) for m in ("query", "key", "value")})
    expected[f"{p}.attention.output.dense.weight"] = (hidden, rows)
    expected[f"{p}.intermediate.dense.weight"] = (inter, hidden)
    expected[f"{p}.intermediate.dense.bias"] = (inter,)
    expected[f"{p}.output.dense.weight"] = (hidden, inter)
    for name, shape in expected.items():
        got = tuple(b.weight(name).shape)
        if got != shape:
            raise ExportError(f"shape {list(got)} != expected {list(shape)}", field=name)
    return rows // head_dim, inter


def _heads_of(b: GraphBuilder, x: str, module: str, heads: int, head_dim: int, perm: list[int]) -> str:
    """One projection split into heads: [B,S,h*d] -> [B,h,S,d] (or [B,h,d,S] for K)."""
    projection = b.linear(x, module)
    shape = b.const(f"shape_0_0_{heads}_{head_dim}", [0, 0, heads, head_dim], np.int64)
    path = node_path(module)
    split = b.node("Reshape", [projection, shape], f"{path}/Reshape")
    return b.node("Transpose", [split], f"{path}/Transpose", perm=perm)


def _attention(b: GraphBuilder, x: str, mask: str, layer: int, heads: int, head_dim: int, eps: float) -> str:
    """Self-attention block: ``LayerNorm(X + O(softmax(QK^T/sqrt(d) + M) V))``."""
    p = f"encoder.layer.{layer}.attention"
    if heads == 0:
        out = b.param(f"{p}.output.dense.bias")
    else:
        q = _heads_of(b, x, f"{p}.self.query", heads, head_dim, [0, 2, 1, 3])
        k = _heads_of(b, x, f"{p}.self.key", heads, head_dim, [0, 2, 3, 1])
        v = _heads_of(b, x, f"{p}.self.value", heads, head_dim, [0, 2, 1, 3])
        path = node_path(f"{p}.self")
        scores = b.node("MatMul", [q, k], f"{path}/MatMul")
        scores = b.node("Div", [scores, b.const(f"sqrt_head_dim_{head_dim}", math.sqrt(head_dim))], f"{path}/Div")
        probs = b.node("Softmax", [b.node("Add", [scores, mask], f"{path}/Add")], f"{path}/Softmax", axis=-1)
        ctx = b.node("MatMul", [probs, v], f"{path}/MatMul_1")
        ctx = b.node("Transpose", [ctx], f"{path}/Transpose", perm=[0, 2, 1, 3])
        merged = b.const(f"shape_0_0_{heads * head_dim}", [0, 0, heads * head_dim], np.int64)
        out = b.linear(b.node("Reshape", [ctx, merged], f"{path}/Reshape"), f"{p}.output.dense")
    residual = b.node("Add", [out, x], f"{node_path(p + '.output')}/Add")
    return b.layer_norm(residual, f"{p}.output.LayerNorm", eps)


def _ffn(b: GraphBuilder, x: str, layer: int, inter: int, act: str, eps: float) -> str:
    """Feed-forward block: ``LayerNorm(X + W2 act(W1 X + b1) + b2)``."""
    p = f"encoder.layer.{layer}"
    if inter == 0:
        out = b.param(f"{p}.output.dense.bias")
    else:
        h = b.activation(b.linear(x, f"{p}.intermediate.dense"), act,
                         node_path(f"{p}.intermediate.intermediate_act_fn"))
        out = b.linear(h, f"{p}.output.dense")
    residual = b.node("Add", [out, x], f"{node_path(p + '.output')}/Add")
    return b.layer_norm(residual, f"{p}.output.LayerNorm", eps)


def build_onnx_model(config: PretrainedConfig, weights: Mapping[str, torch.Tensor], head: HeadSpec, *,
                     arch: Architecture = BERT, options: GraphOptions = GraphOptions()) -> onnx.ModelProto:
    """The encoder + ``head`` as an ONNX model (inputs ``arch.input_names``, output ``head.output_name``)."""
    if options.opset < 17:
        raise ExportError(f"opset {options.opset} < 17 has no LayerNormalization", field="opset")
    if head.kind not in arch.heads:
        raise ExportError(f"a {arch.name} encoder has no {head.kind!r} head (known: {', '.join(arch.heads)})",
                          field="head.kind")
    dims = arch.dims(config)
    b = GraphBuilder(weights)
    x = _embeddings(b, arch, dims, config)
    mask = _additive_mask(b)
    for layer in range(dims.layers):
        heads, inter = _layer_dims(b, layer, dims.hidden, dims.head_dim)
        logger.debug("layer %d: %d heads, intermediate %d", layer, heads, inter)
        x = _attention(b, x, mask, layer, heads, dims.head_dim, dims.layer_norm_eps)
        x = _ffn(b, x, layer, inter, dims.activation, dims.layer_norm_eps)
    output = build_head(b, x, head, arch=arch, dims=dims)
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, [BATCH, SEQUENCE]) for n in arch.input_names]
    graph = helper.make_graph(b.nodes, options.graph_name, inputs, [output],
                              initializer=list(b.initializers.values()), value_info=b.value_info)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", options.opset)],
                              producer_name=options.producer_name, ir_version=options.ir_version)
    if options.check:
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"built graph is not valid ONNX: {exc}") from exc
    return model
