"""Bad inputs: each raises a typed error whose message names the file and/or the field."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from smp_export.errors import CheckpointError, MaskError, UnknownFormatError
from smp_export.readers import ReadOptions, detect_format, read_checkpoint
from tests.fixtures import (write_dense_base, write_dense_zero_checkpoint, write_movement_checkpoint, write_packed_mask,
                            write_smp_checkpoint, write_torch_prune_checkpoint)
from tests.helpers import random_masks

WORDS = ReadOptions(label_words=("yes", "no"))
QUERY0 = "bert.encoder.layer.0.attention.self.query.mask_scores"


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope: model directory does not exist"):
        read_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope", input_format="dense")


def test_missing_config(tmp_path):
    w = write_dense_zero_checkpoint(tmp_path / "m")
    (w.path / "config.json").unlink()
    with pytest.raises(UnknownFormatError, match="no reader recognises"):
        read_checkpoint(w.path)
    with pytest.raises(CheckpointError, match=r"m/config.json: config.json not found"):
        read_checkpoint(w.path, input_format="dense")


def test_invalid_config_json_and_missing_field(tmp_path):
    w = write_dense_zero_checkpoint(tmp_path / "m")
    cfg = json.loads((w.path / "config.json").read_text())
    del cfg["num_hidden_layers"]
    (w.path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config.json: field 'num_hidden_layers'"):
        read_checkpoint(w.path)
    (w.path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config.json: cannot parse config.json"):
        read_checkpoint(w.path)


def test_unknown_format(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "weights.dat").write_bytes(np.random.default_rng(0).bytes(256))
    (junk / "notes.txt").write_text("hello")
    with pytest.raises(UnknownFormatError, match=r"junk: no reader recognises this directory.*--input-format"):
        detect_format(junk)


def test_no_weight_file(tmp_path):
    w = write_dense_zero_checkpoint(tmp_path / "m")
    (w.path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weight file"):
        read_checkpoint(w.path, input_format="dense")


@pytest.mark.parametrize("safetensors", [True, False])
def test_mask_score_shape_mismatch(tmp_path, safetensors):
    def shrink(state):
        state[QUERY0] = state[QUERY0][:, :-1].clone()
    w = write_smp_checkpoint(tmp_path / "r_0.3", safetensors=safetensors, mutate=shrink)
    file = "model.safetensors" if safetensors else "pytorch_model.bin"
    with pytest.raises(MaskError, match=rf"{file}: field '{QUERY0}': shape \(32, 31\) does not match"):
        read_checkpoint(w.path, WORDS)


def test_missing_mask_scores(tmp_path):
    w = write_movement_checkpoint(tmp_path / "m", "topK", mutate=lambda s: s.pop(QUERY0))
    with pytest.raises(MaskError, match=rf"pytorch_model.bin: field '{QUERY0}': mask scores missing"):
        read_checkpoint(w.path, ReadOptions(threshold=0.1))


def test_torch_prune_mask_shape_and_values(tmp_path):
    w = write_torch_prune_checkpoint(tmp_path / "tp")
    state = torch.load(w.path / "pytorch_model.bin", weights_only=True)
    key = "bert.encoder.layer.0.output.dense.weight_mask"
    state[key] = state[key] * 0.5
    torch.save(state, w.path / "pytorch_model.bin")
    with pytest.raises(MaskError, match=rf"pytorch_model.bin: field '{key}': pruning mask must hold only 0 and 1"):
        read_checkpoint(w.path)
    state[key] = torch.ones(3, 3)
    torch.save(state, w.path / "pytorch_model.bin")
    with pytest.raises(MaskError, match=rf"field '{key}': shape \(3, 3\) does not match"):
        read_checkpoint(w.path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_scores(tmp_path, bad):
    def poison(state):
        state[QUERY0][0, 0] = bad
    w = write_smp_checkpoint(tmp_path / "r_0.3", mutate=poison)
    with pytest.raises(MaskError, match=rf"pytorch_model.bin: field '{QUERY0}': 1 non-finite"):
        read_checkpoint(w.path, WORDS)
    m = write_movement_checkpoint(tmp_path / "mv", "sigmoied_threshold", mutate=poison)
    with pytest.raises(MaskError, match="non-finite"):
        read_checkpoint(m.path, ReadOptions(threshold=0.5))


@pytest.mark.parametrize("keep", [0, 1.5, -0.1, float("nan")])
def test_keep_ratio_out_of_range(tmp_path, keep):
    w = write_smp_checkpoint(tmp_path / "r_0.3")
    with pytest.raises(MaskError, match=r"field '--keep': keep ratio must be in \(0, 1\]"):
        read_checkpoint(w.path, ReadOptions(keep=keep, label_words=("yes", "no")))
    m = write_movement_checkpoint(tmp_path / "mv", "topK")
    with pytest.raises(MaskError, match=r"field '--threshold': keep ratio must be in \(0, 1\]"):
        read_checkpoint(m.path, ReadOptions(threshold=keep))


def test_keep_from_directory_name_out_of_range(tmp_path):
    w = write_smp_checkpoint(tmp_path / "r_0.0_s1")
    with pytest.raises(MaskError, match=r"r_0.0_s1: field 'directory name': keep ratio must be in"):
        read_checkpoint(w.path, WORDS)


def test_missing_keep_for_smp(tmp_path):
    w = write_smp_checkpoint(tmp_path / "run")
    with pytest.raises(MaskError, match=r"run: field '--keep': no final keep ratio: pass --keep"):
        read_checkpoint(w.path, WORDS)


def test_missing_threshold_for_movement(tmp_path):
    w = write_movement_checkpoint(tmp_path / "m", "sigmoied_threshold")
    with pytest.raises(MaskError, match=r"m: field '--threshold': pruning_method 'sigmoied_threshold' needs"):
        read_checkpoint(w.path)


def test_unsupported_pruning_method(tmp_path):
    w = write_movement_checkpoint(tmp_path / "m", "topK")
    cfg = json.loads((w.path / "config.json").read_text())
    cfg["pruning_method"] = "hardconcrete"
    (w.path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config.json: field 'pruning_method': unsupported"):
        read_checkpoint(w.path, ReadOptions(threshold=0.1), input_format="movement")


def test_missing_label_words(tmp_path):
    w = write_smp_checkpoint(tmp_path / "r_0.3")
    with pytest.raises(CheckpointError, match=r"r_0.3: field '--label-words': the checkpoint has SMP's MLM head"):
        read_checkpoint(w.path)


@pytest.mark.parametrize("words,message", [(("greatness",), r"tokenises to \['great', '##ness'\]"),
                                           (("qwertyuiop",), r"tokenises to \['\[UNK\]'\]"),
                                           (("9999",), r"label token id 9999 outside the vocabulary")])
def test_bad_label_words(tmp_path, words, message):
    w = write_smp_checkpoint(tmp_path / "r_0.3")
    with pytest.raises(MaskError, match=rf"field '--label-words': .*{message}"):
        read_checkpoint(w.path, ReadOptions(label_words=words))


def test_label_words_without_tokenizer(tmp_path):
    w = write_smp_checkpoint(tmp_path / "r_0.3", tokenizer=False)
    with pytest.raises(CheckpointError, match=r"field '--label-words': label word 'yes' needs a tokenizer"):
        read_checkpoint(w.path, WORDS)
    assert read_checkpoint(w.path, ReadOptions(label_words=("5", "6"))).head.label_words == ("5", "6")


@pytest.fixture
def packed_setup(tmp_path):
    base = write_dense_base(tmp_path / "base", num_layers=1, hidden_size=3, num_attention_heads=1,
                            intermediate_size=5)  # 66 bits: 9 bytes with 6 padding bits
    masks = random_masks(base.config, base.weights, 0.5)
    return base, masks


def test_packed_wrong_bit_count(tmp_path, packed_setup):
    base, masks = packed_setup
    bits = write_packed_mask(tmp_path / "m.npy", masks)
    assert bits == 66
    np.save(tmp_path / "short.npy", np.load(tmp_path / "m.npy")[:-1])
    with pytest.raises(MaskError, match=r"short.npy: field '--mask': wrong bit count: .* need 66 bits "
                                        r"\(9 bytes\), the file holds 64 bits"):
        read_checkpoint(base.path, ReadOptions(mask_file=tmp_path / "short.npy"))
    other = write_dense_base(tmp_path / "other", num_layers=2)
    with pytest.raises(MaskError, match="wrong bit count"):
        read_checkpoint(other.path, ReadOptions(mask_file=tmp_path / "m.npy"))


def test_packed_nonzero_padding_bits(tmp_path, packed_setup):
    base, masks = packed_setup
    write_packed_mask(tmp_path / "m.npy", masks)
    packed = np.load(tmp_path / "m.npy")
    packed[-1] |= 0b1
    np.save(tmp_path / "pad.npy", packed)
    with pytest.raises(MaskError, match=r"pad.npy: field '--mask': padding bits after bit 66"):
        read_checkpoint(base.path, ReadOptions(mask_file=tmp_path / "pad.npy"))


@pytest.mark.parametrize("content", ["corrupt", "empty", "float", "2d", "missing"])
def test_packed_unreadable_or_wrong_type(tmp_path, packed_setup, content):
    base, _ = packed_setup
    path = tmp_path / "m.npy"
    if content == "corrupt":
        path.write_bytes(b"\x93NUMPY garbage" * 3)
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "float":
        np.save(path, np.zeros(9, dtype=np.float32))
    elif content == "2d":
        np.save(path, np.zeros((3, 3), dtype=np.uint8))
    error = CheckpointError if content == "missing" else MaskError
    with pytest.raises(error, match=r"m.npy: field '--mask'"):
        read_checkpoint(base.path, ReadOptions(mask_file=path))


@pytest.mark.parametrize("writer,file", [
    (lambda p: write_dense_zero_checkpoint(p / "m", safetensors=True), "model.safetensors"),
    (lambda p: write_dense_zero_checkpoint(p / "m", safetensors=False), "pytorch_model.bin"),
    (lambda p: write_smp_checkpoint(p / "m_0.2", safetensors=True), "model.safetensors"),
    (lambda p: write_torch_prune_checkpoint(p / "m"), "pytorch_model.bin"),
])
def test_truncated_weight_file(tmp_path, writer, file):
    w = writer(tmp_path)
    data = (w.path / file).read_bytes()
    (w.path / file).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{file}: cannot read weight file \(truncated or corrupt\?\)"):
        read_checkpoint(w.path, WORDS)


def test_corrupt_bin_file(tmp_path):
    w = write_dense_zero_checkpoint(tmp_path / "m", safetensors=False)
    (w.path / "pytorch_model.bin").write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: cannot read weight file"):
        read_checkpoint(w.path, input_format="dense")
