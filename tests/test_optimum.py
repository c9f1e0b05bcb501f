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


@pytest.mark.parametrize("head, weights, model_class, output", [
    ("sequence-classification", "sparse-initializer", "ORTModelForSequenceClassification", "logits"),
    ("sequence-classification", "compact", "ORTModelForSequenceClassification", "logits"),
    ("none", "sparse-initializer", "ORTModelForFeatureExtraction", "last_hidden_state"),
])
def test_exports_load_in_optimum(tmp_path, head, weights, model_class, output):
    ckpt = tiny_checkpoint(head=head)
    export_onnx(ckpt, tmp_path / "e", options=ExportOptions(weights=weights))
    model = getattr(optimum_ort, model_class).from_pretrained(tmp_path / "e")
    ids, mask, types = _inputs()
    got = getattr(model(input_ids=ids, attention_mask=mask, token_type_ids=types), output)
    with torch.no_grad():
        want = build_reference_model(ckpt)(ids, mask, types)
    torch.testing.assert_close(torch.as_tensor(np.asarray(got)), want, atol=1e-5, rtol=1e-5)
