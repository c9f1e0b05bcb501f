"""config.json fuzzed (hypothesis): every value of every size, eps or activation field either
reads, or fails with the typed error naming config.json; never another exception, a traceback
or output left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.export import main as export_main
from runtime.errors import SmpError
from smp_export.readers import read_checkpoint
from tests.fixtures import write_dense_zero_checkpoint

FIELDS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size",
          "type_vocab_size", "max_position_embeddings", "layer_norm_eps", "hidden_act", "num_labels", "id2label")
VALUES = st.one_of(
    st.integers(-3, 3), st.integers(-2**70, 2**70), st.sampled_from([10**9, 2**31, 2**63, 64, 32, 128, 37]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), st.booleans(), st.none(),
    st.lists(st.integers(-5, 5), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(0, 5), max_size=2))
CHANGES = st.dictionaries(st.sampled_from(FIELDS), VALUES, min_size=1, max_size=3)


def _fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_dense_zero_checkpoint(tmp_path_factory.mktemp("fuzz") / "m").path


def _with_config(model_dir: Path, target: Path, changes: dict) -> Path:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(model_dir, target)
    cfg = json.loads((target / "config.json").read_text())
    cfg.update(changes)
    (target / "config.json").write_text(json.dumps(cfg))   # NaN / Infinity as Python's json writes them
    return target


@_fuzz(250)
@given(changes=CHANGES)
def test_read_succeeds_or_names_config_json(model_dir, tmp_path, changes):
    path = _with_config(model_dir, tmp_path / "case", changes)
    try:
        read_checkpoint(path)
    except SmpError as exc:
        assert "config.json" in str(exc), str(exc)
        assert exc.exit_code == 2


@_fuzz(12)
@given(changes=CHANGES)
def test_export_cli_fails_cleanly(model_dir, tmp_path, changes):
    path = _with_config(model_dir, tmp_path / "case", changes)
    out = tmp_path / "out"
    if out.exists():
        shutil.rmtree(out)
    result = CliRunner().invoke(export_main, [str(path), "-o", str(out), "--weights", "dense", "--no-validate"],
                                catch_exceptions=False)
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        assert "config.json" in result.output and "Traceback" not in result.output
        assert not out.exists()
    assert not list(tmp_path.glob(".out.tmp-*"))
