"""Load the base checkpoint, attach mask scores, build the head: a ready ``SmpModel``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import BertForMaskedLM, BertModel, BertTokenizerFast
from transformers.utils import logging as hf_logging

from smp_export.errors import SmpExportError
from smp_export.masks import magnitude_mask
from smp_export.structure import magnitude_scores, structured_masks
from smp_export.readers.heads import resolve_label_token_ids

from .config import TrainConfig
from .errors import HeadError, TrainConfigError
from .heads import LabelWordHead, LinearHead, PrototypeHead, mean_pool
from .modeling import SmpModel, checkpoint_has_mlm_head

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadInfo:
    """What the head is, as recorded in the checkpoint config."""

    kind: str                          # prototype | label-words | linear
    classes: tuple[str, ...]
    label_words: tuple[str, ...] = ()  # prototype texts or MLM words, one per class
    label_token_ids: tuple[int, ...] = ()
    scale: float | None = None
    trained: bool = False

    def as_config(self) -> dict:
        out = {"head": self.kind, "head_trained": self.trained, "classes": list(self.classes),
               "label_words": list(self.label_words)}
        if self.label_token_ids:
            out["label_token_ids"] = list(self.label_token_ids)
        if self.kind == "prototype":
            out.update(prototype_scale=self.scale, pooling="mean")
        return out


def load_tokenizer(model_dir: Path) -> BertTokenizerFast:
    """The WordPiece tokenizer of ``model_dir``; TrainConfigError if it has none."""
    try:
        return BertTokenizerFast.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise TrainConfigError(f"cannot load the tokenizer: {exc}", path=model_dir, field="model_dir") from exc


def _dropout_kwargs(dropout: float | None) -> dict:
    if dropout is None:
        return {}
    return {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}


def _resolve_head_kind(choice: str, has_mlm: bool) -> str:
    if choice == "auto":
        return "label-words" if has_mlm else "prototype"
    if choice == "label-words" and not has_mlm:
        raise HeadError("the label-words head needs an MLM head (cls.predictions.*) in the checkpoint; this "
                        "encoder has none: use --head prototype (or linear)", field="head")
    return choice


def _label_items(config: TrainConfig, classes: Sequence[str], *, template: bool) -> tuple[str, ...]:
    words = tuple(config.head.label_words)
    if words and len(words) != len(classes):
        raise HeadError(f"{len(words)} label words for {len(classes)} classes ({', '.join(classes)}); give "
                        "one per class, in class order", field="label_words")
    if words:
        return words
    return tuple(config.head.template.format(label=c) if template else c for c in classes)


@torch.no_grad()
def embed_texts(bert: BertModel, tokenizer, texts: Sequence[str], max_seq_len: int) -> torch.Tensor:
    """Mean-pooled embeddings of ``texts`` by ``bert`` as it is (eval mode, no masks)."""
    was_training = bert.training
    bert.eval()
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_seq_len, return_tensors="pt")
    device = next(bert.parameters()).device
    enc = {k: v.to(device) for k, v in enc.items()}
    hidden = bert(**enc).last_hidden_state
    bert.train(was_training)
    return mean_pool(hidden, enc["attention_mask"])


def _load_bert(model_dir: Path, kind: str, dropout: float | None):
    """(BertModel, MLM head or None) from ``model_dir``, quietly (unused-weight notices off)."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        kwargs = _dropout_kwargs(dropout)
        if kind == "label-words":
            mlm = BertForMaskedLM.from_pretrained(str(model_dir), attn_implementation="sdpa", **kwargs)
            return mlm.bert, mlm.cls
        bert = BertModel.from_pretrained(str(model_dir), add_pooling_layer=kind == "linear",
                                         attn_implementation="sdpa", **kwargs)
        return bert, None
    except (OSError, ValueError) as exc:
        raise TrainConfigError(f"cannot load the model: {exc}", path=model_dir, field="model_dir") from exc
    finally:
        hf_logging.set_verbosity(verbosity)


def build_model(config: TrainConfig, classes: Sequence[str]) -> tuple[SmpModel, BertTokenizerFast, HeadInfo]:
    """The SMP model of ``config`` for ``classes``, its tokenizer and its head record."""
    model_dir = Path(config.model_dir)
    if not (model_dir / "config.json").is_file():
        raise TrainConfigError("no config.json: not a model directory", path=model_dir, field="model_dir")
    tokenizer = load_tokenizer(model_dir)
    kind = _resolve_head_kind(config.head.kind, checkpoint_has_mlm_head(model_dir))
    bert, cls = _load_bert(model_dir, kind, config.dropout)
    if kind == "prototype":
        texts = _label_items(config, classes, template=True)
        prototypes = embed_texts(bert, tokenizer, texts, config.data.max_seq_len)
        head = PrototypeHead(prototypes, config.head.scale)
        info = HeadInfo(kind=kind, classes=tuple(classes), label_words=texts, scale=config.head.scale)
    elif kind == "label-words":
        words = _label_items(config, classes, template=False)
        try:
            ids, _ = resolve_label_token_ids(words, model_dir, bert.config.vocab_size, path=model_dir)
        except SmpExportError as exc:
            raise HeadError(str(exc), path=model_dir, field="label_words") from exc
        head = LabelWordHead(cls, ids)
        info = HeadInfo(kind=kind, classes=tuple(classes), label_words=words, label_token_ids=ids)
    else:
        pooler = bert.pooler
        bert.pooler = None
        dropout = config.dropout if config.dropout is not None else bert.config.hidden_dropout_prob
        head = LinearHead(pooler, len(classes), dropout, seed=config.seed)
        info = HeadInfo(kind=kind, classes=tuple(classes), trained=True)
    g = config.pruning.structure
    model = SmpModel(bert, head, method=config.pruning.method, temperature=config.pruning.temperature,
                     score_init=config.pruning.score_init, score_init_mode=config.pruning.score_init_mode,
                     granularity=g, final_keep=config.pruning.keep, head_keep=config.pruning.head_keep,
                     inner_keep=config.pruning.inner_keep)
    if config.pruning.method == "magnitude":
        weights = {n: m.weight for n, m in model.masked_linears().items()}
        if g.unstructured:
            masks = {n: magnitude_mask(w, config.pruning.keep) for n, w in weights.items()}
        else:    # the structured baseline: the units of largest L2 norm, the same share per layer
            masks = structured_masks(g, "smp-l", magnitude_scores(g, weights, model.dims), config.pruning.keep,
                                     model.dims, head_keep=config.pruning.head_keep,
                                     inner_keep=config.pruning.inner_keep)
        model.set_fixed_masks(masks)
    logger.info("model %s: %s, head %s, %d trainable tensors", model_dir, config.pruning.method, kind,
                sum(1 for p in model.parameters() if p.requires_grad))
    return model, tokenizer, info
