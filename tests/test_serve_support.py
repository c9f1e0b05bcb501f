"""Helpers for the smp-serve tests (no tests here): tiny exports with a tokenizer, HTTP calls.

Every server in the tests binds 127.0.0.1 on a port the OS picks and is always stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

from smp_export.export import ExportOptions, export_onnx
from tests.helpers import VOCAB, tiny_checkpoint

WORDS = ("good", "bad", "movie", "great", "terrible", "the", "a", "film", "was", "is", "not", "very")
TIMEOUT_S = 30


def tiny_export(directory: Path, head: str = "sequence-classification") -> Path:
    """A tiny random BERT export (validation skipped: the export is tested elsewhere) with a
    WordPiece vocab.txt of VOCAB tokens and id2label names."""
    export_onnx(tiny_checkpoint(head=head), directory, options=ExportOptions(validate=False))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokens += [f"w{i}" for i in range(VOCAB - len(tokens))]
    (directory / "vocab.txt").write_text("\n".join(tokens) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    if head == "sequence-classification":
        config = json.loads((directory / "config.json").read_text())
        config["id2label"] = {"0": "negative", "1": "neutral", "2": "positive"}
        config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}
        (directory / "config.json").write_text(json.dumps(config))
    return directory


def tiny_kernel_export(directory: Path, head: str = "sequence-classification", precision: str = "fp32") -> Path:
    """``tiny_export``'s model as a validated sparse-kernel export (the ai.smp library), with
    the same vocab and labels."""
    base = tiny_export(directory.with_name(directory.name + "-vocab"), head=head)
    export_onnx(tiny_checkpoint(head=head), directory, options=ExportOptions(weights="sparse-kernel",
                                                                           precision=precision))
    for name in ("vocab.txt", "tokenizer_config.json", "config.json"):
        (directory / name).write_bytes((base / name).read_bytes())
    return directory


def post(url: str, body: Any = None, *, data: bytes | None = None,
         headers: dict[str, str] | None = None) -> requests.Response:
    """POST JSON (or raw ``data``) with a generous timeout."""
    if data is None:
        data = json.dumps(body).encode()
    return requests.post(url, data=data, headers=headers or {}, timeout=TIMEOUT_S)


def get(url: str, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.get(url, headers=headers or {}, timeout=TIMEOUT_S)


def tensor(name: str, values: Any, datatype: str = "INT64") -> dict[str, Any]:
    """A JSON v2 tensor of a nested list."""
    import numpy as np

    arr = np.asarray(values)
    return {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": arr.reshape(-1).tolist()}


def token_inputs(ids: list[list[int]]) -> list[dict[str, Any]]:
    """input_ids / attention_mask (all ones) / token_type_ids (zeros) for ``ids``."""
    return [tensor("input_ids", ids), tensor("attention_mask", [[1] * len(r) for r in ids]),
            tensor("token_type_ids", [[0] * len(r) for r in ids])]


def metric_value(text: str, name: str) -> float:
    """The first sample called exactly ``name`` (labels included) in a /metrics body."""
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    raise KeyError(name)
