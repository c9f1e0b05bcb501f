"""ONNX graph passes: each rewrite of the exported graph is one pass.

A pass is one function ``model -> model`` (returning a modified copy) with a before/after
sketch in its docstring and its own test on a tiny graph built with ``onnx.helper``
(see ``tests/test_passes.py``).

- ``sparse_initializer_pass``: named dense initializers -> ``graph.sparse_initializer``.
- ``sparse_kernel.sparse_kernel_pass``: pruned linears -> ``ai.smp.SparseLinear`` / ``SparseFFN``.
- ``qkv.qkv_fusion_pass``: the Q, K, V SparseLinear nodes of an ``ai.smp.Attention`` -> one.
"""

from .sparse_initializer import sparse_initializer_pass

__all__ = ["sparse_initializer_pass"]
