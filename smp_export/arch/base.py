"""What an encoder architecture is, as the exporter needs to know it: one frozen description.

Everything after the readers works on *canonical* names, BERT's without a prefix
(``encoder.layer.3.attention.self.query.weight``, ``embeddings.word_embeddings.weight``,
``pooler.dense.weight``, ``classifier.weight``). An ``Architecture`` says how its own parameter
names map onto them (``renames``), which config.json fields give the encoder's dimensions
(``config_fields``, read into ``EncoderDims``), what differs in the graph (token types, the
classification head's activation) and which transformers classes the reference model is built
from. A new family is a new ``Architecture`` entry in ``smp_export.arch``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig

from runtime.contract import INPUT_NAMES

from ..errors import CheckpointError
from .limits import DEFAULT_LIMITS, ConfigLimits

# Keys of masked_bert / SMP / smp-train configs that the transformers config classes do not need.
PRUNING_CONFIG_KEYS = ("model_type", "transformers_version", "pruning_method", "mask_init", "mask_scale", "smp",
                       "smp_method", "keep_ratio", "final_keep", "label_words", "label_token_ids")
DIM_NAMES = ("layers", "hidden", "heads", "intermediate", "vocab_size", "type_vocab_size", "max_positions",
             "layer_norm_eps", "activation")
# Dimensions config.json must state itself: a transformers default (12 layers, ...) would build
# a model other than the checkpoint's.
REQUIRED_DIMS = ("vocab_size", "hidden", "layers", "heads", "intermediate")
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
SIZE_NAMES = DIM_NAMES[:7]
# Label fields transformers expands into tables (num_labels -> id2label of that many entries).
LABEL_FIELDS = ("num_labels", "id2label", "label2id")


def _check_size(value: Any, name: str, key: str, path: Path | None, limits: ConfigLimits) -> None:
    """CheckpointError naming ``key`` unless ``value`` is an integer in [least, the limit]."""
    least = 0 if name == "type_vocab_size" else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise CheckpointError(f"must be an integer >= {least}, got {value!r}", path=path, field=key)
    if value > getattr(limits, name):
        raise CheckpointError(f"{value} exceeds the limit {getattr(limits, name)} (raise it with "
                              f"--config-limit {name}=N)", path=path, field=key)


def _check_labels(cfg: Mapping[str, Any], path: Path, limits: ConfigLimits) -> None:
    """num_labels an integer in [1, vocab limit]; id2label / label2id JSON objects no larger."""
    if "num_labels" in cfg:
        value = cfg["num_labels"]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limits.vocab_size:
            raise CheckpointError(f"must be an integer in [1, {limits.vocab_size}], got {value!r}", path=path,
                                  field="num_labels")
    for key in LABEL_FIELDS[1:]:
        if key in cfg and (not isinstance(cfg[key], dict) or len(cfg[key]) > limits.vocab_size):
            raise CheckpointError("must be a JSON object of labels", path=path, field=key)


@dataclass(frozen=True)
class EncoderDims:
    """The encoder's dimensions, read once from its config (``Architecture.dims``)."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab_size: int
    type_vocab_size: int          # 0: the architecture has no token types
    max_positions: int
    layer_norm_eps: float
    activation: str

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def _rule(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(re.escape("{i}"), r"(\d+)"))


@dataclass(frozen=True)
class Architecture:
    """One encoder family.

    ``renames``: (own prefix, canonical prefix) pairs, ``{i}`` standing for the layer index;
    names no rule matches are canonical already. ``model_prefix``: the base model's prefix in
    task models' state dicts (``bert.``). ``config_fields``: config attribute of each
    ``EncoderDims`` field, or a constant (``fixed``). ``classes``: transformers classes by head
    kind for the reference model; ``base_kwargs`` go to the base model's constructor.
    """

    name: str
    config_class: type[PretrainedConfig]
    model_prefix: str
    config_fields: Mapping[str, str]
    classes: Mapping[str, type]
    renames: tuple[tuple[str, str], ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)
    token_types: bool = True
    pooler_activation: str = "Tanh"           # ONNX op between pooler.dense and the classifier
    base_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def heads(self) -> tuple[str, ...]:
        """Head kinds this architecture exports: its transformers classes, plus the prototype head."""
        return (*self.classes, "prototype")

    @property
    def input_names(self) -> tuple[str, ...]:
        """The graph's inputs: the contract's, less ``token_type_ids`` without token types."""
        return tuple(n for n in INPUT_NAMES if self.token_types or n != "token_type_ids")

    def canonical_name(self, name: str) -> str:
        """This architecture's parameter name (with or without ``model_prefix``) -> canonical."""
        name = name.removeprefix(self.model_prefix)
        for own, canonical in self.renames:
            new, found = _rule(own).subn(canonical.replace("{i}", r"\1"), name, count=1)
            if found:
                return new
        return name

    def own_name(self, canonical: str) -> str:
        """Canonical -> this architecture's parameter name (without ``model_prefix``)."""
        for own, canon in self.renames:
            new, found = _rule(canon).subn(own.replace("{i}", r"\1"), canonical, count=1)
            if found:
                return new
        return canonical

    def build_config(self, cfg: Mapping[str, Any], *, path: Path,
                     limits: ConfigLimits = DEFAULT_LIMITS) -> PretrainedConfig:
        """The transformers config of a config.json dict (pruning keys dropped), dimensions
        checked (types, ranges, ``limits``) before transformers sees them."""
        where = Path(path) / "config.json"
        for dim in REQUIRED_DIMS:
            key = self.config_fields[dim]
            if not isinstance(cfg.get(key), int) or isinstance(cfg.get(key), bool):
                raise CheckpointError("required integer field missing or invalid", path=where, field=key)
        for name in SIZE_NAMES:   # before transformers sees them: it may build tables of these sizes
            key = self.config_fields.get(name)
            if key in cfg and name not in self.fixed:
                _check_size(cfg[key], name, key, where, limits)
        _check_labels(cfg, where, limits)
        values = {k: v for k, v in cfg.items() if k not in PRUNING_CONFIG_KEYS}
        try:
            config = self.config_class(**values)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"config.json is not a valid {self.name} config: {exc}", path=where) from exc
        self.dims(config, path=where, limits=limits)
        return config

    def dims(self, config: PretrainedConfig, *, path: Path | None = None,
             limits: ConfigLimits = DEFAULT_LIMITS) -> EncoderDims:
        """``EncoderDims`` of ``config``; CheckpointError naming the config field out of range."""
        values = {name: self.fixed[name] if name in self.fixed else getattr(config, self.config_fields[name], None)
                  for name in DIM_NAMES}
        field_of = {name: self.config_fields.get(name, name) for name in DIM_NAMES}
        for name in SIZE_NAMES:
            _check_size(values[name], name, field_of[name], path, limits)
        if values["hidden"] % values["heads"]:
            raise CheckpointError(f"{values['hidden']} is not a multiple of the {values['heads']} heads",
                                  path=path, field=field_of["hidden"])
        eps = values["layer_norm_eps"]
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not (math.isfinite(eps) and eps > 0):
            raise CheckpointError(f"must be a positive number, got {eps!r}", path=path,
                                  field=field_of["layer_norm_eps"])
        if values["activation"] not in ACTIVATIONS:
            raise CheckpointError(f"unsupported activation {values['activation']!r} ({', '.join(ACTIVATIONS)})",
                                  path=path, field=field_of["activation"])
        return EncoderDims(**{**values, "layer_norm_eps": float(eps)})
