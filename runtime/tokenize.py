"""The tokenizer of an export directory, on the fast ``tokenizers`` library only.

Loads ``tokenizer.json``; without it, builds a BERT WordPiece tokenizer from ``vocab.txt``
(lower-casing as ``tokenizer_config.json`` says). Neither transformers nor torch is imported.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
from tokenizers import Tokenizer as _FastTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from .errors import TokenizerError
from .jsonfile import read_json_object

log = logging.getLogger(__name__)

Texts = Union[Sequence[str], Sequence[tuple[str, str]]]


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, TokenizerError)


def _token_text(value: Any) -> str | None:
    """A special token as written by transformers: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _wordpiece_from_vocab(vocab: Path, lowercase: bool) -> _FastTokenizer:
    """The equivalent of tokenizers' BertWordPieceTokenizer for ``vocab.txt``."""
    tok = _FastTokenizer(models.WordPiece.from_file(str(vocab), unk_token="[UNK]"))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise TokenizerError("vocab.txt lacks [CLS] or [SEP]", path=vocab)
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


class Tokenizer:
    """Batch encoder returning the int64 arrays a BERT ONNX export takes.

    Thread-safe: each (max_length, pad_to) setting gets its own configured copy, so encoding
    never mutates a tokenizer another thread is using.
    """

    def __init__(self, tokenizer: _FastTokenizer, *, pad_token: str = "[PAD]", source: str = ""):
        self._base = tokenizer
        self.source = source
        self.pad_token = pad_token
        pad_id = tokenizer.token_to_id(pad_token)
        self.pad_id = 0 if pad_id is None else pad_id
        self._configured: dict[tuple[int, int | None], _FastTokenizer] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_dir(cls, directory: str | Path) -> "Tokenizer":
        """Load the tokenizer of an export directory (tokenizer.json, else vocab.txt)."""
        directory = Path(directory)
        config = _read_json(directory / "tokenizer_config.json")
        special = _read_json(directory / "special_tokens_map.json")
        pad_token = _token_text(special.get("pad_token")) or _token_text(config.get("pad_token"))
        tok_json, vocab = directory / "tokenizer.json", directory / "vocab.txt"
        if tok_json.is_file():
            try:
                tok = _FastTokenizer.from_file(str(tok_json))
            except Exception as exc:  # tokenizers raises a plain Exception on a bad file
                raise TokenizerError(f"cannot load tokenizer.json: {exc}", path=tok_json) from exc
            pad_token = pad_token or (tok.padding or {}).get("pad_token")
            source = str(tok_json)
        elif vocab.is_file():
            lowercase = bool(config.get("do_lower_case", True))
            log.info("no tokenizer.json in %s: building WordPiece from vocab.txt (lowercase=%s)",
                     directory, lowercase)
            tok = _wordpiece_from_vocab(vocab, lowercase)
            source = str(vocab)
        else:
            raise TokenizerError("no tokenizer.json or vocab.txt found", path=directory)
        return cls(tok, pad_token=pad_token or "[PAD]", source=source)

    def _for(self, max_length: int, pad_to: int | None) -> _FastTokenizer:
        key = (max_length, pad_to)
        with self._lock:
            tok = self._configured.get(key)
            if tok is None:
                tok = _FastTokenizer.from_str(self._base.to_str())
                limit = min(max_length, pad_to) if pad_to else max_length
                tok.enable_truncation(max_length=limit, strategy="longest_first")
                tok.enable_padding(pad_id=self.pad_id, pad_token=self.pad_token, length=pad_to)
                self._configured[key] = tok
            return tok

    def encode(self, texts: Texts, max_length: int = 128,
               pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Encode single texts or (text, text_pair) tuples.

        Truncates to ``max_length`` and pads to the longest in the batch, or to exactly
        ``pad_to`` tokens when given. Returns int64 input_ids, attention_mask, token_type_ids.
        """
        if max_length < 2 or (pad_to is not None and pad_to < 2):
            raise ValueError("max_length and pad_to must be >= 2 (room for [CLS] and [SEP])")
        items = list(texts)
        if not items:
            raise ValueError("no texts to encode")
        pairs = [isinstance(t, (tuple, list)) for t in items]
        if any(pairs) and not all(pairs):
            raise ValueError("mix of single texts and sentence pairs in one batch")
        if all(pairs):
            items = [tuple(t) for t in items]
            if any(len(t) != 2 for t in items):
                raise ValueError("sentence pairs must be (text, text_pair) tuples")
        encodings = self._for(max_length, pad_to).encode_batch(items)
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }

    def __call__(self, texts: Texts, max_length: int = 128,
                 pad_to: int | None = None) -> dict[str, np.ndarray]:
        return self.encode(texts, max_length=max_length, pad_to=pad_to)

    def token_id(self, token: str) -> int | None:
        """The id of ``token`` in the vocabulary, None when it has none."""
        return self._base.token_to_id(token)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ``ids``, special tokens left out."""
        return self._base.decode([int(i) for i in ids], skip_special_tokens=True)

    @property
    def vocab_size(self) -> int:
        return self._base.get_vocab_size()
