"""Open Inference Protocol (KServe v2) REST: request validation and response encoding.

JSON tensors (``data`` flat row-major or nested) and the binary tensor extension
(``Inference-Header-Content-Length``: a JSON header followed by raw little-endian tensor
bytes, as tritonclient sends by default) are both understood. Every check names the input
and what was wrong; nothing here touches the model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import RequestError

HEADER_LENGTH = "Inference-Header-Content-Length"
INT_TYPES = {"INT64": np.dtype("<i8"), "INT32": np.dtype("<i4")}
NUMPY_TO_V2 = {np.dtype(np.float32): "FP32", np.dtype(np.float16): "FP16",
               np.dtype(np.float64): "FP64", np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32"}
ORT_TO_V2 = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(double)": "FP64",
             "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(bool)": "BOOL"}
TEXT_INPUT = "TEXT"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]              # -1 for a dynamic axis


@dataclass(frozen=True)
class ModelSpec:
    """What a request is checked against."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_rows: int
    max_seq_len: int
    value_limits: dict[str, int] = field(default_factory=dict)   # input -> exclusive upper bound
    has_tokenizer: bool = False
    version: str = "1"
    platform: str = "onnxruntime_onnx"

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


@dataclass
class InferRequest:
    """A validated request: token-id ``feeds`` or raw ``texts`` (the optional TEXT input)."""

    id: str | None
    feeds: dict[str, np.ndarray] | None
    texts: list[str] | None
    outputs: list[str]
    binary_outputs: set[str]


def model_metadata(spec: ModelSpec) -> dict[str, Any]:
    """GET /v2/models/{name}."""
    tensors = lambda ts: [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in ts]
    return {"name": spec.name, "versions": [spec.version], "platform": spec.platform,
            "inputs": tensors(spec.inputs), "outputs": tensors(spec.outputs)}


def dumps(obj: Any) -> str:
    """Strict JSON for every response: a NaN or infinity raises ValueError, never invalid JSON."""
    return json.dumps(obj, allow_nan=False)


def loads_body(body: bytes | memoryview) -> Any:
    """A JSON request body: UTF-8 text (a leading BOM is allowed), else 400."""
    try:
        text = bytes(body).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RequestError(f"the request body is not UTF-8 text: {exc}") from None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}") from None


def check_text(text: str, field: str) -> str:
    """``text``, refused (400) when it holds an unpaired surrogate (JSON ``"\\ud800"``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(f"text holds an unpaired surrogate {text[exc.start]!r} at position "
                           f"{exc.start}: not valid Unicode", field=field) from None
    return text


def _parameters(obj: dict[str, Any], field: str) -> dict[str, Any]:
    """``obj["parameters"]``: absent / null is {}, anything but an object is 400."""
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise RequestError("'parameters' must be an object", field=field)
    return params


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
    """The JSON header and the binary remainder (empty without the binary extension)."""
    size = len(body)
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise RequestError(f"{HEADER_LENGTH} must be an integer", field=HEADER_LENGTH) from None
        if not 0 < size <= len(body):
            raise RequestError(f"{HEADER_LENGTH} {size} is outside the {len(body)}-byte body",
                               field=HEADER_LENGTH)
    header = loads_body(memoryview(body)[:size])
    if not isinstance(header, dict):
        raise RequestError("the request body must be a JSON object")
    return header, memoryview(body)[size:]


def parse_infer_request(body: bytes, header_length: str | None, spec: ModelSpec) -> InferRequest:
    """Validate a POST .../infer body against ``spec``; raises RequestError (400/413)."""
    header, binary = split_body(body, header_length)
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("'inputs' must be a non-empty list of tensors", field="inputs")
    tensors = _read_tensors(inputs, binary, spec)
    outputs, binary_outputs = _requested_outputs(header, spec)
    request_id = header.get("id")
    request_id = None if request_id is None else str(request_id)
    if TEXT_INPUT in tensors:
        return InferRequest(request_id, None, tensors[TEXT_INPUT], outputs, binary_outputs)
    return InferRequest(request_id, _check_feeds(tensors, spec), None, outputs, binary_outputs)


def _read_tensors(inputs: list[Any], binary: memoryview, spec: ModelSpec) -> dict[str, Any]:
    tensors: dict[str, Any] = {}
    offset = 0
    for i, tensor in enumerate(inputs):
        where = f"inputs[{i}]"
        if not isinstance(tensor, dict):
            raise RequestError("each input must be an object with name, shape, datatype, data",
                               field=where)
        name = tensor.get("name")
        if not isinstance(name, str):
            raise RequestError("'name' must be a string", field=f"{where}.name")
        if name in tensors:
            raise RequestError(f"input {name!r} is given twice", field=f"{where}.name")
        if name != TEXT_INPUT and name not in spec.input_names:
            raise RequestError(f"unknown input {name!r}; the model takes "
                               f"{', '.join(spec.input_names)} (or {TEXT_INPUT} as BYTES)",
                               field=f"{where}.name")
        shape = _shape(tensor.get("shape"), name)
        raw, offset = _binary_part(tensor, binary, offset, name)
        if name == TEXT_INPUT:
            tensors[name] = _text_tensor(tensor, shape, raw, spec)
        else:
            tensors[name] = _int_tensor(tensor, shape, raw, spec)
    if offset != len(binary):
        raise RequestError(f"{len(binary) - offset} bytes of binary data follow the last tensor",
                           field=HEADER_LENGTH)
    if TEXT_INPUT in tensors and len(tensors) > 1:
        raise RequestError(f"{TEXT_INPUT} cannot be combined with token-id inputs", field=TEXT_INPUT)
    return tensors


def _shape(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                               and d >= 0 for d in value):
        raise RequestError(f"shape of {name!r} must be a list of non-negative integers, got "
                           f"{json.dumps(value)}", field=f"{name}.shape")
    return tuple(value)


def _binary_part(tensor: dict[str, Any], binary: memoryview, offset: int,
                 name: str) -> tuple[memoryview | None, int]:
    params = _parameters(tensor, f"{name}.parameters")
    if any(key.startswith("shared_memory") for key in params):
        raise RequestError("shared-memory tensors are not supported", field=f"{name}.parameters")
    size = params.get("binary_data_size")
    if size is None:
        if "data" not in tensor:
            raise RequestError(f"input {name!r} has neither 'data' nor binary_data_size",
                               field=f"{name}.data")
        return None, offset
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
        raise RequestError(f"binary_data_size {size!r} of {name!r} runs past the "
                           f"{len(binary)} bytes of binary data", field=f"{name}.binary_data_size")
    return binary[offset:offset + size], offset + size


def _check_batch_limits(shape: tuple[int, ...], name: str, spec: ModelSpec) -> None:
    if shape[0] == 0:
        raise RequestError(f"input {name!r} has an empty batch", field=f"{name}.shape")
    if shape[0] > spec.max_rows:
        raise RequestError(f"batch of {shape[0]} rows exceeds the limit of {spec.max_rows} per "
                           "request", status=413, field=f"{name}.shape")


def _int_tensor(tensor: dict[str, Any], shape: tuple[int, ...], raw: memoryview | None,
                spec: ModelSpec) -> np.ndarray:
    name = tensor["name"]
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in INT_TYPES:
        raise RequestError(f"input {name!r} must be INT64 or INT32, got {datatype!r}",
                           field=f"{name}.datatype")
    if len(shape) != 2:
        raise RequestError(f"input {name!r} must have shape [batch, sequence], got {list(shape)}",
                           field=f"{name}.shape")
    _check_batch_limits(shape, name, spec)
    if shape[1] == 0:
        raise RequestError(f"input {name!r} has an empty sequence", field=f"{name}.shape")
    if shape[1] > spec.max_seq_len:
        raise RequestError(f"sequence length {shape[1]} exceeds the limit of {spec.max_seq_len} "
                           "tokens", status=413, field=f"{name}.shape")
    count = math.prod(shape)
    if raw is not None:
        dtype = INT_TYPES[datatype]
        if len(raw) != count * dtype.itemsize:
            raise RequestError(f"binary data of {name!r} is {len(raw)} bytes; shape {list(shape)} "
                               f"of {datatype} needs {count * dtype.itemsize}",
                               field=f"{name}.binary_data_size")
        arr = np.frombuffer(raw, dtype=dtype)
    else:
        arr = _json_ints(tensor["data"], name)
        if arr.size != count:
            raise RequestError(f"input {name!r} has {arr.size} values; shape {list(shape)} needs "
                               f"{count}", field=f"{name}.data")
    return arr.reshape(shape).astype(np.int64)


def _json_ints(data: Any, name: str) -> np.ndarray:
    if not isinstance(data, list):
        raise RequestError(f"data of {name!r} must be a list", field=f"{name}.data")
    try:
        arr = np.asarray(data)
    except (ValueError, OverflowError) as exc:
        raise RequestError(f"data of {name!r} is not a regular array of integers: {exc}",
                           field=f"{name}.data") from None
    if arr.dtype.kind not in "iu" and arr.size:
        kind = {"f": "floating-point numbers", "b": "booleans", "U": "strings"}.get(arr.dtype.kind,
                                                                                   "mixed values")
        raise RequestError(f"data of {name!r} must be integers, got {kind}", field=f"{name}.data")
    return arr.reshape(-1)


def _text_tensor(tensor: dict[str, Any], shape: tuple[int, ...], raw: memoryview | None,
                 spec: ModelSpec) -> list[str]:
    if tensor.get("datatype") != "BYTES":
        raise RequestError(f"input {TEXT_INPUT!r} must be BYTES, got {tensor.get('datatype')!r}",
                           field=f"{TEXT_INPUT}.datatype")
    if not spec.has_tokenizer:
        raise RequestError(f"this export has no tokenizer: send token ids ({', '.join(spec.input_names)})",
                           field=TEXT_INPUT)
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise RequestError(f"{TEXT_INPUT} must have shape [batch] or [batch, 1], got {list(shape)}",
                           field=f"{TEXT_INPUT}.shape")
    _check_batch_limits(shape, TEXT_INPUT, spec)
    texts = _split_bytes(raw) if raw is not None else _flat_strings(tensor["data"])
    if len(texts) != shape[0]:
        raise RequestError(f"{TEXT_INPUT} has {len(texts)} strings; shape {list(shape)} needs "
                           f"{shape[0]}", field=f"{TEXT_INPUT}.data")
    return [check_text(text, f"{TEXT_INPUT}.data[{i}]") for i, text in enumerate(texts)]


def _flat_strings(data: Any) -> list[str]:
    flat = data if isinstance(data, list) else None
    if flat is not None and flat and all(isinstance(x, list) for x in flat):
        flat = [x for row in flat for x in row]
    if flat is None or not all(isinstance(x, str) for x in flat):
        raise RequestError(f"data of {TEXT_INPUT} must be a list of strings", field=f"{TEXT_INPUT}.data")
    return flat


def _split_bytes(raw: memoryview) -> list[str]:
    """tritonclient's binary BYTES: each element a 4-byte little-endian length, then UTF-8."""
    texts, pos, data = [], 0, bytes(raw)
    while pos < len(data):
        if pos + 4 > len(data):
            raise RequestError("truncated BYTES element length", field=f"{TEXT_INPUT}.binary_data_size")
        size = int.from_bytes(data[pos:pos + 4], "little")
        chunk = data[pos + 4:pos + 4 + size]
        if len(chunk) != size:
            raise RequestError("truncated BYTES element", field=f"{TEXT_INPUT}.binary_data_size")
        try:
            texts.append(chunk.decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError("BYTES element is not UTF-8 text", field=f"{TEXT_INPUT}.data") from None
        pos += 4 + size
    return texts


def _check_feeds(tensors: dict[str, np.ndarray], spec: ModelSpec) -> dict[str, np.ndarray]:
    missing = [n for n in spec.input_names if n not in tensors]
    if missing:
        raise RequestError(f"missing input(s): {', '.join(missing)} (the model takes "
                           f"{', '.join(spec.input_names)})", field="inputs")
    shapes = {name: list(arr.shape) for name, arr in tensors.items()}
    if len({tuple(s) for s in shapes.values()}) > 1:
        raise RequestError(f"inputs must all have the same shape, got {json.dumps(shapes)}",
                           field="inputs")
    for name, arr in tensors.items():
        low, high = int(arr.min()), int(arr.max())
        limit = spec.value_limits.get(name)
        if low < 0 or (limit is not None and high >= limit):
            bad = low if low < 0 else high
            raise RequestError(f"{name!r} holds {bad}, outside [0, {limit if limit else 'inf'})",
                               field=f"{name}.data")
    return tensors


def _requested_outputs(header: dict[str, Any], spec: ModelSpec) -> tuple[list[str], set[str]]:
    params = _parameters(header, "parameters")
    all_binary = params.get("binary_data_output") is True
    requested = header.get("outputs")
    if requested is None:
        names = spec.output_names
        return names, set(names) if all_binary else set()
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise RequestError("'outputs' must be a list of objects with a name", field="outputs")
    names, binary = [], set()
    for i, out in enumerate(requested):
        name = out.get("name")
        if name not in spec.output_names:
            raise RequestError(f"unknown output {name!r}; the model has {', '.join(spec.output_names)}",
                               field="outputs")
        names.append(name)
        if _parameters(out, f"outputs[{i}].parameters").get("binary_data", all_binary) is True:
            binary.add(name)
    return names, binary


def encode_infer_response(spec: ModelSpec, request: InferRequest,
                          outputs: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """The response body and headers: JSON, or JSON header + raw bytes for binary outputs."""
    tensors, chunks = [], []
    for name in request.outputs:
        arr = np.ascontiguousarray(outputs[name])
        entry: dict[str, Any] = {"name": name, "datatype": NUMPY_TO_V2.get(arr.dtype, "FP32"),
                                 "shape": list(arr.shape)}
        if name in request.binary_outputs:
            raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = arr.reshape(-1).tolist()
        tensors.append(entry)
    body: dict[str, Any] = {"model_name": spec.name, "model_version": spec.version, "outputs": tensors}
    if request.id is not None:
        body["id"] = request.id
    header = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    if not chunks:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(chunks), {"Content-Type": "application/octet-stream",
                                       HEADER_LENGTH: str(len(header))}
