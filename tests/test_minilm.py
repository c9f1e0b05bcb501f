"""One test on the real packaged all-MiniLM-L6-v2 (the embedded default model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.manifest import Manifest
from smp_export.default_model import default_model_dir, write_magnitude_mask_file
from smp_export.export import ExportOptions, export_onnx
from smp_export.readers import ReadOptions, read_checkpoint


def test_packaged_minilm_prunes_exports_and_validates(tmp_path):
    model_dir = default_model_dir()
    mask_file = write_magnitude_mask_file(model_dir, 0.1, tmp_path / "masks.npy")
    ckpt = read_checkpoint(model_dir, ReadOptions(mask_file=mask_file))
    assert ckpt.config.num_hidden_layers == 6 and ckpt.config.hidden_size == 384
    assert ckpt.density() == pytest.approx(0.1, abs=1e-3)
    # The magnitude masks keep the largest weights of every matrix.
    q = ckpt.weights["encoder.layer.0.attention.self.query.weight"].abs()
    m = ckpt.masks["encoder.layer.0.attention.self.query.weight"]
    assert q[m].min() >= q[~m].max()

    manifest = export_onnx(ckpt, tmp_path / "e", options=ExportOptions(weights="sparse-initializer"))
    assert manifest.validation.passed and manifest.validation.max_abs_diff < 1e-4
    assert manifest.output_names == ["last_hidden_state"]
    on_disk = Manifest.read(tmp_path / "e")
    assert on_disk.totals["linear_bytes"] < 0.35 * 4 * on_disk.totals["params"]

    from runtime.session import ModelSession
    session = ModelSession.load(tmp_path / "e")
    emb = session.embed(["The cat sits on the mat.", "A cat is sitting on a mat.", "Stock markets fell."])
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]      # still a sentence encoder at 90% sparsity
