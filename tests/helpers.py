"""Tiny random BERT checkpoints for the tests (no downloads, built in memory)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel

from smp_export.checkpoint import HeadSpec, PrunedCheckpoint, linear_weight_names
from smp_export.masks import topk_mask

VOCAB = 120


def tiny_config(**overrides) -> BertConfig:
    """A 2-layer, hidden-32, 4-head BERT: big enough to have every structure, fast to run."""
    values = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
                  hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=0)
    values.update(overrides)
    return BertConfig(**values)


def tiny_weights(config: BertConfig, head: str = "none", seed: int = 0) -> dict[str, torch.Tensor]:
    """Canonical weights (no ``bert.`` prefix) of a randomly initialised tiny model."""
    torch.manual_seed(seed)
    if head == "none":
        model = BertModel(config, add_pooling_layer=False)
    elif head == "sequence-classification":
        model = BertForSequenceClassification(config)
    elif head == "smp-label-words":
        model = BertForMaskedLM(config)
    else:
        raise ValueError(head)
    out = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("position_ids") or name.endswith("token_type_ids"):
            continue
        out[name.removeprefix("bert.")] = tensor.detach().clone()
    # Random biases (HF initialises them to zero), so bias folding is really exercised.
    for name, tensor in out.items():
        if name.endswith(".bias"):
            out[name] = torch.randn_like(tensor) * 0.1
    return out


def random_masks(config: BertConfig, weights: dict[str, torch.Tensor], keep: float,
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-matrix random TopK masks at ``keep``."""
    gen = torch.Generator().manual_seed(seed)
    return {name: topk_mask(torch.rand(weights[name].shape, generator=gen), keep)
            for name in linear_weight_names(config.num_hidden_layers)}


def tiny_checkpoint(*, head: str = "none", keep: float = 0.3, seed: int = 0,
                    label_token_ids: tuple[int, ...] = (5, 7, 11), **config_overrides) -> PrunedCheckpoint:
    """A complete random ``PrunedCheckpoint`` of the tiny model."""
    config = tiny_config(**config_overrides)
    if head == "sequence-classification":
        config.num_labels = 3
    weights = tiny_weights(config, head, seed)
    spec = HeadSpec(kind=head, label_token_ids=label_token_ids if head == "smp-label-words" else ())
    return PrunedCheckpoint(config=config, weights=weights, masks=random_masks(config, weights, keep, seed),
                            source_format="test", method="random-topk", source_path=Path("tiny"), head=spec)
