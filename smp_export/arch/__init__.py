"""The encoder architectures the exporter knows, one entry each (``base.Architecture``).

``BERT`` (also MiniLM, masked_bert / SMP checkpoints) and ``DISTILBERT``. A new family (e.g.
RoBERTa) is a new entry here plus what its graph needs that no entry has yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import (BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel, DistilBertConfig,
                          DistilBertForSequenceClassification, DistilBertModel)

from ..errors import CheckpointError
from .base import Architecture, EncoderDims

__all__ = ["ARCHITECTURES", "BERT", "DISTILBERT", "Architecture", "EncoderDims", "architecture_of", "get_architecture"]

BERT = Architecture(
    name="bert", config_class=BertConfig, model_prefix="bert.",
    config_fields={"layers": "num_hidden_layers", "hidden": "hidden_size", "heads": "num_attention_heads",
                   "intermediate": "intermediate_size", "vocab_size": "vocab_size",
                   "type_vocab_size": "type_vocab_size", "max_positions": "max_position_embeddings",
                   "layer_norm_eps": "layer_norm_eps", "activation": "hidden_act"},
    classes={"none": BertModel, "sequence-classification": BertForSequenceClassification,
             "smp-label-words": BertForMaskedLM},
    base_kwargs={"add_pooling_layer": False},
)

_DISTIL_LAYER = "transformer.layer.{i}."
_BERT_LAYER = "encoder.layer.{i}."
DISTILBERT = Architecture(
    name="distilbert", config_class=DistilBertConfig, model_prefix="distilbert.",
    config_fields={"layers": "n_layers", "hidden": "dim", "heads": "n_heads", "intermediate": "hidden_dim",
                   "vocab_size": "vocab_size", "max_positions": "max_position_embeddings",
                   "activation": "activation"},
    fixed={"type_vocab_size": 0, "layer_norm_eps": 1e-12},      # DistilBERT's LayerNorms are eps 1e-12
    classes={"none": DistilBertModel, "sequence-classification": DistilBertForSequenceClassification},
    renames=tuple((_DISTIL_LAYER + own, _BERT_LAYER + canonical) for own, canonical in (
        ("attention.q_lin.", "attention.self.query."), ("attention.k_lin.", "attention.self.key."),
        ("attention.v_lin.", "attention.self.value."), ("attention.out_lin.", "attention.output.dense."),
        ("sa_layer_norm.", "attention.output.LayerNorm."), ("ffn.lin1.", "intermediate.dense."),
        ("ffn.lin2.", "output.dense."), ("output_layer_norm.", "output.LayerNorm."),
    )) + (("pre_classifier.", "pooler.dense."),),
    token_types=False, pooler_activation="Relu",
)

ARCHITECTURES: dict[str, Architecture] = {arch.name: arch for arch in (BERT, DISTILBERT)}
# config.json model types read as one of the entries (SMP / movement pruning save masked_bert).
_ALIASES = {"masked_bert": "bert"}


def get_architecture(model_type: str, *, path: Path | None = None) -> Architecture:
    """The entry for a config.json ``model_type``; CheckpointError naming the field if unknown."""
    name = _ALIASES.get(model_type, model_type)
    if name not in ARCHITECTURES:
        raise CheckpointError(f"unsupported model_type {model_type!r}; supported: "
                              f"{', '.join([*ARCHITECTURES, *_ALIASES])}", path=path, field="model_type")
    return ARCHITECTURES[name]


def architecture_of(cfg: Mapping[str, Any], *, path: Path | None = None) -> Architecture:
    """The entry for a parsed config.json (``model_type`` missing: BERT, as transformers' own default)."""
    return get_architecture(str(cfg.get("model_type") or "bert"), path=path)
