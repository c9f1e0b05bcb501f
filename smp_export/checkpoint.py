"""The one in-memory form every reader produces and every later stage consumes.

Weight names are canonical: Hugging Face ``BertModel`` names without a ``bert.`` prefix, whatever
the architecture (``smp_export.arch`` maps each family's own names onto them)
(``embeddings.word_embeddings.weight``, ``encoder.layer.0.attention.self.query.weight``),
plus the head's own names (``pooler.dense.weight``, ``classifier.weight``,
``cls.predictions.transform.dense.weight``, ``cls.predictions.decoder.weight``,
``cls.predictions.bias``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PretrainedConfig

from runtime.contract import HIDDEN, LOGITS

from .arch import BERT, Architecture, EncoderDims

logger = logging.getLogger(__name__)

# The 6 pruned linears of an encoder block, in the order SMP's papers list them.
MATRIX_TYPES: tuple[str, ...] = (
    "query", "key", "value", "attention_output", "intermediate", "output",
)
_MODULE_OF_TYPE = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
}

HeadKind = Literal["none", "sequence-classification", "smp-label-words", "prototype"]


def linear_module(layer: int, matrix_type: str) -> str:
    """Canonical module path of one pruned linear, e.g. ``encoder.layer.3.attention.self.key``."""
    return f"encoder.layer.{layer}.{_MODULE_OF_TYPE[matrix_type]}"


def linear_weight_names(num_layers: int) -> list[str]:
    """Weight names of every pruned linear, layer by layer, in ``MATRIX_TYPES`` order."""
    return [f"{linear_module(i, t)}.weight" for i in range(num_layers) for t in MATRIX_TYPES]


def parse_linear_name(name: str) -> tuple[int, str]:
    """``encoder.layer.3.attention.self.key.weight`` -> ``(3, "key")``; ValueError otherwise."""
    parts = name.split(".")
    if len(parts) < 4 or parts[0] != "encoder" or parts[1] != "layer":
        raise ValueError(f"not an encoder linear: {name}")
    layer = int(parts[2])
    module = ".".join(parts[3:]).removesuffix(".weight")
    for matrix_type, suffix in _MODULE_OF_TYPE.items():
        if module == suffix:
            return layer, matrix_type
    raise ValueError(f"not an encoder linear: {name}")


@dataclass(frozen=True)
class HeadSpec:
    """What sits on top of the encoder.

    - ``none``: the encoder alone; the output is ``last_hidden_state``.
    - ``sequence-classification``: BERT pooler + linear classifier; output ``logits``.
    - ``smp-label-words``: SMP's frozen MLM head applied to [CLS], logits gathered at the
      label words' token ids (``label_token_ids``); output ``logits``.
    - ``prototype``: smp-train's frozen prototype head: ``logits = unit(mean_pool(X)) @ W^T``
      with ``W = prototype.weight`` (scale * unit class embeddings), ``unit(x) =
      x / max(||x||, 1e-12)``, mean over real tokens (count clamped at 1e-9); output
      ``logits``. ``label_words`` holds the class names.
    """

    kind: HeadKind = "none"
    label_token_ids: tuple[int, ...] = ()
    label_words: tuple[str, ...] = ()

    @property
    def output_name(self) -> str:
        return HIDDEN if self.kind == "none" else LOGITS


@dataclass
class PrunedCheckpoint:
    """Dense weights, boolean masks of the pruned linears, and what produced them.

    ``weights`` hold float tensors under canonical names (``arch`` maps them to its own). Any
    non-binary scaling a method applies (e.g. movement pruning's ``l0`` soft mask) is already
    folded into the weight; ``masks`` are boolean and the masked model uses ``weight * mask``.
    """

    config: PretrainedConfig
    weights: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    source_format: str
    method: str
    source_path: Path
    head: HeadSpec = field(default_factory=HeadSpec)
    tokenizer_dir: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    arch: Architecture = BERT

    @property
    def dims(self) -> EncoderDims:
        """The encoder's dimensions from ``config`` (``Architecture.dims``)."""
        return self.arch.dims(self.config)

    def masked_weights(self) -> dict[str, torch.Tensor]:
        """Weights with every mask applied (pruned entries exactly zero)."""
        out = dict(self.weights)
        for name, mask in self.masks.items():
            out[name] = self.weights[name] * mask.to(self.weights[name].dtype)
        return out

    def density(self) -> float:
        """Fraction of kept weights over all pruned linears."""
        kept = sum(int(m.sum()) for m in self.masks.values())
        total = sum(m.numel() for m in self.masks.values())
        return kept / total if total else 1.0
