"""ONNX graph passes: each rewrite of the exported graph is one module, one function
``model -> model`` (a modified copy) with a before/after sketch in its docstring and its own
test on a tiny graph built with ``onnx.helper``. They share ``matcher`` (the graph view, path
matching, clean-up). In the order the kernel variants run them:

- ``attention.attention_fusion_pass``: plain attention cores -> ``MultiHeadAttention`` / ``ai.smp.Attention``;
- ``sparse_linear.sparse_linear_pass``: pruned MatMul + Add -> ``ai.smp.SparseLinear``
  (``sparse_linear_int8.sparse_linear_int8_pass``: -> ``ai.smp.SparseLinearInt8``, for int8);
- ``gelu.gelu_fusion_pass``, ``residual.residual_fusion_pass``, ``layer_norm.layer_norm_fusion_pass``:
  what follows a SparseLinear folded into it;
- ``ffn.ffn_fusion_pass``: a feed-forward pair -> ``ai.smp.SparseFFN``;
- ``qkv.qkv_fusion_pass``: the Q, K, V SparseLinear nodes of an ``ai.smp.Attention`` -> one;

the fusions (``KERNEL_FUSIONS``) treat SparseLinearInt8 as SparseLinear, at its own input
positions (``matcher.linear_inputs``), an int8 pair becoming ``ai.smp.SparseFFNInt8``; they never
join an fp32 node with an int8 one; ``attention_int8.attention_int8_pass`` then sets every
``ai.smp.Attention`` to int8 (``INT8_KERNEL_FUSIONS``: the int8 kernel export);

and, for the ``sparse-initializer`` variant, ``sparse_initializer.sparse_initializer_pass``.
"""

from .attention import attention_fusion_pass
from .attention_int8 import attention_int8_pass
from .ffn import ffn_fusion_pass
from .gelu import gelu_fusion_pass
from .layer_norm import layer_norm_fusion_pass
from .qkv import qkv_fusion_pass
from .residual import residual_fusion_pass
from .sparse_initializer import sparse_initializer_pass
from .sparse_linear import KernelSpec, module_of, sparse_arrays, sparse_linear_pass
from .sparse_linear_int8 import INT8_KEYS, sparse_linear_int8_pass

# What the kernel variants run after ``sparse_linear_pass`` (or ``sparse_linear_int8_pass``), in this order.
KERNEL_FUSIONS = (gelu_fusion_pass, residual_fusion_pass, layer_norm_fusion_pass, ffn_fusion_pass, qkv_fusion_pass)

# And after them in the int8 kernel export: attention in int8 too.
INT8_KERNEL_FUSIONS = (*KERNEL_FUSIONS, attention_int8_pass)

__all__ = ["INT8_KEYS", "INT8_KERNEL_FUSIONS", "KERNEL_FUSIONS", "KernelSpec", "attention_fusion_pass",
           "attention_int8_pass", "ffn_fusion_pass", "gelu_fusion_pass", "layer_norm_fusion_pass", "module_of",
           "qkv_fusion_pass", "residual_fusion_pass", "sparse_arrays", "sparse_initializer_pass",
           "sparse_linear_int8_pass", "sparse_linear_pass"]
