"""Build the ONNX graph of a (possibly compacted) BERT encoder + head with ``onnx.helper``.

The graph computes exactly what Hugging Face's eager ``BertModel`` computes. The number of
heads and the intermediate size of every layer are read from that layer's weight shapes
(``heads_l = query.weight.shape[0] // d`` with ``d = hidden_size // num_attention_heads``,
``inter_l = intermediate.dense.weight.shape[0]``), so compacted weights build as they are.

Sketch (B = batch_size, S = sequence_length, H = hidden, d = head_dim)::

    input_ids ── Gather(word) ─┐
    token_type_ids ── Gather(type) ─ Add ─ Add(Slice(position)[:S]) ─ LayerNorm ─► X [B,S,H]
    attention_mask ── Cast ─ (1 - m) * finfo.min ─ Unsqueeze[1,2] ─► M [B,1,1,S]
    per layer l:
      X ─ MatMul(query.weight_t) ─ Add(query.bias) ─ Reshape[0,0,h_l,d] ─ Transpose ─► Q [B,h,S,d]
      (K the same, transposed to [B,h,d,S]; V like Q)
      Softmax(Q @ K / sqrt(d) + M) @ V ─ Transpose ─ Reshape[0,0,h_l*d]
        ─ MatMul(attention.output.dense.weight_t) ─ Add ─ Add(X) ─ LayerNorm ─► A
      A ─ MatMul(intermediate.dense.weight_t) ─ Add ─ act ─ MatMul(output.dense.weight_t) ─ Add
        ─ Add(A) ─ LayerNorm ─► X
    head none:                    X ─► last_hidden_state [B,S,H]
    head sequence-classification: X[:,0] ─ pooler (MatMul, Add, Tanh) ─ classifier ─► logits [B,n]
    head smp-label-words:         X[:,0] ─ transform (MatMul, Add, act, LayerNorm)
                                    ─ MatMul(W_dec[labels]^T) ─ Add(bias[labels]) ─► logits [B,n]
    head prototype:               ReduceSum(X * m, 1) / max(ReduceSum(m, 1), 1e-9) ─► P [B,H]
                                    P / max(sqrt(ReduceSum(P * P, -1)), 1e-12)
                                    ─ MatMul(prototype.weight^T) ─► logits [B,n]

Every linear is ``MatMul`` with an initializer ``<module>.weight_t`` (W^T, shape [in, out])
followed by ``Add`` with ``<module>.bias``. A layer whose heads (or FFN neurons) were all
removed keeps only the output bias of that block: ``LayerNorm(X + bias)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from transformers import BertConfig

from runtime.kernels import ATTENTION_OP, SPARSE_DOMAIN, SPARSE_OPSET

from .checkpoint import HeadSpec
from .errors import ExportError

logger = logging.getLogger(__name__)

INPUT_NAMES: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
BATCH, SEQUENCE = "batch_size", "sequence_length"


@dataclass(frozen=True)
class GraphOptions:
    """How the graph is emitted (opset >= 17: ``LayerNormalization`` is native).

    ``attention`` is how the attention core (split heads, QK^T, scale, mask, softmax, @V,
    merge heads) is emitted: ``onnx``, plain ONNX ops that run anywhere; ``mha``, one
    onnxruntime ``com.microsoft.MultiHeadAttention`` node; ``smp``, one ``ai.smp.Attention``
    node (the project's kernel library). The fused forms take the three projections as
    [B,S,h*d], so the projections stay ordinary linears that can still be sparsified. None:
    the exporter decides; the builder reads None as ``onnx``.
    """

    attention: str | None = None
    opset: int = 17
    ir_version: int = 8
    graph_name: str = "smp_bert"
    producer_name: str = "smp-export"
    check: bool = True


def linear_initializer_name(weight_name: str) -> str:
    """``encoder.layer.0.attention.self.query.weight`` -> ``...query.weight_t``."""
    if not weight_name.endswith(".weight"):
        raise ValueError(f"not a weight name: {weight_name}")
    return weight_name + "_t"


def node_path(module: str) -> str:
    """``encoder.layer.0.attention.self.query`` -> ``/encoder/layer.0/attention/self/query``."""
    parts: list[str] = []
    for part in module.split("."):
        if part.isdigit() and parts:
            parts[-1] += f".{part}"
        else:
            parts.append(part)
    return "/" + "/".join(parts)


class _Builder:
    """Collects nodes and initializers; every initializer is stored exactly once."""

    def __init__(self, weights: Mapping[str, torch.Tensor]):
        self.weights = weights
        self.value_info: list[onnx.ValueInfoProto] = []   # shapes onnx inference cannot know
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}

    def weight(self, name: str) -> np.ndarray:
        """A checkpoint weight as float32 numpy; ExportError naming it if missing."""
        if name not in self.weights:
            raise ExportError("weight missing from the checkpoint", field=name)
        return self.weights[name].detach().cpu().to(torch.float32).numpy()

    def initializer(self, name: str, array: np.ndarray) -> str:
        if name in self.initializers:
            raise ExportError("initializer defined twice", field=name)
        self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(array), name)
        return name

    def const(self, name: str, value: Sequence[float] | float, dtype: type = np.float32) -> str:
        """A small shared constant (scalar or 1-D), created on first use."""
        full = f"const.{name}"
        if full not in self.initializers:
            self.initializers[full] = numpy_helper.from_array(np.asarray(value, dtype=dtype), full)
        return full

    def node(self, op: str, inputs: Sequence[str], name: str, *, output: str | None = None,
             **attrs) -> str:
        out = output or f"{name}_output_0"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=name, **attrs))
        return out

    def param(self, name: str) -> str:
        """A checkpoint tensor used as is (embeddings, LayerNorm, biases)."""
        if name in self.initializers:
            return name
        return self.initializer(name, self.weight(name))


def _linear(b: _Builder, x: str, module: str) -> str:
    """``x @ W^T + bias`` as MatMul(``<module>.weight_t``) + Add(``<module>.bias``)."""
    w = b.weight(f"{module}.weight")
    wt = b.initializer(linear_initializer_name(f"{module}.weight"), w.T)
    path = node_path(module)
    y = b.node("MatMul", [x, wt], f"{path}/MatMul")
    return b.node("Add", [y, b.param(f"{module}.bias")], f"{path}/Add")


def _layer_norm(b: _Builder, x: str, module: str, eps: float, *, output: str | None = None) -> str:
    return b.node("LayerNormalization", [x, b.param(f"{module}.weight"), b.param(f"{module}.bias")],
                  f"{node_path(module)}/LayerNormalization", output=output, axis=-1, epsilon=float(eps))


def _activation(b: _Builder, x: str, act: object, path: str) -> str:
    """HF's ``ACT2FN[act]``: exact erf GELU, tanh GELU or ReLU."""
    if act == "relu":
        return b.node("Relu", [x], f"{path}/Relu")
    if act == "gelu":
        e = b.node("Erf", [b.node("Div", [x, b.const("sqrt2", math.sqrt(2.0))], f"{path}/Div")], f"{path}/Erf")
        y = b.node("Mul", [x, b.node("Add", [e, b.const("one", 1.0)], f"{path}/Add")], f"{path}/Mul")
        return b.node("Mul", [y, b.const("half", 0.5)], f"{path}/Mul_1")
    if act in ("gelu_new", "gelu_pytorch_tanh"):
        cube = b.node("Pow", [x, b.const("three", 3.0)], f"{path}/Pow")
        inner = b.node("Add", [x, b.node("Mul", [cube, b.const("gelu_c", 0.044715)], f"{path}/Mul")],
                       f"{path}/Add")
        scaled = b.node("Mul", [inner, b.const("sqrt_2_over_pi", math.sqrt(2.0 / math.pi))], f"{path}/Mul_1")
        t = b.node("Add", [b.node("Tanh", [scaled], f"{path}/Tanh"), b.const("one", 1.0)], f"{path}/Add_1")
        half_x = b.node("Mul", [x, b.const("half", 0.5)], f"{path}/Mul_2")
        return b.node("Mul", [half_x, t], f"{path}/Mul_3")
    raise ExportError(f"unsupported activation {act!r} (gelu, gelu_new, gelu_pytorch_tanh, relu)",
                      field="hidden_act")


def _embeddings(b: _Builder, config: BertConfig) -> str:
    """word + token_type + position[:S] embeddings, then LayerNorm."""
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise ExportError("only absolute position embeddings are supported", field="position_embedding_type")
    words = b.node("Gather", [b.param("embeddings.word_embeddings.weight"), "input_ids"],
                   "/embeddings/word_embeddings/Gather", axis=0)
    types = b.node("Gather", [b.param("embeddings.token_type_embeddings.weight"), "token_type_ids"],
                   "/embeddings/token_type_embeddings/Gather", axis=0)
    seq = b.node("Shape", ["input_ids"], "/embeddings/Shape", start=1, end=2)
    positions = b.node("Slice", [b.param("embeddings.position_embeddings.weight"), b.const("zero_i64", [0], np.int64),
                                 seq, b.const("zero_i64", [0], np.int64)], "/embeddings/position_embeddings/Slice")
    x = b.node("Add", [words, types], "/embeddings/Add")
    x = b.node("Add", [x, positions], "/embeddings/Add_1")
    out = _layer_norm(b, x, "embeddings.LayerNorm", config.layer_norm_eps)
    # Inference loses S at the Slice; naming it keeps every [B,S,*] shape comparable downstream.
    b.value_info.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [BATCH, SEQUENCE, config.hidden_size]))
    return out


def _additive_mask(b: _Builder) -> str:
    """``(1 - attention_mask) * finfo(float32).min`` broadcast as [B,1,1,S]."""
    m = b.node("Cast", ["attention_mask"], "/mask/Cast", to=TensorProto.FLOAT)
    inv = b.node("Sub", [b.const("one", 1.0), m], "/mask/Sub")
    neg = b.node("Mul", [inv, b.const("finfo_min", float(np.finfo(np.float32).min))], "/mask/Mul")
    return b.node("Unsqueeze", [neg, b.const("axes_1_2", [1, 2], np.int64)], "/mask/Unsqueeze")


def _layer_dims(b: _Builder, layer: int, hidden: int, head_dim: int) -> tuple[int, int]:
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


def _split_heads(b: _Builder, x: str, heads: int, head_dim: int, path: str, perm: list[int]) -> str:
    shape = b.const(f"shape_0_0_{heads}_{head_dim}", [0, 0, heads, head_dim], np.int64)
    return b.node("Transpose", [b.node("Reshape", [x, shape], f"{path}/Reshape")], f"{path}/Transpose", perm=perm)


def _qkv(b: _Builder, x: str, module: str, heads: int, head_dim: int, perm: list[int]) -> str:
    """One projection split into heads: [B,S,h*d] -> [B,h,S,d] (or [B,h,d,S] for K)."""
    return _split_heads(b, _linear(b, x, module), heads, head_dim, node_path(module), perm)


ATTENTION_MODES: tuple[str, ...] = ("onnx", "mha", "smp")


def _fused_attention_core(b: _Builder, x: str, mask: str, p: str, heads: int, head_dim: int, mode: str) -> str:
    """One attention node on the [B,S,h*d] projections.

    Before: Reshape/Transpose x3, MatMul, Div, Add(M), Softmax, MatMul, Transpose, Reshape.
    After (mha): Q, K, V linears ─ com.microsoft.MultiHeadAttention(Q, K, V, "", int32 mask; num_heads=h)
    After (smp): Q, K, V linears ─ ai.smp.Attention(Q, K, V, attention_mask; shape=[h, d])
    Both scale by 1/sqrt(d) and give [B,S,h*d].
    """
    q, k, v = (_linear(b, x, f"{p}.self.{m}") for m in ("query", "key", "value"))
    path = node_path(p + ".self")
    if mode == "mha":
        out = b.node("MultiHeadAttention", [q, k, v, "", mask], f"{path}/MultiHeadAttention",
                     domain="com.microsoft", num_heads=heads)
    else:
        out = b.node(ATTENTION_OP, [q, k, v, mask], f"{path}/{ATTENTION_OP}", domain=SPARSE_DOMAIN,
                     shape=[heads, head_dim])
    # onnx shape inference has no schema for contrib ops: state the shape for the passes after.
    width = b.weight(f"{p}.self.value.weight").shape[0]
    b.value_info.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [BATCH, SEQUENCE, width]))
    return out


def _attention(b: _Builder, x: str, mask: str, layer: int, heads: int, head_dim: int, eps: float,
               *, mode: str = "onnx") -> str:
    """Self-attention block: ``LayerNorm(X + O(softmax(QK^T/sqrt(d) + M) V))``."""
    p = f"encoder.layer.{layer}.attention"
    if heads == 0:
        out = b.param(f"{p}.output.dense.bias")
    elif mode != "onnx":
        out = _linear(b, _fused_attention_core(b, x, mask, p, heads, head_dim, mode), f"{p}.output.dense")
    else:
        q = _qkv(b, x, f"{p}.self.query", heads, head_dim, [0, 2, 1, 3])
        k = _qkv(b, x, f"{p}.self.key", heads, head_dim, [0, 2, 3, 1])
        v = _qkv(b, x, f"{p}.self.value", heads, head_dim, [0, 2, 1, 3])
        path = node_path(f"{p}.self")
        scores = b.node("MatMul", [q, k], f"{path}/MatMul")
        scores = b.node("Div", [scores, b.const(f"sqrt_head_dim_{head_dim}", math.sqrt(head_dim))], f"{path}/Div")
        probs = b.node("Softmax", [b.node("Add", [scores, mask], f"{path}/Add")], f"{path}/Softmax", axis=-1)
        ctx = b.node("MatMul", [probs, v], f"{path}/MatMul_1")
        ctx = b.node("Transpose", [ctx], f"{path}/Transpose", perm=[0, 2, 1, 3])
        merged = b.const(f"shape_0_0_{heads * head_dim}", [0, 0, heads * head_dim], np.int64)
        ctx = b.node("Reshape", [ctx, merged], f"{path}/Reshape")
        out = _linear(b, ctx, f"{p}.output.dense")
    residual = b.node("Add", [out, x], f"{node_path(p + '.output')}/Add")
    return _layer_norm(b, residual, f"{p}.output.LayerNorm", eps)


def _ffn(b: _Builder, x: str, layer: int, inter: int, act: object, eps: float) -> str:
    """Feed-forward block: ``LayerNorm(X + W2 act(W1 X + b1) + b2)``."""
    p = f"encoder.layer.{layer}"
    if inter == 0:
        out = b.param(f"{p}.output.dense.bias")
    else:
        h = _linear(b, x, f"{p}.intermediate.dense")
        h = _activation(b, h, act, node_path(f"{p}.intermediate.intermediate_act_fn"))
        out = _linear(b, h, f"{p}.output.dense")
    residual = b.node("Add", [out, x], f"{node_path(p + '.output')}/Add")
    return _layer_norm(b, residual, f"{p}.output.LayerNorm", eps)


def _first_token(b: _Builder, x: str, path: str) -> str:
    return b.node("Gather", [x, b.const("zero_scalar_i64", 0, np.int64)], f"{path}/Gather", axis=1)


def _sequence_classification_head(b: _Builder, x: str) -> tuple[str, int]:
    pooled = _linear(b, _first_token(b, x, "/pooler"), "pooler.dense")
    pooled = b.node("Tanh", [pooled], "/pooler/activation/Tanh")
    _linear(b, pooled, "classifier")
    b.nodes[-1].output[0] = "logits"
    return "logits", b.weight("classifier.weight").shape[0]


def _label_words_head(b: _Builder, x: str, config: BertConfig, head: HeadSpec) -> tuple[str, int]:
    ids = list(head.label_token_ids)
    if not ids or min(ids) < 0 or max(ids) >= config.vocab_size:
        raise ExportError(f"label_token_ids must be non-empty and in [0, {config.vocab_size})",
                          field="label_token_ids")
    p = "cls.predictions"
    h = _linear(b, _first_token(b, x, f"/{p.replace('.', '/')}"), f"{p}.transform.dense")
    h = _activation(b, h, config.hidden_act, node_path(f"{p}.transform.transform_act_fn"))
    h = _layer_norm(b, h, f"{p}.transform.LayerNorm", config.layer_norm_eps)
    dec = f"{p}.decoder.weight" if f"{p}.decoder.weight" in b.weights else "embeddings.word_embeddings.weight"
    bias = f"{p}.bias" if f"{p}.bias" in b.weights else f"{p}.decoder.bias"
    w = b.initializer(f"{p}.decoder.label_weight_t", b.weight(dec)[ids].T)
    bl = b.initializer(f"{p}.decoder.label_bias", b.weight(bias)[ids])
    y = b.node("MatMul", [h, w], f"{node_path(p + '.decoder')}/MatMul")
    b.node("Add", [y, bl], f"{node_path(p + '.decoder')}/Add", output="logits")
    return "logits", len(ids)


def _prototype_head(b: _Builder, x: str) -> tuple[str, int]:
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
    b.node("MatMul", [unit, w], f"{path}/MatMul", output="logits")
    return "logits", b.weight("prototype.weight").shape[0]


def _head(b: _Builder, x: str, config: BertConfig, head: HeadSpec) -> onnx.ValueInfoProto:
    """Emit the head; return the graph output's value info."""
    if head.kind == "none":
        b.nodes[-1].output[0] = "last_hidden_state"
        return helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                             [BATCH, SEQUENCE, config.hidden_size])
    if head.kind == "sequence-classification":
        name, n = _sequence_classification_head(b, x)
    elif head.kind == "smp-label-words":
        name, n = _label_words_head(b, x, config, head)
    elif head.kind == "prototype":
        name, n = _prototype_head(b, x)
    else:
        raise ExportError(f"unknown head kind {head.kind!r}", field="head.kind")
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH, n])


def build_onnx_model(config: BertConfig, weights: Mapping[str, torch.Tensor], head: HeadSpec, *,
                     options: GraphOptions = GraphOptions()) -> onnx.ModelProto:
    """The BERT encoder + ``head`` as an ONNX model (inputs ``INPUT_NAMES``, output ``head.output_name``)."""
    if options.opset < 17:
        raise ExportError(f"opset {options.opset} < 17 has no LayerNormalization", field="opset")
    head_dim = config.hidden_size // config.num_attention_heads
    b = _Builder(weights)
    x = _embeddings(b, config)
    mode = options.attention or "onnx"
    if mode not in ATTENTION_MODES:
        raise ExportError(f"unknown attention {mode!r}; one of {', '.join(ATTENTION_MODES)}", field="--attention")
    masks = {"onnx": _additive_mask, "smp": lambda _: "attention_mask",
             "mha": lambda b: b.node("Cast", ["attention_mask"], "/mask/Cast", to=TensorProto.INT32)}
    mask = masks[mode](b)
    for layer in range(config.num_hidden_layers):
        heads, inter = _layer_dims(b, layer, config.hidden_size, head_dim)
        logger.debug("layer %d: %d heads, intermediate %d", layer, heads, inter)
        x = _attention(b, x, mask, layer, heads, head_dim, config.layer_norm_eps, mode=mode)
        x = _ffn(b, x, layer, inter, config.hidden_act, config.layer_norm_eps)
    output = _head(b, x, config, head)
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, [BATCH, SEQUENCE]) for n in INPUT_NAMES]
    graph = helper.make_graph(b.nodes, options.graph_name, inputs, [output],
                              initializer=list(b.initializers.values()), value_info=b.value_info)
    extra = {"onnx": [], "mha": [("com.microsoft", 1)], "smp": [(SPARSE_DOMAIN, SPARSE_OPSET)]}[mode]
    opsets = [helper.make_opsetid("", options.opset)] + [helper.make_opsetid(d, v) for d, v in extra]
    model = helper.make_model(graph, opset_imports=opsets,
                              producer_name=options.producer_name, ir_version=options.ir_version)
    if options.check:
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"built graph is not valid ONNX: {exc}") from exc
    return model
