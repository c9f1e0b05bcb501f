"""What sits on the encoder's output ``X`` [B,S,H] in the graph, one function per head kind::

    none:                    X ─► last_hidden_state [B,S,H]
    sequence-classification: X[:,0] ─ pooler.dense ─ act (BERT Tanh, DistilBERT Relu) ─ classifier ─► logits [B,n]
    smp-label-words:         X[:,0] ─ transform (MatMul, Add, act, LayerNorm)
                               ─ MatMul(W_dec[labels]^T) ─ Add(bias[labels]) ─► logits [B,n]
    prototype:               ReduceSum(X * m, 1) / max(ReduceSum(m, 1), 1e-9) ─► P [B,H]
                               P / max(sqrt(ReduceSum(P * P, -1)), 1e-12)
                               ─ MatMul(prototype.weight^T) ─► logits [B,n]
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from runtime.contract import HIDDEN, LOGITS

from ..arch import Architecture, EncoderDims
from ..checkpoint import HeadSpec
from ..errors import ExportError
from .builder import BATCH, SEQUENCE, GraphBuilder, node_path


def _first_token(b: GraphBuilder, x: str, path: str) -> str:
    return b.node("Gather", [x, b.const("zero_scalar_i64", 0, np.int64)], f"{path}/Gather", axis=1)


def _sequence_classification(b: GraphBuilder, x: str, arch: Architecture) -> int:
    pooled = b.linear(_first_token(b, x, "/pooler"), "pooler.dense")
    pooled = b.node(arch.pooler_activation, [pooled], f"/pooler/activation/{arch.pooler_activation}")
    b.linear(pooled, "classifier", output=LOGITS)
    return b.weight("classifier.weight").shape[0]


def _label_words(b: GraphBuilder, x: str, head: HeadSpec, dims: EncoderDims) -> int:
    ids = list(head.label_token_ids)
    if not ids or min(ids) < 0 or max(ids) >= dims.vocab_size:
        raise ExportError(f"label_token_ids must be non-empty and in [0, {dims.vocab_size})", field="label_token_ids")
    p = "cls.predictions"
    h = b.linear(_first_token(b, x, f"/{p.replace('.', '/')}"), f"{p}.transform.dense")
    h = b.activation(h, dims.activation, node_path(f"{p}.transform.transform_act_fn"))
    h = b.layer_norm(h, f"{p}.transform.LayerNorm", dims.layer_norm_eps)
    dec = f"{p}.decoder.weight" if f"{p}.decoder.weight" in b.weights else "embeddings.word_embeddings.weight"
    bias = f"{p}.bias" if f"{p}.bias" in b.weights else f"{p}.decoder.bias"
    w = b.initializer(f"{p}.decoder.label_weight_t", b.weight(dec)[ids].T)
    bl = b.initializer(f"{p}.decoder.label_bias", b.weight(bias)[ids])
    y = b.node("MatMul", [h, w], f"{node_path(p + '.decoder')}/MatMul")
    b.node("Add", [y, bl], f"{node_path(p + '.decoder')}/Add", output=LOGITS)
    return len(ids)


def _prototype(b: GraphBuilder, x: str) -> int:
    """Mean pooling over real tokens, L2 normalisation, MatMul with ``prototype.weight^T``."""
    path = "/prototype"
    m = b.node("Cast", ["attention_mask"], f"{path}/Cast", to=TensorProto.FLOAT)
    m3 = b.node("Unsqueeze", [m, b.const("axes_2", [2], np.int64)], f"{path}/Unsqueeze")
    summed = b.node("ReduceSum", [b.node("Mul", [x, m3], f"{path}/Mul"), b.const("axes_1", [1], np.int64)],
                    f"{path}/ReduceSum", keepdims=0)
    count = b.node("ReduceSum", [m, b.const("axes_1", [1], np.int64)], f"{path}/ReduceSum_1", keepdims=1)
    count = b.node("Max", [count, b.const("pool_eps", 1e-9)], f"{path}/Max")
    pooled = b.node("Div", [summed, count], f"{path}/Div")
    sq = b.node("ReduceSum", [b.node("Mul", [pooled, pooled], f"{path}/Mul_1"), b.const("axes_m1", [-1], np.int64)],
                f"{path}/ReduceSum_2", keepdims=1)
    norm = b.node("Max", [b.node("Sqrt", [sq], f"{path}/Sqrt"), b.const("norm_eps", 1e-12)], f"{path}/Max_1")
    unit = b.node("Div", [pooled, norm], f"{path}/Div_1")
    w = b.initializer("prototype.weight_t", b.weight("prototype.weight").T)
    b.node("MatMul", [unit, w], f"{path}/MatMul", output=LOGITS)
    return b.weight("prototype.weight").shape[0]


def build_head(b: GraphBuilder, x: str, head: HeadSpec, *, arch: Architecture,
               dims: EncoderDims) -> onnx.ValueInfoProto:
    """Emit the head on ``x``; return the graph output's value info."""
    if head.kind == "none":
        b.nodes[-1].output[0] = HIDDEN
        return helper.make_tensor_value_info(HIDDEN, TensorProto.FLOAT, [BATCH, SEQUENCE, dims.hidden])
    if head.kind == "sequence-classification":
        n = _sequence_classification(b, x, arch)
    elif head.kind == "smp-label-words":
        n = _label_words(b, x, head, dims)
    elif head.kind == "prototype":
        n = _prototype(b, x)
    else:
        raise ExportError(f"unknown head kind {head.kind!r}", field="head.kind")
    return helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, [BATCH, n])
