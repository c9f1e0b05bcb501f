"""Any export in optimum's ORTModel classes, kernel variants included.

``session_options(export_dir)`` is onnxruntime ``SessionOptions`` with every custom-op library
the export needs registered (the ai.smp kernels for ``sparse-kernel`` / ``auto``): pass it to
an existing optimum call unchanged::

    ORTModelForSequenceClassification.from_pretrained(export_dir, session_options=session_options(export_dir))

``load_ort_model(export_dir)`` does that call itself, choosing the class from the manifest's
outputs (``logits``: ORTModelForSequenceClassification, ``last_hidden_state``:
ORTModelForFeatureExtraction). optimum is imported only here, and only when asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .contract import CONFIG_FILE, HIDDEN, LOGITS, MODEL_FILE
from .errors import SessionError
from .manifest import MANIFEST_NAME, Manifest
from .providers import import_onnxruntime
from .session import required_custom_op_libraries

#: The session config entry recording which libraries ``session_options`` registered.
_REGISTERED = "smp.custom_op_libraries"
#: The optimum class for each output an export has.
ORT_MODEL_CLASSES = {LOGITS: "ORTModelForSequenceClassification", HIDDEN: "ORTModelForFeatureExtraction"}


def _manifest(export_dir: Path) -> Manifest:
    """The export's manifest; SessionError naming the file for a directory this project did not write."""
    if not (export_dir / MANIFEST_NAME).is_file():
        raise SessionError(f"not an smp-export directory: {MANIFEST_NAME} is missing (a plain optimum or "
                           "transformers export loads with optimum directly)", path=export_dir / MANIFEST_NAME)
    for name in (MODEL_FILE, CONFIG_FILE):
        if not (export_dir / name).is_file():
            raise SessionError(f"{name} not found in the export directory", path=export_dir / name)
    return Manifest.read(export_dir)


def session_options(export_dir: str | Path, *, intra_op_threads: int | None = None,
                    base: Any = None) -> Any:
    """``onnxruntime.SessionOptions`` (``base``, or new ones) with the libraries ``export_dir``
    needs registered; ``intra_op_threads`` sets the pool the ai.smp kernels run on."""
    export_dir = Path(export_dir)
    _manifest(export_dir)
    ort = import_onnxruntime()
    options = base if base is not None else ort.SessionOptions()
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    before = _registered(options)
    registered = list(before)
    for library in required_custom_op_libraries(export_dir):
        if library not in registered:          # onnxruntime refuses a domain registered twice
            options.register_custom_ops_library(library)
            registered.append(library)
    if registered != before:
        options.add_session_config_entry(_REGISTERED, "\n".join(registered))
    return options


def _registered(options: Any) -> list[str]:
    """The libraries ``session_options`` registered in ``options`` before (a config entry of its own)."""
    try:
        return [p for p in options.get_session_config_entry(_REGISTERED).split("\n") if p]
    except RuntimeError:                      # onnxruntime: no such entry
        return []


def ort_model_class(export_dir: str | Path) -> str:
    """The optimum class name for ``export_dir`` (from its manifest's outputs)."""
    export_dir = Path(export_dir)
    outputs = _manifest(export_dir).output_names
    found = [ORT_MODEL_CLASSES[name] for name in outputs if name in ORT_MODEL_CLASSES]
    if not found:
        raise SessionError(f"outputs {outputs} match no optimum ORTModel class ({', '.join(ORT_MODEL_CLASSES)})",
                           path=export_dir / MANIFEST_NAME, field="output_names")
    return found[0]


def load_ort_model(export_dir: str | Path, *, provider: str = "CPUExecutionProvider",
                   intra_op_threads: int | None = None, **kwargs: Any) -> Any:
    """``ORTModelForSequenceClassification`` / ``ORTModelForFeatureExtraction`` of ``export_dir``,
    with the export's custom-op libraries registered; ``kwargs`` go to ``from_pretrained``."""
    try:
        import optimum.onnxruntime as optimum_ort
    except ImportError as exc:
        raise SessionError(f"optimum's onnxruntime classes are not installed ({exc}); "
                           "pip install optimum-onnx", field="optimum") from exc
    export_dir = Path(export_dir)
    cls = getattr(optimum_ort, ort_model_class(export_dir))
    options = session_options(export_dir, intra_op_threads=intra_op_threads, base=kwargs.pop("session_options", None))
    return cls.from_pretrained(export_dir, file_name=MODEL_FILE, provider=provider, session_options=options, **kwargs)
