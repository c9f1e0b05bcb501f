"""The rows of the peers suite (``benchmarks/peers.py``): each model file on its runtime, ready
to be timed (``Row.bind``) and evaluated (``Row.infer``), all in one process.

- ``ort_row``: any export directory by path on onnxruntime (``runtime.ModelSession``: the
  ``ai.smp`` library is registered when the manifest needs it), 2 intra-op threads, no spinning;
- ``ort_int8_row``: the dense model quantized by the project's own int8 path
  (``smp_export.int8.quantize_int8``: ``quantize_dynamic``, QInt8, per channel, MatMul);
- ``optimum_rows``: optimum's ``ORTQuantizer`` with ``AutoQuantizationConfig.avx2`` and, where the
  CPU has AVX512-VNNI, ``avx512_vnni`` (dynamic, per channel);
- ``openvino_rows``: OpenVINO on the same dense ONNX file in fp32, in bf16 where the CPU plugin
  offers it (its default there), int8 by ``nncf.quantize`` (calibrated on BBC train texts) and
  int8 weights by ``nncf.compress_weights``.

A builder whose package is missing returns ``Skipped`` rows naming the package and the venv;
built model files are cached under the work directory with a stamp of what made them.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from runtime.contract import CONFIG_FILE, LOGITS, MODEL_FILE, TOKENIZER_FILES, select_inputs
from smp_bench.peers import RowInfo, Skipped

logger = logging.getLogger(__name__)

SETUP_HINT = "run `make peers-setup`"
STAMP = "peer-stamp.json"
OV_CONFIG = {"NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}


@dataclass
class Row:
    """A row ready to run: ``infer(feeds)`` gives its output array (logits or hidden states);
    ``bind(feeds)`` gives the zero-argument call that is timed on fixed feeds."""

    info: RowInfo
    output: str
    infer: Callable[[Mapping[str, np.ndarray]], np.ndarray]
    bind: Callable[[Mapping[str, np.ndarray]], Callable[[], Any]]


def missing(package: str, exc: BaseException | None = None) -> str:
    """The reason a row is skipped when ``package`` cannot be imported."""
    detail = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return f"{package} not installed in {sys.prefix}: {SETUP_HINT}{detail}"


def file_bytes(*paths: Path) -> int:
    """Bytes of the model files (``.onnx`` with its ``.onnx.data``, or OpenVINO's ``.xml`` + ``.bin``)."""
    total = 0
    for path in paths:
        path = Path(path)
        for part in (path, path.with_name(path.name + ".data"), path.with_suffix(".bin")):
            if part.is_file() and (part == path or part.suffix in (".data", ".bin")):
                total += part.stat().st_size
    return total


def export_bytes(export_dir: Path) -> int:
    """Bytes of an export directory's ONNX files (model.onnx and any external data)."""
    return sum(p.stat().st_size for p in Path(export_dir).iterdir()
               if p.is_file() and (p.suffix == ".onnx" or p.name.endswith(".onnx.data")))


def _source_stamp(source: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    stat = Path(source).stat()
    return {"source": str(Path(source).resolve()), "source_bytes": stat.st_size, "source_mtime_ns": stat.st_mtime_ns,
            "settings": json.loads(json.dumps(settings, default=str))}


def cached(out: Path, stamp: Mapping[str, Any], artifact: str) -> bool:
    """``out/artifact`` exists and was made from the same source file with the same settings."""
    try:
        return (out / artifact).is_file() and json.loads((out / STAMP).read_text()) == dict(stamp)
    except (OSError, json.JSONDecodeError):
        return False


def _stage(reference_dir: Path, out: Path) -> Path:
    """A fresh copy of the dense export's model, config and tokenizer (no manifest: what a
    peer makes of it is no smp-export export)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in (MODEL_FILE, CONFIG_FILE, *TOKENIZER_FILES):
        if (reference_dir / name).is_file():
            shutil.copy2(reference_dir / name, out / name)
    return out


# ---------------------------------------------------------------------------- onnxruntime

def ort_row(info: RowInfo, export_dir: Path, threads: int) -> Row:
    """``export_dir`` on onnxruntime (CPU), ``threads`` intra-op threads, spinning off."""
    from runtime.session import ModelSession, SessionConfig

    session = ModelSession.load(export_dir, SessionConfig(intra_op_threads=threads, spinning=False))
    output = LOGITS if LOGITS in session.output_names else session.output_names[0]
    ort_session, names = session.session, session.input_names

    def infer(feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        return session.run(dict(feeds))[output]

    def bind(feeds: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        inputs = select_inputs(feeds, names)
        return lambda: ort_session.run([output], inputs)

    return Row(info, output, infer, bind)


def ort_int8_row(reference_dir: Path, work: Path, threads: int, model: str) -> Row | Skipped:
    """The dense model through the project's int8 path (``smp_export.int8.quantize_int8``)."""
    from smp_export.int8 import QUANTIZATION, quantize_int8

    out = work / "ort-int8"
    stamp = _source_stamp(reference_dir / MODEL_FILE, QUANTIZATION)
    if not cached(out, stamp, MODEL_FILE):
        logger.info("quantizing %s with onnxruntime quantize_dynamic -> %s", reference_dir / MODEL_FILE, out)
        quantize_int8(_stage(reference_dir, out) / MODEL_FILE)
        (out / STAMP).write_text(json.dumps(stamp))
    info = RowInfo("ort-int8", "onnxruntime", model, "int8",
                   "onnxruntime quantize_dynamic, QInt8 per channel, MatMul (smp_export.int8)", True,
                   export_bytes(out), str(out))
    return ort_row(info, out, threads)


OPTIMUM_CONFIGS: dict[str, tuple[str, str | None]] = {   # row name: (AutoQuantizationConfig method, CPU flag)
    "optimum-avx2": ("avx2", None),
    "optimum-avx512-vnni": ("avx512_vnni", "avx512_vnni"),
}


def optimum_rows(reference_dir: Path, work: Path, threads: int, model: str, cpu_flags: Sequence[str],
                 group: str) -> list[Row | Skipped]:
    """optimum's ORTQuantizer, dynamic and per channel, for each ``OPTIMUM_CONFIGS`` entry the CPU runs."""
    try:
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig
    except ImportError as exc:
        return [Skipped(group, name, missing("optimum-onnx", exc)) for name in OPTIMUM_CONFIGS]
    rows: list[Row | Skipped] = []
    for name, (method, flag) in OPTIMUM_CONFIGS.items():
        if flag is not None and flag not in cpu_flags:
            rows.append(Skipped(group, name, f"this CPU has no {flag} (flags checked: {' '.join(cpu_flags)})"))
            continue
        qconfig = getattr(AutoQuantizationConfig, method)(is_static=False, per_channel=True)
        out = work / name
        stamp = _source_stamp(reference_dir / MODEL_FILE, {"method": method, "config": str(qconfig.__dict__)})
        if not cached(out, stamp, MODEL_FILE):
            logger.info("quantizing %s with optimum ORTQuantizer (%s) -> %s", reference_dir / MODEL_FILE, method, out)
            staged = _stage(reference_dir, work / f".{name}-source")
            _stage(reference_dir, out)
            quantizer = ORTQuantizer.from_pretrained(staged, file_name=MODEL_FILE)
            quantizer.quantize(save_dir=out, quantization_config=qconfig, file_suffix="quantized")
            (out / MODEL_FILE).unlink()
            (out / "model_quantized.onnx").rename(out / MODEL_FILE)
            shutil.rmtree(staged)
            (out / STAMP).write_text(json.dumps(stamp))
        info = RowInfo(name, "onnxruntime", model, "int8",
                       f"optimum ORTQuantizer, AutoQuantizationConfig.{method}(is_static=False, per_channel=True): "
                       f"{qconfig}", True, export_bytes(out), str(out))
        rows.append(ort_row(info, out, threads))
    return rows


# ---------------------------------------------------------------------------- OpenVINO

OPENVINO_ROWS = ("openvino-fp32", "openvino-bf16", "openvino-int8", "openvino-int8-weights")


def ov_type_name(value: Any) -> str:
    """An OpenVINO element type as its short name (``f32``, ``bf16``)."""
    return value.to_string() if hasattr(value, "to_string") else str(value)


def _ov_row(info: RowInfo, core: Any, model_path: Path, threads: int, hint: str) -> Row:
    compiled = core.compile_model(str(model_path), "CPU", {**OV_CONFIG, "INFERENCE_NUM_THREADS": threads,
                                                            "INFERENCE_PRECISION_HINT": hint})
    names = [port.get_any_name() for port in compiled.inputs]
    outputs = [port.get_any_name() for port in compiled.outputs]
    output = LOGITS if LOGITS in outputs else outputs[0]
    port = compiled.output(output)
    request = compiled.create_infer_request()

    def infer(feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.array(request.infer(select_inputs(feeds, names))[port], copy=True)

    def bind(feeds: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        inputs = select_inputs(feeds, names)
        return lambda: request.infer(inputs, share_inputs=True)

    used = ov_type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    method = f"{info.method}; compiled with INFERENCE_PRECISION_HINT {used}, {threads} threads, one stream, " \
             "LATENCY hint"
    return Row(replace(info, method=method), output, infer, bind)


def _nncf_model(kind: str, onnx_path: Path, out: Path, calibration: Sequence[Mapping[str, np.ndarray]]) -> Path:
    """``nncf.quantize`` (``kind`` int8) or ``nncf.compress_weights`` (int8-weights) of the ONNX
    file as OpenVINO IR in ``out`` (reused when made from the same file and settings)."""
    import nncf
    import openvino as ov

    settings = {"kind": kind, "nncf": nncf.__version__, "openvino": ov.__version__,
                "calibration": len(calibration) if kind == "int8" else 0}
    stamp = _source_stamp(onnx_path, settings)
    xml = out / "model.xml"
    if cached(out, stamp, xml.name):
        return xml
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model = ov.Core().read_model(str(onnx_path))
    if kind == "int8":
        logger.info("nncf.quantize %s on %d calibration texts -> %s", onnx_path, len(calibration), out)
        names = [port.get_any_name() for port in model.inputs]
        items = [select_inputs(item, names) for item in calibration]
        model = nncf.quantize(model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(items))
    else:
        logger.info("nncf.compress_weights %s -> %s", onnx_path, out)
        model = nncf.compress_weights(model)
    ov.save_model(model, str(xml), compress_to_fp16=False)
    (out / STAMP).write_text(json.dumps(stamp))
    return xml


def nncf_qdq_onnx(onnx_path: Path, out: Path, calibration: Sequence[Mapping[str, np.ndarray]]) -> Path:
    """``nncf.quantize`` on the ONNX model itself (NNCF's ONNX backend): a static int8 QDQ ONNX
    file (QuantizeLinear / DequantizeLinear around every MatMul), the form DeepSparse's int8
    path reads. Reused when made from the same file and settings; ImportError without nncf."""
    import nncf
    import onnx

    stamp = _source_stamp(onnx_path, {"kind": "onnx-qdq", "nncf": nncf.__version__, "calibration": len(calibration)})
    path = out / MODEL_FILE
    if cached(out, stamp, MODEL_FILE):
        return path
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model = onnx.load(str(onnx_path))
    names = [value.name for value in model.graph.input]
    logger.info("nncf.quantize (ONNX backend, QDQ) %s on %d calibration texts -> %s", onnx_path, len(calibration), out)
    quantized = nncf.quantize(model, nncf.Dataset([select_inputs(item, names) for item in calibration]),
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration))
    onnx.save(quantized, str(path))
    (out / STAMP).write_text(json.dumps(stamp))
    return path


def openvino_rows(onnx_path: Path, work: Path, threads: int, model: str,
                  calibration: Sequence[Mapping[str, np.ndarray]], group: str) -> list[Row | Skipped]:
    """OpenVINO on the dense ONNX file: fp32, bf16 (where the CPU plugin offers it), NNCF int8
    (``calibration``: model inputs of BBC train texts) and NNCF int8 weights."""
    try:
        import openvino as ov
    except ImportError as exc:
        return [Skipped(group, name, missing("openvino", exc)) for name in OPENVINO_ROWS]
    core = ov.Core()
    capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    default_hint = ov_type_name(core.get_property("CPU", "INFERENCE_PRECISION_HINT"))
    size = file_bytes(onnx_path)
    rows: list[Row | Skipped] = [
        _ov_row(RowInfo("openvino-fp32", "openvino", model, "fp32", "the dense ONNX file read by OpenVINO", True,
                        size, str(onnx_path)), core, onnx_path, threads, "f32")]
    if "BF16" in capabilities:
        rows.append(_ov_row(RowInfo("openvino-bf16", "openvino", model, "bf16",
                                    f"the dense ONNX file read by OpenVINO (the CPU plugin's default precision here: "
                                    f"{default_hint})", True, size, str(onnx_path)), core, onnx_path, threads, "bf16"))
    else:
        rows.append(Skipped(group, "openvino-bf16", f"the OpenVINO CPU plugin offers no BF16 here ({capabilities})"))
    try:
        import nncf  # noqa: F401
    except ImportError as exc:
        return rows + [Skipped(group, name, missing("nncf", exc)) for name in OPENVINO_ROWS[2:]]
    methods = {"openvino-int8": ("int8", f"nncf.quantize (ModelType.TRANSFORMER, {len(calibration)} BBC train texts, "
                                         "int8 weights and activations)"),
               "openvino-int8-weights": ("int8-weights", "nncf.compress_weights (INT8_ASYM weights, fp32 activations)")}
    for name, (kind, method) in methods.items():
        if kind == "int8" and not calibration:
            rows.append(Skipped(group, name, "no calibration texts (--calib-samples 0)"))
            continue
        xml = _nncf_model(kind, onnx_path, work / name, calibration)
        rows.append(_ov_row(RowInfo(name, "openvino", model, kind, method, True, file_bytes(xml), str(xml)),
                            core, xml, threads, "f32"))
    return rows
