"""The export pipeline end to end on tiny random checkpoints: variants, manifest, atomicity."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from runtime.manifest import Manifest
from smp_export.errors import OutputExistsError, ValidationError
from smp_export.export import ExportOptions, export_onnx
from smp_export.reference import build_reference_model
from smp_export.validate import ValidationConfig
from tests.helpers import tiny_checkpoint


def _run(directory, ids, mask, types):
    session = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]


@pytest.mark.parametrize("weights", ["dense", "sparse-initializer", "compact"])
@pytest.mark.parametrize("head", ["none", "sequence-classification", "smp-label-words"])
def test_every_variant_and_head_exports_and_validates(tmp_path, weights, head):
    ckpt = tiny_checkpoint(head=head, keep=0.3)
    out = tmp_path / "export"
    manifest = export_onnx(ckpt, out, options=ExportOptions(weights=weights))

    assert manifest.validation.passed and not manifest.validation.skipped
    assert manifest.validation.max_abs_diff <= 1e-4
    assert manifest.output_names == [ckpt.head.output_name]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "manifest.json", "model.onnx"]
    onnx.checker.check_model(str(out / "model.onnx"))
    on_disk = Manifest.read(out)
    assert on_disk.weights == weights
    assert on_disk.files["model.onnx"] == (out / "model.onnx").stat().st_size
    assert len(on_disk.layers) == 6 * ckpt.config.num_hidden_layers
    assert on_disk.totals["density"] == pytest.approx(ckpt.density())


def test_sparse_initializer_is_smaller_and_compaction_shrinks_matrices(tmp_path):
    ckpt = tiny_checkpoint(keep=0.1, hidden_size=64, intermediate_size=256)
    # Empty one whole FFN neuron (its output column) and one head (its value rows).
    masks = dict(ckpt.masks)
    masks["encoder.layer.0.output.dense.weight"][:, 3] = False
    masks["encoder.layer.1.attention.self.value.weight"][:16] = False
    ckpt = replace(ckpt, masks=masks)
    sizes = {}
    for weights in ("dense", "sparse-initializer", "compact"):
        m = export_onnx(ckpt, tmp_path / weights, options=ExportOptions(weights=weights))
        sizes[weights] = m.files["model.onnx"]
        if weights == "compact":
            assert m.totals["heads_removed"] >= 1 and m.totals["neurons_removed"] >= 1
            assert m.totals["stored_params"] < m.totals["params"]
    assert sizes["sparse-initializer"] < sizes["dense"]
    assert sizes["compact"] < sizes["dense"]


def test_export_matches_reference_on_padded_batch(tmp_path):
    ckpt = tiny_checkpoint(head="sequence-classification", keep=0.5)
    export_onnx(ckpt, tmp_path / "e", options=ExportOptions(weights="compact"))
    ids = np.array([[2, 5, 9, 4, 0, 0], [3, 8, 7, 6, 10, 11]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    types = np.zeros_like(ids)
    got = _run(tmp_path / "e", ids, mask, types)
    with torch.no_grad():
        want = build_reference_model(ckpt)(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types))
    torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=1e-5)


def test_existing_output_is_refused_then_overwritten(tmp_path):
    ckpt = tiny_checkpoint()
    out = tmp_path / "e"
    out.mkdir()
    (out / "keep-me.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_onnx(ckpt, out)
    assert (out / "keep-me.txt").exists()
    export_onnx(ckpt, out, options=ExportOptions(overwrite=True))
    assert not (out / "keep-me.txt").exists() and (out / "model.onnx").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["e"]   # no temporary leftovers


def test_failed_validation_leaves_no_partial_output(tmp_path, monkeypatch):
    ckpt = tiny_checkpoint()
    import smp_export.export as export_module

    real_build = export_module.build_onnx_model

    def broken_build(config, weights, head, **kwargs):
        weights = dict(weights)
        name = "encoder.layer.0.attention.self.query.bias"
        weights[name] = weights[name] + 1.0
        return real_build(config, weights, head, **kwargs)

    monkeypatch.setattr(export_module, "build_onnx_model", broken_build)
    with pytest.raises(ValidationError) as info:
        export_onnx(ckpt, tmp_path / "e")
    assert info.value.max_abs_diff > 1e-4
    assert list(tmp_path.iterdir()) == []


def test_no_validate_is_recorded_as_skipped(tmp_path):
    manifest = export_onnx(tiny_checkpoint(), tmp_path / "e", options=ExportOptions(validate=False))
    assert manifest.validation.skipped and not manifest.validation.passed
    assert json.loads((tmp_path / "e" / "manifest.json").read_text())["validation"]["skipped"] is True


def test_tolerance_is_configurable(tmp_path):
    options = ExportOptions(validation=ValidationConfig(atol=1e-12))
    with pytest.raises(ValidationError, match="max"):
        export_onnx(tiny_checkpoint(keep=0.9), tmp_path / "e", options=options)


def test_manifest_records_exporter_source_and_options(tmp_path):
    """The manifest names the code (source digest) and options that made the graph, which is
    what smp-bench's cache compares before reusing an export."""
    from smp_export.autotune import AutotuneConfig
    from smp_export.versions import SOURCE_DIGEST_KEY, source_digest

    ckpt = tiny_checkpoint()
    dense = export_onnx(ckpt, tmp_path / "d", options=ExportOptions(weights="dense"))
    assert dense.versions[SOURCE_DIGEST_KEY] == source_digest() and len(source_digest()) == 12
    assert dense.export_options == {"attention": "onnx"}
    auto = export_onnx(ckpt, tmp_path / "a", options=ExportOptions(
        weights="auto", autotune=AutotuneConfig(tokens=(16,), repeats=1, warmup=0)))
    assert auto.export_options == {"attention": "smp", "autotune_tokens": [16]}
    assert Manifest.read(tmp_path / "a").export_options == auto.export_options
