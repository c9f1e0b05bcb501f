"""The primitives every graph of the exporter is built from: one initializer per weight,
named nodes, linears, LayerNorms and activations in plain ONNX (opset >= 17)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from ..errors import ExportError

BATCH, SEQUENCE = "batch_size", "sequence_length"


@dataclass(frozen=True)
class GraphOptions:
    """How the graph is emitted (opset >= 17: ``LayerNormalization`` is native)."""

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


class GraphBuilder:
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

    def node(self, op: str, inputs: Sequence[str], name: str, *, output: str | None = None, **attrs) -> str:
        out = output or f"{name}_output_0"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=name, **attrs))
        return out

    def param(self, name: str) -> str:
        """A checkpoint tensor used as is (embeddings, LayerNorm, biases)."""
        if name in self.initializers:
            return name
        return self.initializer(name, self.weight(name))

    def linear(self, x: str, module: str, *, output: str | None = None) -> str:
        """``x @ W^T + bias`` as MatMul(``<module>.weight_t``) + Add(``<module>.bias``)."""
        wt = self.initializer(linear_initializer_name(f"{module}.weight"), self.weight(f"{module}.weight").T)
        path = node_path(module)
        y = self.node("MatMul", [x, wt], f"{path}/MatMul")
        return self.node("Add", [y, self.param(f"{module}.bias")], f"{path}/Add", output=output)

    def layer_norm(self, x: str, module: str, eps: float, *, output: str | None = None) -> str:
        return self.node("LayerNormalization", [x, self.param(f"{module}.weight"), self.param(f"{module}.bias")],
                         f"{node_path(module)}/LayerNormalization", output=output, axis=-1, epsilon=float(eps))

    def activation(self, x: str, act: str, path: str) -> str:
        """HF's ``ACT2FN[act]``: exact erf GELU, tanh GELU or ReLU."""
        if act == "relu":
            return self.node("Relu", [x], f"{path}/Relu")
        if act == "gelu":
            e = self.node("Erf", [self.node("Div", [x, self.const("sqrt2", math.sqrt(2.0))], f"{path}/Div")],
                          f"{path}/Erf")
            y = self.node("Mul", [x, self.node("Add", [e, self.const("one", 1.0)], f"{path}/Add")], f"{path}/Mul")
            return self.node("Mul", [y, self.const("half", 0.5)], f"{path}/Mul_1")
        if act in ("gelu_new", "gelu_pytorch_tanh"):
            cube = self.node("Pow", [x, self.const("three", 3.0)], f"{path}/Pow")
            inner = self.node("Add", [x, self.node("Mul", [cube, self.const("gelu_c", 0.044715)], f"{path}/Mul")],
                              f"{path}/Add")
            scaled = self.node("Mul", [inner, self.const("sqrt_2_over_pi", math.sqrt(2.0 / math.pi))],
                               f"{path}/Mul_1")
            t = self.node("Add", [self.node("Tanh", [scaled], f"{path}/Tanh"), self.const("one", 1.0)], f"{path}/Add_1")
            return self.node("Mul", [self.node("Mul", [x, self.const("half", 0.5)], f"{path}/Mul_2"), t],
                             f"{path}/Mul_3")
        raise ExportError(f"unsupported activation {act!r} (gelu, gelu_new, gelu_pytorch_tanh, relu)",
                          field="hidden_act")
