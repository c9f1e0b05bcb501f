"""Write a Triton Inference Server model repository for an export directory.

::

    REPOSITORY/
      MODEL/
        config.pbtxt          platform onnxruntime_onnx, inputs/outputs, dynamic_batching,
                              threads; model_operations.op_library_filename for ai.smp models
        labels.txt            id2label, one per line (Triton's classification extension)
        libsmp_sparse.so      the ai.smp kernels, for a model that needs them
        inferenceservice.yaml a KServe InferenceService for the repository (with KServeOptions)
        1/model.onnx
        config.json, tokenizer files, manifest.json   (for clients; Triton ignores them)

A model that needs the ai.smp domain (the kernel variants) gets the library beside it and the
path Triton will open it from: ``TritonOptions.library_root`` (the repository's path inside
Triton's container), else ``/mnt/models`` under KServe, else the repository's absolute path
here. The library loads into onnxruntime >= 1.17 (``ORT_MIN_VERSION``); an older backend fails
the model's load with the library's own message. Other custom domains are refused.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..contract import CONFIG_FILE, LOGITS, MODEL_FILE, TOKENIZER_FILES
from ..errors import TritonRepositoryError
from ..kernels import LIBRARY_NAME, SPARSE_DOMAIN, KernelLibraryError, custom_op_library_path
from ..manifest import MANIFEST_NAME, Manifest
from ..providers import import_onnxruntime
from ..session import BUILTIN_DOMAINS, export_domains
from .config import sanitize_model_name
from .kserve import FILE_NAME as KSERVE_FILE
from .kserve import MOUNT, KServeOptions, render_inference_service
from .model import read_model_config
from .triton_config import LABELS_FILE, TRITON_TYPES, IOSpec, TritonOptions, io_specs, render_config

log = logging.getLogger(__name__)

SIDE_FILES = (CONFIG_FILE, MANIFEST_NAME, *TOKENIZER_FILES)
__all__ = ["IOSpec", "KServeOptions", "TRITON_TYPES", "TritonOptions", "check_kserve", "check_repository",
           "kernel_library", "read_io", "render_config", "write_model_repository"]


def read_io(model_path: Path, custom_op_libraries: tuple[str, ...] = ()) -> tuple[list[IOSpec], list[IOSpec]]:
    """Inputs and outputs of ``model_path``, read by onnxruntime (no graph optimisation)."""
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    for library in custom_op_libraries:
        opts.register_custom_ops_library(library)
    try:
        session = ort.InferenceSession(str(model_path), sess_options=opts,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's pybind errors derive from Exception directly
        raise TritonRepositoryError(f"onnxruntime cannot load the model: {exc}",
                                    path=model_path) from exc
    return io_specs(session.get_inputs(), model_path), io_specs(session.get_outputs(), model_path)


def needs_kernel_library(export_dir: Path) -> bool:
    """Whether the model needs the ai.smp library; TritonRepositoryError for any other custom domain."""
    manifest = Manifest.read(export_dir) if (export_dir / MANIFEST_NAME).is_file() else None
    domains = export_domains(export_dir, manifest)
    custom = sorted(domains - BUILTIN_DOMAINS - {SPARSE_DOMAIN})
    if custom:
        raise TritonRepositoryError(f"the model needs custom operator domain(s) {', '.join(custom)}, whose "
                                    "library this writer does not know (it ships only ai.smp's)",
                                    path=export_dir / MODEL_FILE)
    return SPARSE_DOMAIN in domains


def _models(repository: Path) -> list[str]:
    """The model folders of ``repository``; TritonRepositoryError when it exists and is not a
    Triton model repository: a file, or a folder with anything but model folders (a folder
    holding config.pbtxt or a numeric version folder)."""
    if not repository.exists():
        return []
    if not repository.is_dir():
        raise TritonRepositoryError("not a directory, so not a Triton model repository", path=repository,
                                    field="repository")
    models = []
    for entry in sorted(repository.iterdir()):
        if entry.name.startswith("."):
            continue
        model_folder = entry.is_dir() and ((entry / "config.pbtxt").is_file() or any(
            p.is_dir() and p.name.isdigit() for p in entry.iterdir()))
        if not model_folder:
            raise TritonRepositoryError(f"not a Triton model repository: {entry.name!r} is not a model folder "
                                        "(a repository holds only folders with config.pbtxt or version "
                                        "folders); choose an empty or new folder", path=repository,
                                        field="repository")
        models.append(entry.name)
    return models


def check_repository(repository: Path, model_name: str | None = None, options: TritonOptions = TritonOptions(),
                     kserve: KServeOptions | None = None) -> None:
    """Everything about the destination that can be refused before any output: ``repository``
    is a repository, ``model_name`` is not taken (unless ``options.overwrite``), and a KServe
    repository holds this model only (KServe's Triton loads every model of its repository, on
    the one pod whose CPU request is sized for this model)."""
    models = _models(repository)
    name = sanitize_model_name(model_name) if model_name else None
    if name in models and not options.overwrite:
        raise TritonRepositoryError("model folder exists in the repository (overwrite to replace it)",
                                    path=repository / name, field="repository")
    others = [m for m in models if m != name]
    if kserve is not None and others:
        raise TritonRepositoryError(f"the repository already holds {', '.join(others)}: KServe's Triton would load "
                                    "them all on this model's pod; give this model a repository of its own",
                                    path=repository, field="--kserve-storage-uri")
    check_kserve(options, kserve)


def _library_source(options: TritonOptions) -> Path:
    """The library file to ship (``TritonOptions`` checked that a given one is a file)."""
    if options.op_library is not None:
        return Path(options.op_library).resolve()
    try:
        return custom_op_library_path()
    except KernelLibraryError as exc:
        raise TritonRepositoryError(f"the model needs the ai.smp library: {exc}", field="--op-library") from exc


def _library_root(repository: Path, options: TritonOptions, kserve: KServeOptions | None) -> str:
    """The repository's path as Triton will see it."""
    if kserve is not None:
        return MOUNT
    return options.library_root or str(repository.resolve())


def _labels(export_dir: Path, outputs: list[IOSpec]) -> tuple[str | None, list[str]]:
    """The output to label (``logits`` [batch, n]) and its labels from config.json's id2label."""
    id2label = read_model_config(export_dir).get("id2label") or {}
    logits = next((o for o in outputs if o.name == LOGITS and len(o.shape) == 2), None)
    if logits is None or not isinstance(id2label, dict) or not id2label:
        return None, []
    try:
        labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    except ValueError:
        return None, []
    return logits.name, labels


def _check_handoff(export_dir: Path, options: TritonOptions) -> Path | None:
    """The library to ship (None when the model needs none), after the checks that need no output."""
    if not needs_kernel_library(export_dir):
        if options.op_library or options.library_root:
            log.warning("--op-library / --library-root ignored: %s needs no ai.smp library", export_dir)
        return None
    return kernel_library(options)


def kernel_library(options: TritonOptions) -> Path:
    """The ai.smp library a kernel export ships with; refused for GPU instances."""
    if options.device != "cpu":
        raise TritonRepositoryError("the ai.smp kernels run on the CPU only: this model needs KIND_CPU "
                                    "instances (device cpu)", field="--device")
    return _library_source(options)


def check_kserve(options: TritonOptions, kserve: KServeOptions | None) -> None:
    """KServe mounts the repository at ``MOUNT`` and gives the pod a CPU request: the library
    path and Triton's threads (``cores``) must match them."""
    if kserve is None:
        return
    if options.library_root not in (None, MOUNT, MOUNT + "/"):
        raise TritonRepositoryError(f"KServe serves the repository from {MOUNT}, not {options.library_root}",
                                    field="--library-root")
    if options.device == "cpu" and options.cores is None:
        raise TritonRepositoryError("KServe needs --cores: the pod's CPU request, shared by Triton's instances",
                                    field="--cores")


def write_model_repository(export_dir: str | Path, repository: str | Path, model_name: str | None = None,
                           options: TritonOptions = TritonOptions(), *,
                           kserve: KServeOptions | None = None) -> Path:
    """Write ``repository/model_name/`` for ``export_dir`` atomically; returns the model folder."""
    export_dir, repository = Path(export_dir), Path(repository)
    model_path = export_dir / MODEL_FILE
    if not model_path.is_file():
        raise TritonRepositoryError(f"{MODEL_FILE} not found in the export directory", path=model_path)
    name = sanitize_model_name(model_name or export_dir.resolve().name)
    target = repository / name
    check_repository(repository, name, options, kserve)
    library = _check_handoff(export_dir, options)
    op_library = f"{_library_root(repository, options, kserve).rstrip('/')}/{name}/{LIBRARY_NAME}" if library else None
    inputs, outputs = read_io(model_path, (str(library),) if library else ())
    label_output, labels = _labels(export_dir, outputs)
    files = {"config.pbtxt": render_config(name, inputs, outputs, options, label_output, op_library)}
    if label_output:
        files[LABELS_FILE] = "\n".join(labels) + "\n"
    if kserve is not None:
        files[KSERVE_FILE] = render_inference_service(name, kserve, cores=options.cores or 1,
                                                      gpu=options.device == "cuda")
    _write_atomically(export_dir, repository, target, files, library)
    log.info("wrote Triton model %r to %s%s", name, target, f" (op library {op_library})" if library else "")
    return target


def _write_atomically(export_dir: Path, repository: Path, target: Path, files: dict[str, str],
                      library: Path | None) -> None:
    """Build the model folder in a hidden temporary folder, then rename it into place; an old
    folder is renamed aside first and removed last, so no moment leaves a half-written one."""
    created = not repository.exists()
    repository.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=repository))
    old = None
    try:
        tmp.chmod(0o755)            # mkdtemp makes it 0700: Triton often runs as another user
        (tmp / "1").mkdir()
        shutil.copy2(export_dir / MODEL_FILE, tmp / "1" / MODEL_FILE)
        for side in SIDE_FILES:
            if (export_dir / side).is_file():
                shutil.copy2(export_dir / side, tmp / side)
        if library is not None:
            shutil.copy2(library, tmp / LIBRARY_NAME)
        for file_name, text in files.items():
            (tmp / file_name).write_text(text, encoding="utf-8")
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=repository))
            os.replace(target, old / target.name)
        os.replace(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists():
            os.replace(old / target.name, target)              # put the old model back
        if created:
            shutil.rmtree(repository, ignore_errors=True)
        if isinstance(exc, OSError):
            raise TritonRepositoryError(f"cannot write the model folder: {exc}", path=target) from exc
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
