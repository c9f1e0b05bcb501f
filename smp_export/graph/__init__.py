"""The exported graph: ``build_onnx_model`` (plain ONNX, ``encoder``), its heads and primitives."""

from .builder import BATCH, SEQUENCE, GraphBuilder, GraphOptions, linear_initializer_name, node_path
from .encoder import build_onnx_model

__all__ = ["BATCH", "SEQUENCE", "GraphBuilder", "GraphOptions", "build_onnx_model", "linear_initializer_name",
           "node_path"]
