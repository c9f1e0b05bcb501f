"""The variants table: what each entry declares, that the exporter runs what the entry says (a
new entry is all a new variant needs), and the handoffs refused before any work."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnx
import pytest

from runtime.manifest import Manifest
from smp_export.errors import ExportError
from smp_export.export import ExportOptions, export_onnx
from smp_export.variants import CPU, OPTIMUM, TRITON, VARIANTS, Variant, check_handoff, get_variant
from tests.helpers import tiny_checkpoint


def test_each_entry_declares_storage_devices_and_handoffs():
    assert list(VARIANTS) == ["dense", "sparse-initializer", "compact", "sparse-kernel", "auto"]
    for variant in VARIANTS.values():
        assert variant.stores and variant.attention in ("onnx", "smp")
        # A variant that needs the kernel library runs on the CPU only; every handoff loads every
        # variant (Triton and optimum get the library from runtime.server.triton / runtime.ortmodel).
        assert variant.needs_kernels == (variant.devices == (CPU,))
        assert variant.handoffs == {TRITON, OPTIMUM}
    assert [v.name for v in VARIANTS.values() if v.compacts] == ["compact", "sparse-kernel", "auto"]


def test_unknown_variant_names_the_option():
    with pytest.raises(ExportError, match="unknown weights variant 'fast'; choose from dense, ") as info:
        get_variant("fast")
    assert info.value.field == "--weights"
    with pytest.raises(ExportError, match="unknown weights variant"):
        export_onnx(tiny_checkpoint(), Path("/nonexistent/never-written"), options=ExportOptions(weights="fast"))


def test_a_new_entry_is_all_a_new_variant_needs(monkeypatch, tmp_path):
    """A variant made from the parts of others (compaction + fused MultiHeadAttention) exports,
    validates and is recorded under its own name, with no change to the exporter."""
    compact_mha = dataclasses.replace(VARIANTS["compact"], name="compact-mha", attention="mha",
                                      stores="compaction with onnxruntime's fused attention")
    monkeypatch.setitem(VARIANTS, compact_mha.name, compact_mha)
    ckpt = tiny_checkpoint(head="sequence-classification", keep=0.3)
    manifest = export_onnx(ckpt, tmp_path / "e", options=ExportOptions(weights="compact-mha"))
    assert manifest.validation.passed and manifest.weights == "compact-mha"
    assert {r.format for r in manifest.layers} == {"compact-mha"} and "heads_removed" in manifest.totals
    assert manifest.export_options == {"attention": "mha"}
    ops = [n.op_type for n in onnx.load(str(tmp_path / "e" / "model.onnx")).graph.node]
    assert ops.count("MultiHeadAttention") == ckpt.config.num_hidden_layers


def test_a_variant_brings_its_own_validation(monkeypatch, tmp_path):
    calls = []

    def validate(model_path, ckpt, config, libraries):
        calls.append((Path(model_path).name, config.atol, libraries))
        from smp_export.validate import validate_fp32

        return validate_fp32(model_path, ckpt, config, libraries)

    checked = Variant("checked", stores="dense, validated by its own function", validate=validate)
    monkeypatch.setitem(VARIANTS, "checked", checked)
    export_onnx(tiny_checkpoint(), tmp_path / "e", options=ExportOptions(weights="checked"))
    assert calls == [("model.onnx", 1e-4, ())]
    assert Manifest.read(tmp_path / "e").validation.passed


def test_a_variant_without_a_handoff_is_refused_before_any_work():
    from dataclasses import replace

    gpu_only = replace(VARIANTS["dense"], name="gpu-only", handoffs=frozenset({OPTIMUM}))
    with pytest.raises(ExportError, match="triton handoff cannot load the gpu-only variant; use one of dense") as info:
        check_handoff(gpu_only, TRITON)
    assert info.value.field == "--weights"
    check_handoff(VARIANTS["sparse-kernel"], TRITON)        # the library travels with the repository
