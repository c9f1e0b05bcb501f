"""A compact export of structured masks needs no custom operator: Triton's repository config
parses with Triton's own protobuf, optimum loads it, and both compute the masked model."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format

from runtime.contract import MODEL_FILE
from runtime.server.triton import TritonOptions, write_model_repository
from smp_export.export import ExportOptions, export_onnx
from smp_export.reference import build_reference_model
from smp_export.structure import Granularity, score_shapes, structured_masks
from tests.helpers import tiny_checkpoint

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
optimum_ort = pytest.importorskip("optimum.onnxruntime")


@pytest.fixture(scope="module")
def structured_export(tmp_path_factory):
    ckpt = tiny_checkpoint(head="sequence-classification")
    g = Granularity.parse("structured")
    gen = torch.Generator().manual_seed(3)
    scores = {k: torch.randn(s, generator=gen) for k, s in score_shapes(g, ckpt.dims).items()}
    ckpt.masks = structured_masks(g, "smp-l", scores, 0.4, ckpt.dims, head_keep=0.5)
    out = tmp_path_factory.mktemp("structured") / "compact"
    manifest = export_onnx(ckpt, out, options=ExportOptions(weights="compact"))
    return ckpt, out, manifest


def _inputs():
    ids = torch.tensor([[2, 5, 9, 4, 0], [3, 8, 7, 6, 10]])
    return ids, (ids != 0).long(), torch.zeros_like(ids)


def test_compaction_removed_the_pruned_units(structured_export):
    _, _, manifest = structured_export
    assert manifest.totals["heads_removed"] == 2 * 2 and manifest.totals["neurons_removed"] > 0
    assert manifest.custom_op_domains == [] and manifest.validation.passed


def test_triton_repository_of_the_structured_export(structured_export, tmp_path):
    _, export_dir, _ = structured_export
    model_dir = write_model_repository(export_dir, tmp_path / "repo", "structured", TritonOptions(max_batch_size=8))
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.backend == "onnxruntime" and config.max_batch_size == 8
    assert [i.name for i in config.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert config.output[0].name == "logits" and not config.model_operations.op_library_filename
    ids, mask, types = _inputs()
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
    repo_model = next(model_dir.glob(f"*/{MODEL_FILE}"))
    got = ort.InferenceSession(str(repo_model), providers=["CPUExecutionProvider"]).run(["logits"], feeds)[0]
    want = ort.InferenceSession(str(export_dir / MODEL_FILE), providers=["CPUExecutionProvider"]).run(
        ["logits"], feeds)[0]
    np.testing.assert_array_equal(got, want)


def test_optimum_loads_the_structured_export(structured_export):
    ckpt, export_dir, _ = structured_export
    model = optimum_ort.ORTModelForSequenceClassification.from_pretrained(export_dir)
    ids, mask, types = _inputs()
    got = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    with torch.no_grad():
        want = build_reference_model(ckpt)(ids, mask, types)
    torch.testing.assert_close(torch.as_tensor(np.asarray(got)), want, atol=1e-5, rtol=1e-5)
