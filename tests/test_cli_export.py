"""``smp-export`` through click's runner: every input format end to end, and bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli.export import main
from runtime.manifest import Manifest
from tests.fixtures import (write_dense_base, write_dense_zero_checkpoint, write_movement_checkpoint, write_packed_mask,
                            write_smp_checkpoint, write_torch_prune_checkpoint)
from tests.helpers import random_masks


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def test_smp_checkpoint_with_label_words(tmp_path):
    w = write_smp_checkpoint(tmp_path / "mnli_smp_0.10_run", label_words=("yes", "no"))
    out = tmp_path / "out"
    result = _ok(_invoke(w.path, "--format", "onnx", "-o", out, "--label-words", "yes,no"))
    assert "validation     : passed" in result.output and "labels agree: True" in result.output
    manifest = Manifest.read(out)
    assert manifest.source_format == "smp" and manifest.method == "smp-l"
    assert manifest.head["kind"] == "smp-label-words" and len(manifest.head["label_token_ids"]) == 2
    assert manifest.totals["density"] == pytest.approx(0.10, abs=0.01)   # keep parsed from the name
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert" and len(config["id2label"]) == 2
    assert (out / "vocab.txt").is_file()


def test_smp_s_from_flag_and_keep_from_sparsity(tmp_path):
    w = write_smp_checkpoint(tmp_path / "run", head="sequence-classification")
    out = tmp_path / "out"
    _ok(_invoke(w.path, "-o", out, "--sparsity", "0.8", "--smp-s", "--weights", "compact"))
    manifest = Manifest.read(out)
    assert manifest.method == "smp-s" and manifest.weights == "compact"
    densities = {r.density for r in manifest.layers}
    assert len(densities) > 1                      # SMP-S: per-matrix ratios differ


def test_packed_mask_over_dense_base(tmp_path):
    w = write_dense_base(tmp_path / "base", head="sequence-classification")
    masks = random_masks(w.config, w.weights, keep=0.25)
    write_packed_mask(tmp_path / "m.npy", masks)
    out = tmp_path / "out"
    _ok(_invoke(w.path, "--mask", tmp_path / "m.npy", "-o", out))
    manifest = Manifest.read(out)
    assert manifest.source_format == "packed"
    assert manifest.totals["density"] == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize("method,extra", [("topK", ["--threshold", "0.3"]),
                                          ("sigmoied_threshold", ["--threshold", "0.5"]),
                                          ("l0", []), ("magnitude", ["--threshold", "0.2"])])
def test_movement_pruning_checkpoints(tmp_path, method, extra):
    w = write_movement_checkpoint(tmp_path / "mp", method)
    _ok(_invoke(w.path, "-o", tmp_path / "out", *extra))
    assert Manifest.read(tmp_path / "out").method == f"movement-{method}"


def test_torch_prune_and_dense_zero_checkpoints(tmp_path):
    for name, writer in (("tp", write_torch_prune_checkpoint), ("dz", write_dense_zero_checkpoint)):
        w = writer(tmp_path / name)
        _ok(_invoke(w.path, "-o", tmp_path / f"out-{name}", "--weights", "dense"))
    assert Manifest.read(tmp_path / "out-tp").source_format == "torch_prune"
    assert Manifest.read(tmp_path / "out-dz").source_format == "dense"


def test_forced_input_format(tmp_path):
    w = write_dense_zero_checkpoint(tmp_path / "dz")
    _ok(_invoke(w.path, "-o", tmp_path / "out", "--input-format", "dense"))
    result = _invoke(w.path, "-o", tmp_path / "out2", "--input-format", "nosuch")
    assert result.exit_code == 2 and "unknown input format 'nosuch'" in result.output
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("case", ["missing-dir", "missing-config", "unknown-format", "bad-keep",
                                  "missing-threshold", "corrupt-weights", "exists"])
def test_bad_input_exits_nonzero_and_writes_nothing(tmp_path, case):
    out = tmp_path / "out"
    args = []
    if case == "missing-dir":
        model, expect = tmp_path / "nope", "does not exist"
    elif case == "missing-config":
        model = write_dense_zero_checkpoint(tmp_path / "m").path
        (model / "config.json").unlink()
        expect = "config.json"
    elif case == "unknown-format":
        model = tmp_path / "junk"
        model.mkdir()
        (model / "notes.txt").write_text("hello")
        expect = "no reader recognises"
    elif case == "bad-keep":
        model = write_smp_checkpoint(tmp_path / "run", head="sequence-classification").path
        args, expect = ["--keep", "1.5"], "keep ratio must be in (0, 1]"
    elif case == "missing-threshold":
        model, expect = write_movement_checkpoint(tmp_path / "mp", "topK").path, "--threshold"
    elif case == "corrupt-weights":
        model = write_dense_zero_checkpoint(tmp_path / "m").path
        weights = next(p for p in model.iterdir() if p.suffix in (".safetensors", ".bin"))
        weights.write_bytes(weights.read_bytes()[:100])
        expect = weights.name
    else:
        model = write_dense_zero_checkpoint(tmp_path / "m").path
        out.mkdir()
        expect = "--overwrite"
    before = sorted(p.name for p in tmp_path.iterdir())
    result = _invoke(model, "-o", out, *args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and expect in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before   # no partial output, no temp dirs


@pytest.mark.parametrize("attention, weights, node", [("auto", "compact", None), ("mha", "compact", "MultiHeadAttention"),
                                                     ("smp", "compact", "Attention"), ("onnx", "sparse-kernel", None),
                                                     ("auto", "sparse-kernel", "Attention")])
def test_attention_option(tmp_path, attention, weights, node):
    w = write_smp_checkpoint(tmp_path / "run", head="sequence-classification")
    out = tmp_path / "out"
    _ok(_invoke(w.path, "-o", out, "--keep", "0.3", "--weights", weights, "--attention", attention))
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert (node is None or node in ops) and ("Softmax" in ops) is (node is None)
    manifest = Manifest.read(out)
    expected = {"MultiHeadAttention": "mha", "Attention": "smp", None: "onnx"}[node]
    assert manifest.export_options["attention"] == expected and manifest.validation.passed
    assert ("ai.smp" in manifest.custom_op_domains) is (node == "Attention" or weights == "sparse-kernel")


def test_without_output_it_writes_beside_the_current_directory_and_never_overwrites(tmp_path, monkeypatch):
    """``smp-export MODEL_DIR --format onnx``, the command users are given, needs no -o."""
    model = write_dense_zero_checkpoint(tmp_path / "tiny-bert").path
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = _ok(_invoke(model, "--format", "onnx", "--weights", "compact"))
    assert f"-> {work / 'tiny-bert-onnx'}" in result.output
    assert Manifest.read(work / "tiny-bert-onnx").weights == "compact"
    again = _invoke(model, "--format", "onnx")
    assert again.exit_code == 2 and "output directory exists (use --overwrite" in again.output
    assert Manifest.read(work / "tiny-bert-onnx").weights == "compact"       # untouched
    _ok(_invoke(model, "--overwrite"))
    assert Manifest.read(work / "tiny-bert-onnx").weights == "sparse-initializer"
