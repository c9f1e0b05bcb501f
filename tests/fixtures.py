"""Writers of tiny on-disk checkpoints in every input format, for reader round-trip tests.

Each writer builds a small random model (``tests.helpers``), saves it the way its producer
does, and returns a ``Written`` record with what a test needs: canonical weights, scores and
(where the rule is fixed by the writer) the expected masks. The ``ref_*`` functions restate
the official binarizers / SMP-S rule step by step, independently of ``smp_export.masks``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch.nn.utils import prune
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel

from smp_export.checkpoint import MATRIX_TYPES, linear_weight_names, parse_linear_name
from tests.helpers import VOCAB, random_masks, tiny_config, tiny_weights

LABEL_WORDS = ("yes", "no", "great", "terrible")
_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
VOCAB_TOKENS = (*_SPECIAL, *LABEL_WORDS, "good", "bad", "##ness")

Mutator = Callable[[dict[str, torch.Tensor]], None]


@dataclass
class Written:
    """What a writer put on disk (canonical names, no ``bert.`` prefix)."""

    path: Path
    config: BertConfig
    weights: dict[str, torch.Tensor]
    scores: dict[str, torch.Tensor] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    label_token_ids: tuple[int, ...] = ()


# --------------------------------------------------------------------------- reference rules


def ref_topk(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """TopKBinarizer: the ``int(keep * numel)`` largest scores (distinct scores assumed)."""
    order = scores.flatten().argsort(descending=True)
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[order[: int(keep * scores.numel())]] = True
    return mask.view_as(scores)


def ref_threshold(scores: torch.Tensor, threshold: float, sigmoid: bool) -> torch.Tensor:
    """ThresholdBinarizer with its 'at least 0.5% kept' fallback."""
    n = scores.numel()
    nb_min = int(0.005 * n) + 1
    mask = (scores.sigmoid() if sigmoid else scores) > threshold
    if mask.sum() < nb_min:
        kth = scores.flatten().kthvalue(max(n - nb_min, 1)).values
        mask = scores > kth
    return mask


def ref_smp_s_ratios(scores: Mapping[str, torch.Tensor], keep: float, temperature: float = 1.0) -> dict[str, float]:
    """to_mask.py's SMP-S: per layer and type mean of sigmoid(p * S), p = 1 / temperature;
    sums per type over layers; ratio = mean / sum * (keep * L)."""
    layers = sorted({parse_linear_name(n)[0] for n in scores})
    by_layer = {i: {parse_linear_name(n)[1]: n for n in scores if parse_linear_name(n)[0] == i} for i in layers}
    p = 1 / temperature
    means = {i: {t: (p * scores[n]).sigmoid().mean().item() for t, n in by_layer[i].items()} for i in layers}
    sums = {t: sum(means[i][t] for i in layers) for t in MATRIX_TYPES}
    total = keep * len(layers)
    return {by_layer[i][t]: (means[i][t] / sums[t] * total if sums[t] != 0 else 0)
            for i in layers for t in MATRIX_TYPES}


def ref_smp_masks(scores: Mapping[str, torch.Tensor], keep: float, smp_s: bool,
                  temperature: float = 1.0) -> dict[str, torch.Tensor]:
    if smp_s:
        ratios = ref_smp_s_ratios(scores, keep, temperature)
        return {n: ref_topk(s, ratios[n]) for n, s in scores.items()}
    return {n: ref_topk(s, keep) for n, s in scores.items()}


def packed_key(weight_name: str) -> str:
    """The official score name that orders the packed bits."""
    return "bert." + weight_name.removesuffix(".weight") + ".mask_scores"


# --------------------------------------------------------------------------- small helpers


def write_vocab(model_dir: Path) -> dict[str, int]:
    """A WordPiece vocab.txt of ``VOCAB`` tokens; returns token -> id."""
    tokens = list(VOCAB_TOKENS) + [f"tok{i}" for i in range(VOCAB - len(VOCAB_TOKENS))]
    Path(model_dir, "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return {t: i for i, t in enumerate(tokens)}


def _file_name(name: str) -> str:
    return "bert." + name if name.startswith(("embeddings.", "encoder.", "pooler.")) else name


def _scores(names: Sequence[str], weights: Mapping[str, torch.Tensor], seed: int,
            scale: float = 1.0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 1000)
    return {n: torch.randn(weights[n].shape, generator=gen) * scale for n in names}


def _save(model_dir: Path, cfg: dict, state: dict[str, torch.Tensor], safetensors: bool,
          mutate: Mutator | None) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    if mutate is not None:
        mutate(state)
    Path(model_dir, "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    if safetensors:
        save_file({k: v.contiguous() for k, v in state.items()}, str(model_dir / "model.safetensors"))
    else:
        torch.save(state, model_dir / "pytorch_model.bin")


def _randomize_biases(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0.0, 0.1)


def _canonical_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k.removeprefix("bert."): v.detach().clone().float() for k, v in model.state_dict().items()
            if not k.endswith(("position_ids", "token_type_ids"))}


# --------------------------------------------------------------------------- writers


def write_smp_checkpoint(model_dir: Path, *, head: str = "smp-label-words", keep: float | None = None,
                         smp_s: bool = False, temperature: float = 1.0, safetensors: bool = False,
                         own_format: bool = False, label_words: Sequence[str] = (), num_layers: int = 2,
                         seed: int = 0, tokenizer: bool = True, config_extra: dict | None = None,
                         mutate: Mutator | None = None) -> Written:
    """SMP training output (official masked_bert, or smp-train's with an ``smp`` config dict).

    Official SMP chooses SMP-S from a ``mag`` in the directory name, so ``smp_s`` only
    reaches the config in ``own_format``; it always selects the expected masks' rule.
    ``keep`` (if given) is written to the own-format config and gives expected masks.
    """
    model_dir = Path(model_dir)
    config = tiny_config(num_hidden_layers=num_layers)
    if head == "sequence-classification":
        config.num_labels = 3
    weights = tiny_weights(config, head, seed)
    names = linear_weight_names(num_layers)
    scores = _scores(names, weights, seed)
    arch = "MaskedBertForSMP" if head == "smp-label-words" else "MaskedBertForSequenceClassification"
    cfg = {**config.to_dict(), "architectures": [arch]}
    if own_format:
        cfg["smp"] = {"method": "smp-s" if smp_s else "smp-l", "keep": keep, "temperature": temperature,
                      "label_words": list(label_words)}
    else:
        cfg.update(model_type="masked_bert", pruning_method="topK", mask_init="constant", mask_scale=0.0)
    cfg.update(config_extra or {})
    state = {_file_name(n): t for n, t in weights.items()}
    state.update({_file_name(n.removesuffix(".weight")) + ".mask_scores": s for n, s in scores.items()})
    if safetensors:  # save_pretrained drops the tied decoder
        state.pop("cls.predictions.decoder.weight", None)
        state.pop("cls.predictions.decoder.bias", None)
    _save(model_dir, cfg, state, safetensors, mutate)
    vocab = write_vocab(model_dir) if tokenizer else {}
    expected = ref_smp_masks(scores, keep, smp_s, temperature) if keep is not None else {}
    return Written(model_dir, config, weights, scores, expected,
                   tuple(vocab[w] for w in label_words if w in vocab))


def write_movement_checkpoint(model_dir: Path, pruning_method: str, *, num_layers: int = 2, seed: int = 0,
                              head: str = "sequence-classification", score_scale: float = 1.0,
                              mutate: Mutator | None = None) -> Written:
    """emmental masked_bert checkpoint: pytorch_model.bin with ``*.mask_scores`` (none for magnitude)."""
    model_dir = Path(model_dir)
    config = tiny_config(num_hidden_layers=num_layers)
    if head == "sequence-classification":
        config.num_labels = 2
    weights = tiny_weights(config, head, seed)
    scores = {} if pruning_method == "magnitude" else \
        _scores(linear_weight_names(num_layers), weights, seed, score_scale)
    cfg = {**config.to_dict(), "model_type": "masked_bert", "pruning_method": pruning_method,
           "mask_init": "constant", "mask_scale": 0.0, "architectures": ["MaskedBertForSequenceClassification"]}
    state = {_file_name(n): t for n, t in weights.items()}
    state.update({_file_name(n.removesuffix(".weight")) + ".mask_scores": s for n, s in scores.items()})
    _save(model_dir, cfg, state, False, mutate)
    return Written(model_dir, config, weights, scores)


def write_dense_base(model_dir: Path, *, head: str = "none", num_layers: int = 2, seed: int = 0,
                     tokenizer: bool = False, **config_overrides) -> Written:
    """A plain HF BERT directory (``save_pretrained``): BertModel / ForSequenceClassification / ForMaskedLM."""
    model_dir = Path(model_dir)
    config = tiny_config(num_hidden_layers=num_layers, **config_overrides)
    torch.manual_seed(seed)
    if head == "sequence-classification":
        config.num_labels = 3
        model = BertForSequenceClassification(config)
    elif head == "smp-label-words":
        model = BertForMaskedLM(config)
    else:
        model = BertModel(config)
    _randomize_biases(model)
    model.save_pretrained(model_dir)
    if tokenizer:
        write_vocab(model_dir)
    return Written(model_dir, config, _canonical_state(model))


def write_packed_mask(npy_path: Path, masks: Mapping[str, torch.Tensor],
                      names_order: Sequence[str] | None = None) -> int:
    """``np.packbits`` of the masks flattened in ``names_order`` (default: the official sorted
    order of their score names). Returns the number of mask bits."""
    order = list(names_order) if names_order is not None else sorted(masks, key=packed_key)
    bits = torch.cat([masks[n].flatten().bool() for n in order]).numpy()
    np.save(npy_path, np.packbits(bits))
    return int(bits.size)


def write_torch_prune_checkpoint(model_dir: Path, *, amount: float = 0.6, num_layers: int = 2, seed: int = 0,
                                 skip: Sequence[str] = (), prune_pooler: bool = True) -> Written:
    """A BertForSequenceClassification pruned with ``torch.nn.utils.prune.l1_unstructured``
    (encoder linears not in ``skip``, plus the pooler), saved as a raw state dict.

    ``masks`` are the encoder linears' masks (all ones for skipped ones); ``weights`` the
    expected reader weights (``weight_orig`` for linears, ``orig * mask`` for the pooler).
    """
    model_dir = Path(model_dir)
    config = tiny_config(num_hidden_layers=num_layers)
    config.num_labels = 2
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    _randomize_biases(model)
    names = linear_weight_names(num_layers)
    for name in names:
        if name not in skip:
            prune.l1_unstructured(model.bert.get_submodule(name.removesuffix(".weight")), "weight", amount)
    if prune_pooler:
        prune.l1_unstructured(model.bert.pooler.dense, "weight", amount)
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), model_dir / "pytorch_model.bin")
    config.save_pretrained(model_dir)
    weights = {}
    for name, tensor in _canonical_state(model).items():
        if not name.endswith("_mask"):
            weights[name.removesuffix("_orig")] = tensor
    masks = {}
    for name in names:
        module = model.bert.get_submodule(name.removesuffix(".weight"))
        masks[name] = torch.ones_like(weights[name], dtype=torch.bool) if name in skip else module.weight_mask.bool()
    if prune_pooler:
        weights["pooler.dense.weight"] = model.bert.pooler.dense.weight.detach().clone()
    return Written(model_dir, config, weights, masks=masks)


def write_dense_zero_checkpoint(model_dir: Path, *, keep: float = 0.3, head: str = "sequence-classification",
                                num_layers: int = 2, seed: int = 0, safetensors: bool = True) -> Written:
    """``save_pretrained`` of a model whose encoder linears were zeroed by random TopK masks."""
    model_dir = Path(model_dir)
    config = tiny_config(num_hidden_layers=num_layers)
    torch.manual_seed(seed)
    if head == "sequence-classification":
        config.num_labels = 2
        model, base = (m := BertForSequenceClassification(config)), m.bert
    else:
        model = base = BertModel(config)
    _randomize_biases(model)
    masks = random_masks(config, {n: base.get_parameter(n) for n in linear_weight_names(num_layers)}, keep, seed)
    with torch.no_grad():
        for name, mask in masks.items():
            base.get_parameter(name).mul_(mask)
    model.save_pretrained(model_dir, safe_serialization=safetensors)
    return Written(model_dir, config, _canonical_state(model), masks=masks)
