"""optimum's ORTModel classes run the kernel variants: ``runtime.ortmodel.session_options``
registers the ai.smp library in options an existing optimum call takes unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.errors import SessionError
from runtime.kernels import library_available
from runtime.ortmodel import load_ort_model, ort_model_class, session_options
from runtime.session import ModelSession
from smp_export.reference import build_reference_model
from tests.helpers import tiny_checkpoint
from tests.test_serve_support import tiny_kernel_export

optimum_ort = pytest.importorskip("optimum.onnxruntime")
pytestmark = pytest.mark.skipif(not library_available(), reason="the ai.smp library is not built")


def _inputs():
    ids = torch.tensor([[2, 5, 9, 4, 0], [3, 8, 7, 6, 10]])
    return ids, (ids != 0).long(), torch.zeros_like(ids)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    base = tmp_path_factory.mktemp("ortmodel")
    return {"cls": tiny_kernel_export(base / "cls"), "enc": tiny_kernel_export(base / "enc", head="none")}


def test_existing_optimum_code_runs_a_sparse_kernel_export(exports):
    ids, mask, types = _inputs()
    model = optimum_ort.ORTModelForSequenceClassification.from_pretrained(
        exports["cls"], session_options=session_options(exports["cls"], intra_op_threads=2))
    got = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
    want = ModelSession.load(exports["cls"]).run(feeds)["logits"]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)      # the export's logits
    with torch.no_grad():
        masked = build_reference_model(tiny_checkpoint(head="sequence-classification"))(ids, mask, types)
    torch.testing.assert_close(torch.as_tensor(np.asarray(got)), masked, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("weights, precision", [("sparse-kernel", "int8"), ("auto", "fp32")])
def test_the_other_kernel_variants_run_in_optimum(tmp_path, weights, precision):
    from smp_export.autotune import AutotuneConfig
    from smp_export.export import ExportOptions, export_onnx

    ckpt = tiny_checkpoint(head="sequence-classification")
    export_onnx(ckpt, tmp_path / "e", options=ExportOptions(weights=weights, precision=precision,
                                                             autotune=AutotuneConfig(tokens=(8,))))
    ids, mask, types = _inputs()
    got = load_ort_model(tmp_path / "e")(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
    np.testing.assert_allclose(np.asarray(got), ModelSession.load(tmp_path / "e").run(feeds)["logits"],
                               rtol=1e-6, atol=1e-6)


def test_options_passed_twice_register_the_library_once(exports):
    options = session_options(exports["cls"])
    assert session_options(exports["cls"], base=options) is options
    model = load_ort_model(exports["cls"], session_options=options)     # onnxruntime refuses a second registration
    ids, mask, types = _inputs()
    assert model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.shape == (2, 3)


def test_without_the_library_optimum_cannot_load_it(exports):
    with pytest.raises(Exception, match="ai.smp"):
        optimum_ort.ORTModelForSequenceClassification.from_pretrained(exports["cls"])


def test_load_ort_model_picks_the_class_from_the_outputs(exports):
    assert ort_model_class(exports["cls"]) == "ORTModelForSequenceClassification"
    encoder = load_ort_model(exports["enc"])
    assert type(encoder).__name__ == "ORTModelForFeatureExtraction"
    ids, mask, types = _inputs()
    hidden = encoder(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    with torch.no_grad():
        want = build_reference_model(tiny_checkpoint(head="none"))(ids, mask, types)
    torch.testing.assert_close(torch.as_tensor(np.asarray(hidden)), want, atol=1e-4, rtol=1e-4)


def test_a_directory_of_another_project_is_refused(exports, tmp_path):
    other = tmp_path / "optimum-export"
    other.mkdir()
    for name in ("model.onnx", "config.json"):
        (other / name).write_bytes((exports["cls"] / name).read_bytes())
    before = sorted(p.name for p in other.iterdir())
    for call in (session_options, load_ort_model):
        with pytest.raises(SessionError, match="not an smp-export directory: manifest.json is missing") as info:
            call(other)
        assert info.value.path.endswith("manifest.json")
    assert sorted(p.name for p in other.iterdir()) == before
    (exports["cls"] / "model.onnx").rename(tmp_path / "moved.onnx")
    try:
        with pytest.raises(SessionError, match="model.onnx not found"):
            session_options(exports["cls"])
    finally:
        (tmp_path / "moved.onnx").rename(exports["cls"] / "model.onnx")
