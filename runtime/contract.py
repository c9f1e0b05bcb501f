"""What the exporter, the runtime, the server and the lab must agree on, defined once.

An export directory holds ``MODEL_FILE`` (inputs: some of ``INPUT_NAMES``, int64
``[batch, sequence]``; one output, ``LOGITS`` or ``HIDDEN``), ``CONFIG_FILE``, the tokenizer
files and ``manifest.json`` (``runtime.manifest``). ``random_inputs`` is the one builder of
synthetic model inputs (validation, timing, memory probes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.json"
INPUT_NAMES: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
LOGITS, HIDDEN = "logits", "last_hidden_state"
# Either of the first two makes a tokenizer; an export copies every one that exists.
TOKENIZER_MODEL_FILES: tuple[str, ...] = ("tokenizer.json", "vocab.txt")
TOKENIZER_FILES: tuple[str, ...] = (*TOKENIZER_MODEL_FILES, "tokenizer_config.json", "special_tokens_map.json")
PAD_ID = 0


def has_tokenizer(directory: str | Path) -> bool:
    """Whether ``directory`` holds a file a tokenizer can be built from."""
    return any((Path(directory) / name).is_file() for name in TOKENIZER_MODEL_FILES)


def random_inputs(batch: int, seq: int, *, vocab_size: int, type_vocab_size: int = 1,
                  rng: np.random.Generator | None = None, padded_rows: bool = False,
                  low_id: int = 1) -> dict[str, np.ndarray]:
    """Seeded random int64 inputs ``[batch, seq]``: token ids in ``[low_id, vocab_size)``,
    token types in ``[0, type_vocab_size)``, an all-ones attention mask.

    ``padded_rows``: every odd row of a multi-row batch ends in padding of random length
    (mask 0, id ``PAD_ID``, type 0), as real batches do.
    """
    if batch < 1 or seq < 1 or vocab_size < 2 or type_vocab_size < 1:
        raise ValueError(f"need batch, seq >= 1, vocab_size >= 2, type_vocab_size >= 1; got "
                         f"{batch}, {seq}, {vocab_size}, {type_vocab_size}")
    rng = rng if rng is not None else np.random.default_rng(0)
    ids = rng.integers(min(low_id, vocab_size - 1), vocab_size, size=(batch, seq), dtype=np.int64)
    types = rng.integers(0, type_vocab_size, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    for row in range(1, batch, 2) if padded_rows and seq > 1 else ():
        length = int(rng.integers(1, seq))
        mask[row, length:] = 0
        ids[row, length:] = PAD_ID
        types[row, length:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def pad_values(pad_id: int = PAD_ID) -> dict[str, int]:
    """What each input is padded with when requests of different lengths are merged."""
    return {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0}


def select_inputs(feeds: Mapping[str, np.ndarray], declared: Iterable[str]) -> dict[str, np.ndarray]:
    """The feeds a model declares (e.g. no ``token_type_ids`` for DistilBERT)."""
    names = set(declared)
    return {k: v for k, v in feeds.items() if k in names}
