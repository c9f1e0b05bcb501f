"""What one smp-bench run is asked to do (``BenchConfig``, made of option groups), and where its
checkpoints come from (``CheckpointSource``, ``checkpoint_from_manifest``).

Every field of a group is one ``smp-bench`` option: the field name is the click parameter name,
and a range error names the option (``BenchmarkError(..., field="--batch")``).
``BenchConfig.from_flat(batch=2, data="none", ...)`` sorts flat keyword arguments into the groups
(the CLI builds its config this way).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from runtime.errors import SmpError
from runtime.manifest import MANIFEST_NAME, Manifest
from runtime.providers import DEVICES

from .errors import BenchmarkError

if TYPE_CHECKING:
    from smp_export.checkpoint import PrunedCheckpoint

BACKENDS: tuple[str, ...] = ("ort", "torch", "all")
ORT_DENSE, TORCH_DENSE = "ort-dense", "torch-eager-dense"
DEFAULT_TAG = "minilm"
BBC = "bbc"


def _weights_variants() -> tuple[str, ...]:
    from smp_export.variants import WEIGHTS_VARIANTS  # lazily: keeps ``smp-bench --help`` light

    return tuple(WEIGHTS_VARIANTS)


def _precisions() -> tuple[str, ...]:
    from smp_export.options import PRECISIONS  # lazily, as above

    return tuple(PRECISIONS)


def _check(checks: Iterable[tuple[bool, str, str]]) -> None:
    """Raise for the first failed ``(ok, option, message)``."""
    for ok, option, message in checks:
        if not ok:
            raise BenchmarkError(message, field=option)


def _normalize(obj: Any, name: str, convert: Callable[[Any], Any]) -> None:
    """Set a field of a frozen dataclass to ``convert(value)`` (e.g. a list given for a tuple)."""
    object.__setattr__(obj, name, convert(getattr(obj, name)))


# ---------------------------------------------------------------------------- the option groups

@dataclass(frozen=True, kw_only=True)
class TimingOptions:
    """How each variant is timed: the batch shape, the runs, the threads."""

    batch: int = 32
    seq_len: int = 128
    runs: int = 20
    warmup: int = 3
    threads: int | None = None                # intra-op threads of onnxruntime and torch; None: defaults
    spin: bool = False                        # onnxruntime threads spin between runs (off: interleaved
                                              # sessions would spin against each other's runs)

    def __post_init__(self) -> None:
        _check([
            (self.batch >= 1, "--batch", f"must be >= 1, got {self.batch}"),
            (self.seq_len >= 2, "--seq-len", f"must be >= 2, got {self.seq_len}"),
            (self.runs >= 1, "--runs", f"must be >= 1, got {self.runs}"),
            (self.warmup >= 0, "--warmup", f"must be >= 0, got {self.warmup}"),
            (self.threads is None or self.threads >= 1, "--threads", f"must be >= 1, got {self.threads}"),
        ])


@dataclass(frozen=True, kw_only=True)
class BackendOptions:
    """What runs the variants: the device, onnxruntime and / or torch, custom-op libraries."""

    device: str = "cpu"                       # cpu | cuda
    backend: str = "ort"                      # ort | torch | all
    torch_eager: bool = True                  # include torch-eager-dense with --backend ort
    custom_op_libraries: tuple[str, ...] = ()
    io_binding: bool | None = None            # onnxruntime: inputs / outputs bound on the device; None: on cuda
    tensorrt: bool = False                    # cuda: TensorRT in front of CUDA (engine cache per export)

    def __post_init__(self) -> None:
        _normalize(self, "custom_op_libraries", lambda libs: tuple(str(p) for p in libs))
        _check([
            (self.backend in BACKENDS, "--backend", f"{self.backend!r} is not one of {', '.join(BACKENDS)}"),
            (self.device in DEVICES, "--device", f"{self.device!r} is not cpu or cuda"),
            (not self.tensorrt or self.device == "cuda", "--tensorrt", "TensorRT needs --device cuda"),
        ])

    @property
    def binds(self) -> bool:
        """Whether onnxruntime variants are timed through I/O binding (default: on a GPU)."""
        return self.device == "cuda" if self.io_binding is None else self.io_binding


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """What is measured: the EXPORT_DIRs and / or the default model pruned to ``sparsity`` (or each
    ``sweep`` level), and where its masks and exports are built or reused."""

    export_dirs: tuple[Path, ...] = ()
    sparsity: float = 0.9                     # default model, no sweep
    sweep: tuple[float, ...] = ()             # magnitude sparsity levels of the default model
    variants: tuple[str, ...] | None = None   # export variants to build; None: all of WEIGHTS_VARIANTS
    precisions: tuple[str, ...] = ("fp32",)   # each variant built in each it supports (int8: dense, compact)
    model_dir: Path | None = None             # dense base for default / sweep; None: packaged MiniLM
    baseline_dir: Path | None = None          # dense ONNX export to use as ort-dense
    cache_dir: Path = Path("build/bench-cache")
    rebuild: bool = False                     # ignore cached exports

    def __post_init__(self) -> None:
        _normalize(self, "export_dirs", lambda dirs: tuple(Path(d) for d in dirs))
        _normalize(self, "sweep", lambda levels: tuple(float(s) for s in levels))
        if self.variants is not None:
            _normalize(self, "variants", tuple)
        _normalize(self, "precisions", tuple)
        _check([
            (0.0 < self.sparsity < 1.0, "--sparsity", f"must be in (0, 1), got {self.sparsity}"),
            (all(0.0 < s < 1.0 for s in self.sweep), "--sweep", f"levels must be in (0, 1), got {self.sweep}"),
        ])
        if self.variants is not None:
            known = _weights_variants()
            unknown = [v for v in self.variants if v not in known]
            if unknown or not self.variants:
                raise BenchmarkError(f"unknown variant(s) {', '.join(unknown) or '(none given)'}; choose from "
                                     f"{', '.join(known)}", field="--variants")
        if self.precisions != ("fp32",):
            known = _precisions()
            unknown = [p for p in self.precisions if p not in known]
            if unknown or not self.precisions:
                raise BenchmarkError(f"unknown precision(s) {', '.join(unknown) or '(none given)'}; choose from "
                                     f"{', '.join(known)}", field="--precisions")


@dataclass(frozen=True, kw_only=True)
class DataOptions:
    """The evaluation data: BBC News, a user table, or none; how much of it, and the seed."""

    data: str = BBC                           # bbc | none | path to .csv/.tsv/.jsonl
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    eval_samples: int = 256                   # 0: no accuracy
    centroid_samples: int = 256               # train texts for the nearest-centroid classifier
    seed: int = 13

    def __post_init__(self) -> None:
        _check([
            (self.eval_samples >= 0, "--eval-samples", f"must be >= 0, got {self.eval_samples}"),
            (self.centroid_samples >= 0, "--centroid-samples", f"must be >= 0, got {self.centroid_samples}"),
        ])


@dataclass(frozen=True, kw_only=True)
class OutputOptions:
    """What is measured besides timing and accuracy (memory, profile), and what is written where."""

    output_dir: Path = Path("bench-results")
    memory: bool = True                       # isolated-process peak RSS per variant
    profile: bool = False
    profile_runs: int = 3
    plot: bool = True
    progress: bool = True
    command: str = ""                         # the command line, recorded in the results

    def __post_init__(self) -> None:
        _check([(self.profile_runs >= 1, "--profile-runs", f"must be >= 1, got {self.profile_runs}")])


#: The groups of ``BenchConfig``, by attribute name.
GROUPS: dict[str, type] = {"timing": TimingOptions, "backends": BackendOptions, "model": ModelOptions,
                           "data": DataOptions, "output": OutputOptions}


def group_fields(group: type) -> frozenset[str]:
    """The field (= option) names of one group."""
    return frozenset(f.name for f in dataclasses.fields(group))


def _json_able(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_able(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_json_able(v) for v in value]
    return str(value) if isinstance(value, Path) else value


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """Everything one smp-bench run needs, by group (``config.timing.batch``, ``config.data.seed``);
    the CLI fills it from its options with ``from_flat``."""

    timing: TimingOptions = dataclasses.field(default_factory=TimingOptions)
    backends: BackendOptions = dataclasses.field(default_factory=BackendOptions)
    model: ModelOptions = dataclasses.field(default_factory=ModelOptions)
    data: DataOptions = dataclasses.field(default_factory=DataOptions)
    output: OutputOptions = dataclasses.field(default_factory=OutputOptions)

    @classmethod
    def from_flat(cls, **options: Any) -> BenchConfig:
        """A config from flat option names (``batch=2, data="none"``), each given to its group;
        an unknown name is a TypeError, as for any constructor."""
        unknown = set(options).difference(*map(group_fields, GROUPS.values()))
        if unknown:
            raise TypeError(f"BenchConfig has no option(s) {', '.join(sorted(unknown))}")
        return cls(**{name: group(**{k: v for k, v in options.items() if k in group_fields(group)})
                      for name, group in GROUPS.items()})

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The config by group, JSON-able (paths as strings, tuples as lists)."""
        return _json_able(dataclasses.asdict(self))

    @property
    def uses_ort(self) -> bool:
        """onnxruntime variants are measured (``--backend ort|all``)."""
        return self.backends.backend in ("ort", "all")

    @property
    def uses_torch_csr(self) -> bool:
        """torch.sparse CSR variants are measured (``--backend torch|all``)."""
        return self.backends.backend in ("torch", "all")

    @property
    def uses_torch_eager(self) -> bool:
        """``torch-eager-dense`` is measured (``--backend torch``, or ``--torch-eager``)."""
        return self.backends.backend == "torch" or self.backends.torch_eager

    def export_variants(self) -> tuple[str, ...]:
        """The export variants the default model / sweep is built as: those asked for, else every
        one that runs on ``--device`` (the kernel variants run on the CPU only)."""
        if self.model.variants:
            return tuple(self.model.variants)
        from smp_export.variants import VARIANTS

        return tuple(name for name in _weights_variants() if self.backends.device in VARIANTS[name].devices)


# ---------------------------------------------------------------------------- checkpoint sources

@dataclass(frozen=True)
class CheckpointSource:
    """How to (re)build a checkpoint, lazily, in this process or in a memory-probe child.

    ``kind``: ``dense`` (``path`` = a dense model directory), ``packed`` (``path`` + ``mask_file``)
    or ``manifest`` (``path`` = an export directory whose manifest names its source).
    ``unpruned``: every mask set to ones (the dense model the pruned one came from).
    """

    kind: str
    path: str
    mask_file: str | None = None
    unpruned: bool = False

    def load(self) -> PrunedCheckpoint:
        """The checkpoint, read (and its masks set to ones when ``unpruned``)."""
        from smp_export.readers import ReadOptions, read_checkpoint

        if self.kind == "dense":
            ckpt = read_checkpoint(self.path, input_format="dense")
        elif self.kind == "packed":
            ckpt = read_checkpoint(self.path, ReadOptions(mask_file=Path(self.mask_file)), input_format="packed")
        elif self.kind == "manifest":
            ckpt = checkpoint_from_manifest(Path(self.path))
        else:
            raise BenchmarkError(f"unknown checkpoint source kind {self.kind!r}", field="kind")
        if self.unpruned:
            import torch

            ckpt = dataclasses.replace(ckpt, masks={n: torch.ones_like(m, dtype=torch.bool)
                                                    for n, m in ckpt.masks.items()})
        return ckpt

    def to_json(self) -> str:
        """The source as JSON (the memory probe's argument; a cache key)."""
        return json.dumps(dataclasses.asdict(self))


class CheckpointCache:
    """Loads each ``CheckpointSource`` once: ``cache(source)`` is its checkpoint."""

    def __init__(self) -> None:
        self._loaded: dict[CheckpointSource, Any] = {}

    def __call__(self, source: CheckpointSource) -> PrunedCheckpoint:
        if source not in self._loaded:
            self._loaded[source] = source.load()
        return self._loaded[source]

    def clear(self) -> None:
        """Forget every loaded checkpoint (frees their memory)."""
        self._loaded.clear()


def _resolve_mask_file(value: str, export_dir: Path) -> Path | None:
    path = Path(value)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, export_dir.parent / path,
                                                    export_dir.parent / path.name, export_dir / path.name]
    return next((c for c in candidates if c.is_file()), None)


def _read_options(manifest: Manifest, export_dir: Path) -> Any:
    """The reader options that rebuild the masks the export was made with."""
    from smp_export.readers import ReadOptions

    md = manifest.metadata or {}
    fmt = manifest.source_format
    mask_file = None
    if fmt == "packed":
        mask_file = _resolve_mask_file(str(md["mask_file"]), export_dir) if md.get("mask_file") else None
        if mask_file is None:
            raise BenchmarkError(f"the packed mask file {md.get('mask_file')!r} is not found",
                                 path=export_dir / MANIFEST_NAME, field="metadata.mask_file")
    head = manifest.head or {}
    # Only SMP's MLM head reads label words (its token ids are exact); other heads' label_words
    # are class names, which a reader would take for MLM words and warn about.
    words = tuple(str(i) for i in head.get("label_token_ids") or ()) if head.get("kind") == "smp-label-words" else ()
    smp = fmt == "smp"
    return ReadOptions(
        keep=md.get("keep") if smp else None,
        smp_s=("keep_ratios" in md) if smp else None,
        smp_s_temperature=md.get("temperature") if smp else None,
        threshold=md.get("threshold") if fmt == "movement" else None,
        mask_file=mask_file, label_words=words or None)


def checkpoint_from_manifest(export_dir: Path) -> PrunedCheckpoint:
    """Rebuild the pruned checkpoint an export came from (its manifest's source, format and options).

    Raises BenchmarkError when the source is gone or the rebuilt masks do not match the export.
    """
    from smp_export.readers import read_checkpoint

    manifest = Manifest.read(export_dir)
    where = export_dir / MANIFEST_NAME
    source = Path(manifest.source_path)
    if not source.is_dir():
        raise BenchmarkError(f"the source checkpoint {source} of this export is not a directory here",
                             path=where, field="source_path")
    options = _read_options(manifest, export_dir)
    try:
        ckpt = read_checkpoint(source, options, input_format=manifest.source_format)
    except SmpError as exc:
        raise BenchmarkError(f"cannot rebuild the source checkpoint: {exc}", path=where,
                             field="source_path") from exc
    want = manifest.totals.get("density")
    if want is not None and abs(ckpt.density() - float(want)) > 1e-6:
        raise BenchmarkError(f"the rebuilt masks have density {ckpt.density():.6f}, the export "
                             f"{float(want):.6f}", path=where, field="totals.density")
    return ckpt
