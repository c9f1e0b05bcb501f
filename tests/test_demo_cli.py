"""``make demo``'s export step (cli.demo): each variant in every precision it offers."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli.demo import main
from runtime.kernels import library_available


@pytest.mark.slow
@pytest.mark.skipif(not library_available(), reason="the ai.smp library is not built")
def test_demo_exports_fp32_and_int8_of_a_variant(tmp_path):
    result = CliRunner().invoke(main, ["-o", str(tmp_path), "--weights", "sparse-kernel,sparse-initializer",
                                       "--precisions", "fp32,int8"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    # sparse-initializer offers fp32 only; sparse-kernel both
    assert names == ["minilm-smp-s-0.10-sparse-initializer", "minilm-smp-s-0.10-sparse-kernel",
                     "minilm-smp-s-0.10-sparse-kernel-int8"]
    manifest = json.loads((tmp_path / "minilm-smp-s-0.10-sparse-kernel-int8" / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["weights"] == "sparse-kernel"
    assert "--precision int8" in result.output and "sparse-kernel-int8" in result.output
