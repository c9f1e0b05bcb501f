"""The served model: protocol spec from the session and config.json, text encoding, heads."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import contract
from ..errors import RequestError, ServeConfigError
from ..jsonfile import read_json_object
from ..session import ModelSession
from .config import ServeConfig
from .protocol import INT_TYPES, ORT_TO_V2, ModelSpec, TensorSpec, check_text

log = logging.getLogger(__name__)

TextItem = str | Sequence[str]
LIMIT_BY_INPUT = {"input_ids": "vocab_size", "token_type_ids": "type_vocab_size"}


def read_model_config(directory: Path) -> dict[str, Any]:
    """config.json of the export ({} when absent)."""
    return read_json_object(directory / contract.CONFIG_FILE, ServeConfigError)


def _dims(shape: Sequence[Any]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape)


def build_spec(config: ServeConfig, session: ModelSession) -> ModelSpec:
    """Check the model is a token-id model and describe it for the protocol."""
    model_config = read_model_config(session.directory)
    inputs = []
    for meta in session.session.get_inputs():
        datatype = ORT_TO_V2.get(meta.type)
        if datatype not in INT_TYPES or len(meta.shape) != 2:
            raise ServeConfigError(f"input {meta.name!r} is {meta.type} {meta.shape}: smp-serve serves "
                                   "token-id models (int64 [batch, sequence] inputs)",
                                   path=session.directory / "model.onnx")
        inputs.append(TensorSpec(meta.name, datatype, _dims(meta.shape)))
    outputs = tuple(TensorSpec(o.name, ORT_TO_V2.get(o.type, "FP32"), _dims(o.shape))
                    for o in session.session.get_outputs())
    max_seq = config.max_seq_len
    positions = model_config.get("max_position_embeddings")
    if isinstance(positions, int) and max_seq > positions:
        log.warning("--max-seq-len %d exceeds the model's %d positions; using %d",
                    max_seq, positions, positions)
        max_seq = positions
    limits = {"attention_mask": 2}
    for name, key in LIMIT_BY_INPUT.items():
        value = model_config.get(key)
        if name == "input_ids" and not isinstance(value, int) and session.tokenizer is not None:
            value = session.tokenizer.vocab_size
        if isinstance(value, int) and value > 0:
            limits[name] = value
    return ModelSpec(name=config.model_name, inputs=tuple(inputs), outputs=outputs,
                     max_rows=config.max_texts, max_seq_len=max_seq, value_limits=limits,
                     has_tokenizer=session.tokenizer is not None)


def pad_values(session: ModelSession) -> dict[str, int]:
    """What pads each input when requests of different lengths are merged."""
    return contract.pad_values(session.tokenizer.pad_id if session.tokenizer is not None else contract.PAD_ID)


def check_texts(body: Any, max_texts: int) -> list[TextItem]:
    """``{"texts": [...]}``: strings, or [text, text_pair] pairs, 1..max_texts of them."""
    if not isinstance(body, dict) or "texts" not in body:
        raise RequestError('the body must be a JSON object {"texts": [...]}', field="texts")
    texts = body["texts"]
    if not isinstance(texts, list) or not texts:
        raise RequestError("'texts' must be a non-empty list", field="texts")
    if len(texts) > max_texts:
        raise RequestError(f"{len(texts)} texts exceed the limit of {max_texts} per request",
                           status=413, field="texts")
    for i, text in enumerate(texts):
        pair = isinstance(text, list) and len(text) == 2 and all(isinstance(t, str) for t in text)
        if not (isinstance(text, str) or pair):
            raise RequestError("each text must be a string or a [text, text_pair] pair",
                               field=f"texts[{i}]")
    if len({isinstance(t, str) for t in texts}) > 1:
        raise RequestError("mix of single texts and pairs in one request", field="texts")
    return [check_text(t, f"texts[{i}]") if isinstance(t, str)
            else (check_text(t[0], f"texts[{i}][0]"), check_text(t[1], f"texts[{i}][1]"))
            for i, t in enumerate(texts)]


def encode_texts(session: ModelSession, spec: ModelSpec, texts: list[TextItem],
                 seq_overflow: str) -> dict[str, np.ndarray]:
    """Token ids for the model's inputs; too-long texts are truncated or refused (413)."""
    if session.tokenizer is None:
        raise RequestError(f"this export has no tokenizer files: send token ids to "
                           f"/v2/models/{spec.name}/infer", field="texts")
    limit = spec.max_seq_len
    if seq_overflow == "reject":
        feeds = session.tokenizer.encode(texts, max_length=limit + 1)
        lengths = feeds["attention_mask"].sum(axis=1)
        if int(lengths.max()) > limit:
            index = int(lengths.argmax())
            raise RequestError(f"text {index} is longer than {limit} tokens", status=413,
                               field=f"texts[{index}]")
    else:
        feeds = session.tokenizer.encode(texts, max_length=limit)
    return {name: feeds[name] for name in spec.input_names}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def classify(session: ModelSession, spec: ModelSpec, outputs: dict[str, np.ndarray]) -> list[dict]:
    """Labels and softmax scores from the ``logits`` output."""
    logits = outputs[contract.LOGITS].astype(np.float64)
    probs = softmax(logits)
    labels = [session.id2label.get(i, f"LABEL_{i}") for i in range(probs.shape[1])]
    results = []
    for row in probs:
        best = int(row.argmax())
        results.append({"label": labels[best], "score": float(row[best]),
                        "scores": {label: float(p) for label, p in zip(labels, row)}})
    return results


def embed(outputs: dict[str, np.ndarray], attention_mask: np.ndarray, normalize: bool) -> np.ndarray:
    """Mean of ``last_hidden_state`` over real tokens (L2-normalised unless told otherwise).

    An overflow gives inf / NaN quietly: the caller refuses non-finite embeddings.
    """
    hidden = outputs[contract.HIDDEN].astype(np.float32)
    mask = attention_mask[:, :hidden.shape[1], None].astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        out = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        if normalize:
            out = out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
    return out


def require_output(spec: ModelSpec, name: str, rank: int, endpoint: str, hint: str) -> None:
    """400 when the model lacks the output an endpoint needs."""
    outputs = {t.name: t for t in spec.outputs}
    if name not in outputs or len(outputs[name].shape) != rank:
        raise RequestError(f"{endpoint} needs a {name!r} output of rank {rank}; this model has "
                           f"{', '.join(spec.output_names)} ({hint})", field="model")
