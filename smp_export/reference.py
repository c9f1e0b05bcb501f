"""The masked PyTorch model an export must agree with.

Validation compares the exported ONNX graph against this model, so it is built from the
architecture's transformers classes (eager attention, eval mode) rather than re-implemented.
Its forward takes ``(input_ids, attention_mask, token_type_ids)`` (token types are dropped for
an architecture without them) and returns the one tensor the export outputs:
``last_hidden_state`` (head ``none``) or ``logits``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping

import torch
from torch import nn
from transformers import PretrainedConfig

from .arch import Architecture
from .checkpoint import HeadSpec, PrunedCheckpoint
from .errors import CheckpointError

logger = logging.getLogger(__name__)

# Model parameters that may be filled from another canonical weight (tied in HF).
_FALLBACKS = {
    "cls.predictions.decoder.weight": "embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
    "cls.predictions.bias": "cls.predictions.decoder.bias",
}


class ReferenceModel(nn.Module):
    """``forward(input_ids, attention_mask, token_type_ids)`` -> the export's one output tensor."""

    def __init__(self, model: nn.Module, head: HeadSpec, config: PretrainedConfig, arch: Architecture,
                 prototypes: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.head = head
        self.config = config
        self.arch = arch
        self.register_buffer("label_ids", torch.tensor(head.label_token_ids, dtype=torch.long), persistent=False)
        if head.kind == "prototype":
            if prototypes is None:
                raise CheckpointError("prototype head without prototype.weight", field="prototype.weight")
            self.register_buffer("prototypes", prototypes.detach().float(), persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask)
        if self.arch.token_types:
            kwargs["token_type_ids"] = token_type_ids
        if self.head.kind == "none":
            return self.model(**kwargs).last_hidden_state
        if self.head.kind == "sequence-classification":
            return self.model(**kwargs).logits
        if self.head.kind == "prototype":
            return self._prototype_logits(self.model(**kwargs).last_hidden_state, attention_mask)
        hidden = getattr(self.model, self.arch.model_prefix.rstrip("."))(**kwargs).last_hidden_state
        scores = self.model.cls(hidden[:, :1])          # MLM prediction scores at [CLS]
        return scores[:, 0, :].index_select(-1, self.label_ids)

    def _prototype_logits(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``unit(mean over real tokens) @ prototype.weight^T`` (HeadSpec ``prototype``)."""
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=-1, eps=1e-12) @ self.prototypes.t()


def _hf_model(config: PretrainedConfig, head: HeadSpec, arch: Architecture) -> nn.Module:
    """The untrained transformers model of ``head`` (the base model for none / prototype)."""
    kind = "none" if head.kind == "prototype" else head.kind
    if kind not in arch.classes:
        raise CheckpointError(f"a {arch.name} model has no {head.kind!r} head", field="head.kind")
    if kind == "smp-label-words" and not head.label_token_ids:
        raise CheckpointError("smp-label-words head without label_token_ids", field="label_token_ids")
    kwargs = dict(arch.base_kwargs) if kind == "none" else {}
    return arch.classes[kind]._from_config(config, attn_implementation="eager", **kwargs)


def _state_dict(model: nn.Module, arch: Architecture, weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every parameter ``model`` needs, from canonical ``weights``; CheckpointError naming a missing one."""
    out = {}
    for key, param in model.state_dict().items():
        canonical = arch.canonical_name(key)
        source = canonical
        if canonical == "cls.predictions.decoder.bias" and "cls.predictions.bias" in weights:
            source = "cls.predictions.bias"     # tied pair in HF: the canonical bias wins
        elif source not in weights:
            source = _FALLBACKS.get(canonical, canonical)
        if source not in weights:
            raise CheckpointError("weight needed by the reference model is missing", field=canonical)
        tensor = weights[source].detach().to(torch.float32)
        if tuple(tensor.shape) != tuple(param.shape):
            raise CheckpointError(f"shape {list(tensor.shape)} != expected {list(param.shape)}", field=source)
        out[key] = tensor
    unused = sorted(set(weights) - {arch.canonical_name(k) for k in out} - set(_FALLBACKS.values()))
    if unused:
        logger.debug("reference ignores %d weights: %s", len(unused), ", ".join(unused[:5]))
    return out


def build_reference_model(ckpt: PrunedCheckpoint) -> ReferenceModel:
    """The masked model (``ckpt.masked_weights()``) in transformers classes, eager attention, eval mode."""
    config = copy.deepcopy(ckpt.config)
    config.tie_word_embeddings = False      # the decoder is loaded explicitly (or from the embeddings)
    model = _hf_model(config, ckpt.head, ckpt.arch)
    model.load_state_dict(_state_dict(model, ckpt.arch, ckpt.masked_weights()), strict=True)
    model.eval()
    prototypes = ckpt.weights.get("prototype.weight") if ckpt.head.kind == "prototype" else None
    return ReferenceModel(model, ckpt.head, config, ckpt.arch, prototypes).eval()
