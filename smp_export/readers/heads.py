"""The head on top of the encoder, found from the weight names, and SMP's label words."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import PretrainedConfig

from runtime.contract import TOKENIZER_MODEL_FILES

from ..checkpoint import HeadSpec
from ..errors import CheckpointError, MaskError
from .base import ReadOptions

logger = logging.getLogger(__name__)

def build_head(weights: dict[str, torch.Tensor], config: PretrainedConfig, cfg: Mapping[str, Any],
               options: ReadOptions, *, path: Path, tokenizer: Path | None,
               require_label_words: bool) -> HeadSpec:
    """Find the head from the weight names; fix up ``weights`` / ``config`` to match it.

    ``classifier.weight`` -> sequence classification (``num_labels`` from its shape);
    ``cls.predictions.*`` plus label words (``--label-words`` or config) -> SMP label words;
    otherwise the bare encoder. A missing decoder weight (tied) is the word embedding.
    """
    if "classifier.weight" in weights:
        _set_num_labels(config, weights["classifier.weight"].shape[0])
        if options.label_words:
            logger.warning("checkpoint has a classifier head; ignoring --label-words")
        return HeadSpec(kind="sequence-classification")
    if not any(name.startswith("cls.predictions.") for name in weights):
        if "qa_outputs.weight" in weights:
            logger.warning("question-answering head (qa_outputs) is not supported; exporting the encoder")
        if options.label_words:
            logger.warning("checkpoint has no MLM head; ignoring --label-words")
        return HeadSpec()
    items = list(options.label_words) if options.label_words else _config_label_items(cfg)
    if not items:
        if require_label_words:
            raise CheckpointError("the checkpoint has SMP's MLM head but no label words are known; pass "
                                  "--label-words (words or token ids, one per class)",
                                  path=path, field="--label-words")
        logger.info("MLM head without label words: exporting the bare encoder")
        return HeadSpec()
    _untie_mlm_head(weights, path=path)
    ids, words = resolve_label_token_ids(items, tokenizer, config.vocab_size, path=path)
    return HeadSpec(kind="smp-label-words", label_token_ids=ids, label_words=words)


def _set_num_labels(config: PretrainedConfig, num_labels: int) -> None:
    # The setter keeps config's id2label when it has num_labels entries, else LABEL_i.
    if config.num_labels != num_labels:
        logger.info("num_labels %d from classifier.weight (config.json said %d)", num_labels, config.num_labels)
    config.num_labels = num_labels


def _config_label_items(cfg: Mapping[str, Any]) -> list[str]:
    smp = cfg.get("smp") if isinstance(cfg.get("smp"), dict) else {}
    for source in (smp, cfg):
        for key in ("label_token_ids", "label_words"):
            if source.get(key):
                return [str(item) for item in source[key]]
    return []


def _untie_mlm_head(weights: dict[str, torch.Tensor], *, path: Path) -> None:
    for name in ("cls.predictions.transform.dense.weight", "cls.predictions.transform.LayerNorm.weight",
                 "embeddings.word_embeddings.weight"):
        if name not in weights:
            raise CheckpointError("incomplete MLM head", path=path, field=name)
    if "cls.predictions.decoder.weight" not in weights:
        weights["cls.predictions.decoder.weight"] = weights["embeddings.word_embeddings.weight"]
    decoder_bias = weights.pop("cls.predictions.decoder.bias", None)
    if "cls.predictions.bias" not in weights:
        if decoder_bias is None:
            raise CheckpointError("MLM head has no output bias", path=path, field="cls.predictions.bias")
        weights["cls.predictions.bias"] = decoder_bias


def resolve_label_token_ids(items: Iterable[str | int], tokenizer: Path | None, vocab_size: int, *,
                            path: Path) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Token ids (and readable words) of label words given as ids (``"2748"``) or words.

    A word is tokenised as SMP's run_glue.py does (``encode(" " + word)``, no special
    tokens) and must give exactly one known token.
    """
    tok = None
    ids: list[int] = []
    words: list[str] = []
    for item in items:
        text = str(item).strip()
        if text.isdigit():
            token_id = int(text)
            if tok is None and tokenizer is not None:
                try:  # only for a readable name; ids work without a tokenizer
                    tok = _load_tokenizer(tokenizer)
                except CheckpointError as exc:
                    logger.warning("%s", exc)
                    tokenizer = None
            word = tok.convert_ids_to_tokens(token_id) if tok is not None and token_id < len(tok) else text
        else:
            if tokenizer is None:
                raise CheckpointError(f"label word {text!r} needs a tokenizer, but the model directory has "
                                      f"none ({', '.join(TOKENIZER_MODEL_FILES)}); give token ids instead",
                                      path=path, field="--label-words")
            tok = tok or _load_tokenizer(tokenizer)
            pieces = tok.encode(" " + text, add_special_tokens=False)
            if len(pieces) != 1 or pieces[0] == tok.unk_token_id:
                raise MaskError(f"label word {text!r} tokenises to {tok.convert_ids_to_tokens(pieces)}; "
                                "each label word must be exactly one known token", path=path, field="--label-words")
            token_id, word = pieces[0], text
        if not 0 <= token_id < vocab_size:
            raise MaskError(f"label token id {token_id} outside the vocabulary (size {vocab_size})",
                            path=path, field="--label-words")
        ids.append(token_id)
        words.append(word)
    return tuple(ids), tuple(words)


def _load_tokenizer(directory: Path):
    from transformers import BertTokenizerFast

    try:
        return BertTokenizerFast.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"cannot load the tokenizer: {exc}", path=directory, field="--label-words") from exc
