"""Classification heads on the encoder's last hidden state.

- ``PrototypeHead`` (frozen): each class is the dense model's mean-pooled, L2-normalised
  embedding of its label text; ``logits = scale * cos(mean_pool(h), prototype)``. The stored
  tensor ``prototype.weight`` is ``scale * unit prototypes`` so export needs nothing else.
- ``LabelWordHead`` (frozen): SMP's MLM head at [CLS], logits at the label words' tokens.
- ``LinearHead`` (trainable classifier on BERT's frozen pooler): the optional trained head.

Each head has ``canonical_state()``: its tensors under the names smp-export reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.bert.modeling_bert import BertOnlyMLMHead, BertPooler

POOL_EPS = 1e-9      # sentence-transformers' clamp of the token count
NORM_EPS = 1e-12     # torch.nn.functional.normalize's default


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states over real tokens: ``sum(h * m) / max(sum(m), 1e-9)``."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=POOL_EPS)


def unit(x: torch.Tensor) -> torch.Tensor:
    """``x / max(||x||, 1e-12)`` along the last axis."""
    return F.normalize(x, p=2.0, dim=-1, eps=NORM_EPS)


class PrototypeHead(nn.Module):
    """Frozen scaled-cosine head: ``unit(mean_pool(h)) @ (scale * unit(prototypes))^T``."""

    kind = "prototype"
    trainable = False

    def __init__(self, prototypes: torch.Tensor, scale: float):
        super().__init__()
        self.scale = float(scale)
        self.register_buffer("weight", unit(prototypes.detach().float()) * self.scale)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return unit(mean_pool(hidden, attention_mask)) @ self.weight.t()

    def canonical_state(self) -> dict[str, torch.Tensor]:
        return {"prototype.weight": self.weight}


class LabelWordHead(nn.Module):
    """Frozen MLM head at [CLS]; logits are the prediction scores of the label words' tokens."""

    kind = "label-words"
    trainable = False

    def __init__(self, cls: BertOnlyMLMHead, label_token_ids: Sequence[int]):
        super().__init__()
        self.cls = cls
        for param in self.cls.parameters():
            param.requires_grad_(False)
        self.register_buffer("label_ids", torch.tensor(list(label_token_ids), dtype=torch.long), persistent=False)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pred = self.cls.predictions
        h = pred.transform(hidden[:, 0])
        weight = pred.decoder.weight.index_select(0, self.label_ids)
        return h @ weight.t() + pred.bias.index_select(0, self.label_ids)

    def canonical_state(self) -> dict[str, torch.Tensor]:
        pred = self.cls.predictions
        state = {f"cls.predictions.transform.{k}": v for k, v in pred.transform.state_dict().items()}
        state["cls.predictions.decoder.weight"] = pred.decoder.weight
        state["cls.predictions.bias"] = pred.bias
        return state


class LinearHead(nn.Module):
    """BERT's pooler (frozen, pretrained) + a trainable linear classifier: reported as trained."""

    kind = "linear"
    trainable = True

    def __init__(self, pooler: BertPooler, num_labels: int, dropout: float, seed: int = 0):
        super().__init__()
        self.pooler = pooler
        for param in self.pooler.parameters():
            param.requires_grad_(False)
        self.dropout = nn.Dropout(dropout)
        hidden = pooler.dense.weight.shape[0]
        self.classifier = nn.Linear(hidden, num_labels)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.classifier.weight.normal_(0.0, 0.02, generator=gen)
            self.classifier.bias.zero_()

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pooler(hidden)))

    def canonical_state(self) -> dict[str, torch.Tensor]:
        return {"pooler.dense.weight": self.pooler.dense.weight, "pooler.dense.bias": self.pooler.dense.bias,
                "classifier.weight": self.classifier.weight, "classifier.bias": self.classifier.bias}
