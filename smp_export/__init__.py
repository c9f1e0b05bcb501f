"""smp-export: pruning checkpoints in, validated sparse ONNX out."""

__version__ = "0.1.0"
