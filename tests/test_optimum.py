"""The exported directory loads in optimum's ORTModel classes (the supported-version promise)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smp_export.export import ExportOptions, export_onnx
from smp_export.reference import build_reference_model
from tests.helpers import tiny_checkpoint

optimum_ort = pytest.importorskip("optimum.onnxruntime")


def _inputs():
    ids = torch.tensor([[2, 5, 9, 4, 0], [3, 8, 7, 6, 10]])
    return ids, (ids != 0).long(), torch.zeros_like(ids)


@pytest.mark.parametrize("weights", ["sparse-initializer", "compact"])
def test_sequence_classification_loads_in_optimum(tmp_path, weights):
    ckpt = tiny_checkpoint(head="sequence-classification")
    export_onnx(ckpt, tmp_path / "e", options=ExportOptions(weights=weights))
    model = optimum_ort.ORTModelForSequenceClassification.from_pretrained(tmp_path / "e")
    ids, mask, types = _inputs()
    got = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    with torch.no_grad():
        want = build_reference_model(ckpt)(ids, mask, types)
    torch.testing.assert_close(torch.as_tensor(np.asarray(got)), want, atol=1e-5, rtol=1e-5)


def test_encoder_loads_in_optimum_feature_extraction(tmp_path):
    ckpt = tiny_checkpoint(head="none")
    export_onnx(ckpt, tmp_path / "e")
    model = optimum_ort.ORTModelForFeatureExtraction.from_pretrained(tmp_path / "e")
    ids, mask, types = _inputs()
    got = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    with torch.no_grad():
        want = build_reference_model(ckpt)(ids, mask, types)
    torch.testing.assert_close(torch.as_tensor(np.asarray(got)), want, atol=1e-5, rtol=1e-5)
