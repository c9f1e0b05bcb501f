"""What a deployment needs and nothing more: the contract (input names, tokenizer files, the
input builder), the manifest schema, the error root, the onnxruntime session (providers, the
``ai.smp`` kernel library), tokenization, the native kernels and the server.

Imports no other project package: a server installs with onnxruntime, numpy, tokenizers and the
server's own dependencies (``pip install ".[cpu]"``), without torch, transformers or matplotlib.
"""
