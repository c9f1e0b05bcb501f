"""Sparse weight formats (CSR, BSR) and structural compaction of BERT encoders."""

from .bsr import BSRConfig, BSRTensor, to_bsr
from .compact import CompactionConfig, CompactionResult, compact, layer_shapes
from .csr import CSRConfig, CSRTensor, to_csr

__all__ = [
    "BSRConfig", "BSRTensor", "to_bsr",
    "CSRConfig", "CSRTensor", "to_csr",
    "CompactionConfig", "CompactionResult", "compact", "layer_shapes",
]
