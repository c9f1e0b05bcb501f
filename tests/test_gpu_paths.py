"""The GPU paths that run without a GPU: provider selection (TensorRT with its engine cache,
fp16 and sparse tactics from the manifest), the clear refusals (ai.smp kernels on CUDA,
TensorRT without CUDA), I/O binding on the CPU provider, and the CPU-fallback report read from
onnxruntime's profile."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import pytest

import runtime.providers as providers
from runtime.errors import DeviceError
from runtime.kernels import library_available
from runtime.manifest import Manifest
from runtime.providers import CPU, CUDA, TENSORRT, TensorRTOptions, gpu_providers
from runtime.session import ModelSession, SessionConfig, _providers, check_used_providers
from smp_bench.profile import parse_trace
from tests.test_serve_support import tiny_export, tiny_kernel_export


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return tiny_export(tmp_path_factory.mktemp("gpu") / "tiny")


def _feeds():
    ids = np.array([[2, 5, 9, 4, 0], [3, 8, 7, 6, 10]], np.int64)
    return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}


def _pretend(monkeypatch, *names):
    ort = providers.import_onnxruntime()
    monkeypatch.setattr(ort, "get_available_providers", lambda: [*names, CPU])


def test_io_binding_on_the_cpu_provider_equals_run(export):
    session = ModelSession.load(export)
    bound = session.bind(_feeds())
    assert bound.device == "cpu"
    for _ in range(2):                                    # re-runs on the same bound inputs
        bound.run()
        np.testing.assert_array_equal(bound.outputs()["logits"], session.run(_feeds())["logits"])


@pytest.mark.skipif(not library_available(), reason="the ai.smp library is not built")
def test_a_kernel_export_on_cuda_is_a_clear_error(tmp_path):
    kernel = tiny_kernel_export(tmp_path / "k")
    with pytest.raises(DeviceError, match="ai.smp kernels, which run on the CPU only; export compact") as info:
        ModelSession.load(kernel, SessionConfig(device="cuda"))
    assert info.value.field == "--device"


def test_cuda_without_the_provider_and_tensorrt_without_cuda_are_refused(export):
    with pytest.raises(DeviceError, match="no CUDAExecutionProvider"):
        ModelSession.load(export, SessionConfig(device="cuda"))
    with pytest.raises(DeviceError, match="TensorRT runs on the GPU") as info:
        SessionConfig(tensorrt=True)
    assert info.value.field == "--tensorrt"


def test_tensorrt_comes_first_with_its_cache_and_tactics(tmp_path, monkeypatch):
    _pretend(monkeypatch, CUDA)
    with pytest.raises(DeviceError, match="no TensorrtExecutionProvider"):
        gpu_providers(TensorRTOptions(cache_dir=tmp_path))
    _pretend(monkeypatch, TENSORRT, CUDA)
    chosen = gpu_providers(TensorRTOptions(cache_dir=tmp_path / "trt-cache", fp16=True, sparsity=True))
    assert chosen[1:] == [CUDA, CPU]
    name, options = chosen[0]
    assert name == TENSORRT and options == {"trt_engine_cache_enable": True, "trt_fp16_enable": True,
                                            "trt_engine_cache_path": str(tmp_path / "trt-cache"),
                                            "trt_sparsity_enable": True}


def test_the_manifest_sets_fp16_and_sparse_tactics(export, monkeypatch):
    _pretend(monkeypatch, TENSORRT, CUDA)
    manifest = Manifest.read(export)
    config = SessionConfig(device="cuda", tensorrt=True)
    (_, plain), *_ = _providers(export, manifest, config)
    assert plain["trt_fp16_enable"] is False and plain["trt_sparsity_enable"] is False
    assert plain["trt_engine_cache_path"] == str(export / "trt-cache")
    two_four = dataclasses.replace(manifest, precision="fp16", metadata={"structure": {"two_four": True}})
    (_, tuned), *_ = _providers(export, two_four, config)
    assert tuned["trt_fp16_enable"] is True and tuned["trt_sparsity_enable"] is True
    assert _providers(export, manifest, SessionConfig(device="cuda")) == [CUDA, CPU]


def test_the_profile_names_nodes_that_fell_back_to_the_cpu():
    from smp_bench.run import _note_fallbacks

    def node(name, provider, ts):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": 5,
                "args": {"op_name": "MatMul", "provider": provider}}

    trace = [{"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},
             node("/layer.0/MatMul", CUDA, 10), node("/shape/Gather", CPU, 20), node("/layer.1/MatMul", CUDA, 30)]
    summary = parse_trace(trace)
    assert summary.placement == {CUDA: ["/layer.0/MatMul", "/layer.1/MatMul"], CPU: ["/shape/Gather"]}
    assert summary.nodes_off({CUDA}) == ["/shape/Gather"] and summary.nodes_off({CUDA, CPU}) == []
    fields = summary.to_fields()
    assert fields["profile_nodes_cuda"] == 2 and fields["profile_nodes_cpu"] == 1
    notes: list[str] = []
    _note_fallbacks("compact@0.90", summary.nodes_off({CUDA}), notes)
    assert notes[0].startswith("compact@0.90: 1 node(s) ran outside the GPU providers (CPU fallback): /shape/Gather")
    _note_fallbacks("dense", [], notes)
    assert len(notes) == 1


def test_smp_bench_times_through_io_binding_on_request(tmp_path, monkeypatch):
    import runtime.binding
    from tests.test_bench_cli import FAST, _invoke, _ok, _results

    calls = []
    real = runtime.binding.BoundRun.run
    monkeypatch.setattr(runtime.binding.BoundRun, "run", lambda self: calls.append(1) or real(self))
    export = tiny_export(tmp_path / "tiny")
    out = tmp_path / "res"
    _ok(_invoke(export, *FAST, "--runs", "2", "--no-memory", "--io-binding", "--data", "none", "--baseline", export,
                "-o", out))
    data = _results(out)
    assert data["config"]["backends"]["io_binding"] is True
    assert len(calls) >= 2 * (2 + 1)                      # both variants' timed and warm-up runs, bound
    assert [r["name"] for r in data["records"]][-1] == "tiny" and all(r["p50_ms"] > 0 for r in data["records"])
    refused = _invoke(export, *FAST, "--tensorrt", "-o", tmp_path / "x")
    assert refused.exit_code == 2 and "TensorRT needs --device cuda" in refused.output


@pytest.mark.parametrize("weights, precision", [("dense", "fp32"), ("dense", "fp16"), ("compact", "fp16")])
def test_a_two_four_checkpoint_exports_two_four_along_k_for_tensorrt(tmp_path, weights, precision):
    """TensorRT's sparse tactics take 2:4 from the dense weights, along the GEMM's K (the input):
    the MatMul weight [in, out] keeps at most 2 of every 4 consecutive rows in each column."""
    import onnx
    from onnx import numpy_helper

    from smp_export.export import ExportOptions, export_onnx
    from smp_export.structure import nm_mask
    from smp_export.structure_check import structure_report
    from tests.helpers import tiny_checkpoint

    ckpt = tiny_checkpoint(head="sequence-classification")
    gen = torch.Generator().manual_seed(0)
    ckpt.masks = {name: nm_mask(torch.rand(mask.shape, generator=gen), 2, 4) for name, mask in ckpt.masks.items()}
    ckpt.metadata["structure"] = structure_report(ckpt.masks, ckpt.dims)
    manifest = export_onnx(ckpt, tmp_path / "e", options=ExportOptions(weights=weights, precision=precision))
    assert manifest.metadata["structure"]["two_four"] is True
    model = onnx.load(str(tmp_path / "e" / "model.onnx"))
    linears = [t for t in model.graph.initializer if t.name.endswith(".weight_t") and ".layer." in t.name]
    assert len(linears) == len(ckpt.masks)
    for tensor in linears:
        w = numpy_helper.to_array(tensor)                       # [in (K), out (N)]
        groups = (w.reshape(w.shape[0] // 4, 4, w.shape[1]) != 0).sum(1)
        assert groups.max() <= 2, tensor.name


def test_a_provider_that_did_not_start_is_an_error_not_a_quiet_fallback(tmp_path):
    cuda, trt = SessionConfig(device="cuda"), SessionConfig(device="cuda", tensorrt=True)
    check_used_providers([CUDA, CPU], cuda, tmp_path)
    check_used_providers([TENSORRT, CUDA, CPU], trt, tmp_path)
    with pytest.raises(DeviceError, match="fell back to the CPU") as info:
        check_used_providers([CPU], cuda, tmp_path)
    assert info.value.field == "--device"
    with pytest.raises(DeviceError, match="TensorrtExecutionProvider failed to initialise") as info:
        check_used_providers([CUDA, CPU], trt, tmp_path)          # what onnxruntime does when libnvinfer is missing
    assert info.value.field == "--tensorrt"
