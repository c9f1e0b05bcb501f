"""An onnxruntime session over an export directory: tokenizer, labels, manifest, checks.

Works on smp-export directories (with manifest.json) and on plain dense ONNX exports
(names then come from the model). Never imports smp_export, transformers or torch.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .binding import BoundRun
from .contract import CONFIG_FILE, HIDDEN, LOGITS, MODEL_FILE, has_tokenizer
from .errors import CustomOpError, DeviceError, SessionError, TokenizerError
from .jsonfile import read_json_object
from .kernels import LIBRARY_NAME, SPARSE_DOMAIN, KernelLibraryError, custom_op_library_path
from .manifest import MANIFEST_NAME, Manifest
from .providers import CUDA, DEVICES, TENSORRT, TensorRTOptions, gpu_providers, import_onnxruntime, select_providers
from .tokenize import Texts, Tokenizer

log = logging.getLogger(__name__)

BUILTIN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
               "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
_ORT_DOMAIN_RE = re.compile(r"([\w.\-]+):\w+\(-?\d+\) is not a registered function/op"
                            r"|No opset import for domain '([^']*)'")


@dataclass(frozen=True)
class SessionConfig:
    """How to build the onnxruntime session."""

    device: str = "cpu"
    intra_op_threads: int | None = None     # None: onnxruntime's default (all cores)
    inter_op_threads: int = 1
    graph_optimization: str = "all"         # disable | basic | extended | all
    custom_op_libraries: tuple[str, ...] = ()
    spinning: bool | None = None            # intra-op threads spin between runs; None: onnxruntime's default (on)
    tensorrt: bool = False                  # cuda: TensorRT first (engine cache in the export's trt-cache/)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise DeviceError(f"unknown device {self.device!r}; --device must be one of "
                              f"{', '.join(DEVICES)}", field="--device")
        if self.graph_optimization not in _OPT_LEVELS:
            raise SessionError(f"unknown level {self.graph_optimization!r}; one of "
                               f"{', '.join(_OPT_LEVELS)}", field="graph_optimization")
        if self.intra_op_threads is not None and self.intra_op_threads < 0:
            raise SessionError("must be >= 0", field="intra_op_threads")
        if self.inter_op_threads < 0:
            raise SessionError("must be >= 0", field="inter_op_threads")
        if self.tensorrt and self.device != "cuda":
            raise DeviceError("TensorRT runs on the GPU: give --device cuda with --tensorrt", field="--tensorrt")


def model_domains(model_path: Path) -> set[str] | None:
    """Operator domains the model needs (opset imports and node domains, subgraphs included),
    less its own local functions' domains; None when the onnx package is missing or fails."""
    try:
        import onnx
        from google.protobuf.message import DecodeError
    except ImportError:
        return None
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except (OSError, ValueError, DecodeError) as exc:
        log.debug("onnx cannot parse %s: %s", model_path, exc)
        return None
    domains = {op.domain for op in model.opset_import}
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            domains.add(node.domain)
            graphs.extend(attr.g for attr in node.attribute if attr.HasField("g"))
            for attr in node.attribute:
                graphs.extend(attr.graphs)
    for fn in model.functions:
        domains.update(node.domain for node in fn.node)
    return domains - {fn.domain for fn in model.functions}


def _session_options(ort: Any, config: SessionConfig) -> Any:
    opts = ort.SessionOptions()
    if config.intra_op_threads is not None:
        opts.intra_op_num_threads = config.intra_op_threads
    opts.inter_op_num_threads = config.inter_op_threads
    if config.spinning is not None:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.spinning else "0")
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                            _OPT_LEVELS[config.graph_optimization])
    for lib in config.custom_op_libraries:
        if not Path(lib).is_file():
            raise SessionError("custom-op library not found", path=lib, field="custom_op_libraries")
        opts.register_custom_ops_library(str(lib))
    return opts


def check_used_providers(used: Sequence[str], config: SessionConfig, model_path: Path) -> None:
    """onnxruntime falls back quietly when a provider fails to start (CUDA to the CPU, TensorRT
    to CUDA): refuse a session that does not run where ``config`` asked."""
    if config.device == "cuda" and CUDA not in used:
        raise DeviceError("CUDAExecutionProvider failed to initialise (check the CUDA and cuDNN "
                          "libraries); onnxruntime fell back to the CPU", path=model_path, field="--device")
    if config.tensorrt and TENSORRT not in used:
        raise DeviceError("TensorrtExecutionProvider failed to initialise (check the TensorRT libraries, "
                          "libnvinfer); onnxruntime fell back to CUDA", path=model_path, field="--tensorrt")


def session_providers(export_dir: str | Path, config: SessionConfig) -> list[Any]:
    """The providers (with options) ``ModelSession.load`` would give ``export_dir``."""
    directory = Path(export_dir)
    manifest = Manifest.read(directory) if (directory / MANIFEST_NAME).is_file() else None
    return _providers(directory, manifest, config)


def export_domains(directory: Path, manifest: Manifest | None) -> set[str]:
    """The operator domains an export uses: those its manifest lists and those its model holds."""
    domains = set(manifest.custom_op_domains) if manifest else set()
    return domains | (model_domains(directory / MODEL_FILE) or set())


def _providers(directory: Path, manifest: Manifest | None, config: SessionConfig) -> list[Any]:
    """The providers for ``config.device``; DeviceError for an ai.smp model on a GPU (its kernels
    are CPU code: onnxruntime would copy every activation to the host and back around them)."""
    if config.device == "cpu":
        return select_providers("cpu")
    if SPARSE_DOMAIN in export_domains(directory, manifest):
        raise DeviceError(f"{directory.name} uses the {SPARSE_DOMAIN} kernels, which run on the CPU only; export "
                          "compact or dense (fp32 or --precision fp16) for --device cuda", path=directory / MODEL_FILE,
                          field="--device")
    if not config.tensorrt:
        return gpu_providers()
    structure = (manifest.metadata.get("structure") or {}) if manifest else {}
    return gpu_providers(TensorRTOptions(cache_dir=directory / "trt-cache",
                                         fp16=bool(manifest and manifest.precision == "fp16"),
                                         sparsity=bool(structure.get("two_four"))))


def _check_manifest_domains(model_path: Path, manifest: Manifest | None,
                            config: SessionConfig) -> set[str]:
    """Refuse early when the manifest names custom domains and no custom-op library is registered."""
    needed = set(manifest.custom_op_domains) - BUILTIN_DOMAINS if manifest else set()
    if needed and not config.custom_op_libraries:
        raise CustomOpError(_domain_message(needed) + "no custom-op library is registered; pass "
                            "the library that provides them in SessionConfig.custom_op_libraries",
                            path=model_path, field="custom_op_domains")
    return needed


def _with_project_library(model_path: Path, manifest: Manifest | None, config: SessionConfig) -> SessionConfig:
    """Add the project's sparse-kernel library when the manifest needs the ai.smp domain;
    CustomOpError naming the domain when that library is not built."""
    if manifest is None or SPARSE_DOMAIN not in manifest.custom_op_domains:
        return config
    if any(Path(lib).name == LIBRARY_NAME for lib in config.custom_op_libraries):
        return config
    try:
        library = custom_op_library_path()
    except KernelLibraryError as exc:
        raise CustomOpError(_domain_message({SPARSE_DOMAIN}) + f"its library is missing: {exc}",
                            path=model_path, field="custom_op_domains") from exc
    return replace(config, custom_op_libraries=(*config.custom_op_libraries, str(library)))


def required_custom_op_libraries(export_dir: str | Path, libraries: Sequence[str] = ()) -> tuple[str, ...]:
    """The custom-op libraries a session of ``export_dir`` needs: ``libraries`` plus the
    project's sparse-kernel library when the manifest lists the ``ai.smp`` domain."""
    directory = Path(export_dir)
    manifest = Manifest.read(directory) if (directory / MANIFEST_NAME).is_file() else None
    config = SessionConfig(custom_op_libraries=tuple(libraries))
    return _with_project_library(directory / "model.onnx", manifest, config).custom_op_libraries


def _domain_message(domains: set[str]) -> str:
    return f"the model uses custom operator domain(s) {', '.join(sorted(domains))} but "


def _read_id2label(directory: Path) -> dict[int, str]:
    path = directory / CONFIG_FILE
    config = read_json_object(path, SessionError)
    try:
        return {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    except (ValueError, AttributeError) as exc:
        raise SessionError(f"cannot read id2label: {exc}", path=path, field="id2label") from exc


class ModelSession:
    """An exported model ready to run: ``run`` on arrays; ``logits``/``predict``/``embed`` on text."""

    def __init__(self, directory: Path, session: Any, *, manifest: Manifest | None,
                 tokenizer: Tokenizer | None, id2label: dict[int, str], config: SessionConfig,
                 load_seconds: float):
        self.directory = directory
        self.session = session
        self.config = config
        self.tokenizer = tokenizer
        self.id2label = id2label
        self.load_seconds = load_seconds
        self._manifest = manifest
        self._inputs = {i.name: i for i in session.get_inputs()}

    @classmethod
    def load(cls, export_dir: str | Path, config: SessionConfig = SessionConfig()) -> "ModelSession":
        """Load ``export_dir``; ``load_seconds`` times the whole load (session creation dominates)."""
        start = time.perf_counter()
        directory = Path(export_dir)
        if not directory.is_dir():
            raise SessionError("export directory not found", path=directory)
        model_path = directory / MODEL_FILE
        if not model_path.is_file():
            raise SessionError(f"{MODEL_FILE} not found in the export directory", path=model_path)
        manifest = Manifest.read(directory) if (directory / MANIFEST_NAME).is_file() else None
        providers = _providers(directory, manifest, config)
        ort = import_onnxruntime()
        config = _with_project_library(model_path, manifest, config)
        needed = _check_manifest_domains(model_path, manifest, config)
        opts = _session_options(ort, config)
        try:
            session = ort.InferenceSession(str(model_path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime's pybind errors derive from Exception directly
            raise _load_error(model_path, exc, needed, bool(config.custom_op_libraries)) from exc
        check_used_providers(session.get_providers(), config, model_path)
        tokenizer = None
        if has_tokenizer(directory):
            tokenizer = Tokenizer.from_dir(directory)
        loaded = cls(directory, session, manifest=manifest, tokenizer=tokenizer,
                     id2label=_read_id2label(directory), config=config,
                     load_seconds=time.perf_counter() - start)
        if manifest and manifest.input_names != loaded.input_names:
            log.warning("%s: manifest inputs %s differ from the model's %s", directory,
                        manifest.input_names, loaded.input_names)
        log.info("loaded %s in %.3fs on %s", model_path, loaded.load_seconds, loaded.providers)
        return loaded

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        """The providers the session actually uses."""
        return list(self.session.get_providers())

    @property
    def manifest(self) -> Manifest | None:
        return self._manifest

    def _model_inputs(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's inputs from ``feeds`` (others, e.g. token_type_ids, dropped; int64 cast)."""
        missing = [name for name in self._inputs if name not in feeds]
        if missing:
            raise SessionError(f"missing model input(s): {', '.join(missing)} "
                               f"(given: {', '.join(feeds) or 'none'})", path=self.directory)
        inputs = {}
        for name, meta in self._inputs.items():
            arr = np.asarray(feeds[name])
            if meta.type == "tensor(int64)" and arr.dtype != np.int64:
                arr = arr.astype(np.int64)
            inputs[name] = arr
        return inputs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on arrays; inputs the model does not declare (e.g. token_type_ids) are dropped."""
        outputs = self.session.run(None, self._model_inputs(feeds))
        return dict(zip(self.output_names, outputs))

    def bind(self, feeds: dict[str, np.ndarray]) -> BoundRun:
        """``feeds`` bound to the session's device (``runtime.binding``): runs without host copies."""
        return BoundRun(self.session, self._model_inputs(feeds), self.output_names)

    def encode(self, texts: Texts, max_length: int = 128) -> dict[str, np.ndarray]:
        """Tokenize with the export's tokenizer."""
        if self.tokenizer is None:
            raise TokenizerError("no tokenizer.json or vocab.txt in the export directory",
                                 path=self.directory)
        return self.tokenizer.encode(texts, max_length=max_length)

    def _batches(self, texts: Texts, batch_size: int | None) -> list[Sequence[Any]]:
        items = list(texts)
        size = batch_size or max(len(items), 1)
        return [items[i:i + size] for i in range(0, len(items), size)]

    def logits(self, texts: Texts, max_length: int = 128,
               batch_size: int | None = None) -> np.ndarray:
        """Logits [n, num_labels] (the ``logits`` output, else the first output)."""
        name = LOGITS if LOGITS in self.output_names else self.output_names[0]
        chunks = [self.run(self.encode(b, max_length))[name] for b in self._batches(texts, batch_size)]
        out = np.concatenate(chunks, axis=0)
        if out.ndim != 2:
            raise SessionError(f"output {name!r} has shape {list(out.shape)}, not [batch, labels]; "
                               "is this an encoder without a head?", path=self.directory)
        return out

    def predict(self, texts: Texts, max_length: int = 128,
                batch_size: int | None = None) -> list[str]:
        """Argmax labels through config.json's id2label (``LABEL_i`` where it has none)."""
        ids = self.logits(texts, max_length, batch_size).argmax(axis=-1)
        return [self.id2label.get(int(i), f"LABEL_{int(i)}") for i in ids]

    def embed(self, texts: Texts, normalize: bool = True, max_length: int = 128,
              batch_size: int | None = None) -> np.ndarray:
        """Mean of last_hidden_state over real tokens, L2-normalised (sentence-transformers style)."""
        name = HIDDEN if HIDDEN in self.output_names else None
        if name is None:
            raise SessionError(f"no last_hidden_state output (outputs: {', '.join(self.output_names)})",
                               path=self.directory)
        chunks = []
        for batch in self._batches(texts, batch_size):
            feeds = self.encode(batch, max_length)
            hidden = self.run(feeds)[name].astype(np.float32)
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            chunks.append((hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None))
        out = np.concatenate(chunks, axis=0)
        if normalize:
            out = out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
        return out


def _load_error(model_path: Path, exc: Exception, needed: set[str],
                has_libraries: bool) -> SessionError:
    """Translate an onnxruntime load failure, naming the operator domain when that is the cause.

    The model is parsed with onnx only here, on failure, so a successful load never holds
    the graph twice in memory.
    """
    message = str(exc)
    unknown = set(needed) | ((model_domains(model_path) or set()) - BUILTIN_DOMAINS)
    match = _ORT_DOMAIN_RE.search(message)
    named = {match.group(1) or match.group(2)} if match else set()
    named |= {d for d in unknown if f"{d}:" in message or f"'{d}'" in message}
    culprits = named or (unknown if not has_libraries else set())
    if culprits:
        return CustomOpError(_domain_message(culprits) + "no registered custom-op library provides "
                             f"them (SessionConfig.custom_op_libraries); onnxruntime: {message}",
                             path=model_path)
    return SessionError(f"onnxruntime cannot load the model: {message}", path=model_path)
