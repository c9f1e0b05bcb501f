"""Round trips of every input format: what the fixture writers put on disk, the readers get back."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import torch

from smp_export.checkpoint import MATRIX_TYPES, linear_weight_names, parse_linear_name
from smp_export.errors import UnknownFormatError
from smp_export.readers import ReadOptions, available_formats, detect_format, get_reader, read_checkpoint
from tests.fixtures import (packed_key, ref_smp_masks, ref_smp_s_ratios, ref_threshold, ref_topk, write_dense_base,
                            write_dense_zero_checkpoint, write_movement_checkpoint, write_packed_mask,
                            write_smp_checkpoint, write_torch_prune_checkpoint)
from tests.helpers import random_masks

WORDS = ReadOptions(label_words=("yes", "no"))


def assert_masks_equal(got: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    assert set(got) == set(expected)
    for name in expected:
        assert got[name].dtype == torch.bool, name
        assert torch.equal(got[name], expected[name].bool()), name


def assert_canonical(ckpt) -> None:
    assert not any(n.startswith("bert.") or n.endswith("mask_scores") for n in ckpt.weights)
    assert all(t.dtype == torch.float32 for t in ckpt.weights.values() if t.is_floating_point())
    assert list(ckpt.masks) == linear_weight_names(ckpt.config.num_hidden_layers)


def test_registry_priority_order():
    assert available_formats() == ["shipped", "packed", "smp", "movement", "torch_prune", "dense"]


# --------------------------------------------------------------------------- SMP


def test_smp_l_round_trip_keep_from_directory_name(tmp_path):
    w = write_smp_checkpoint(tmp_path / "mnli_0.25_s1", keep=0.25)
    ckpt = read_checkpoint(w.path, WORDS)
    assert (ckpt.source_format, ckpt.method) == ("smp", "smp-l")
    assert ckpt.metadata["keep"] == 0.25 and ckpt.metadata["keep_source"] == "directory name"
    assert_masks_equal(ckpt.masks, w.masks)
    assert all(int(m.sum()) == int(0.25 * m.numel()) for m in ckpt.masks.values())
    assert_canonical(ckpt)
    assert ckpt.head.kind == "smp-label-words" and ckpt.head.label_token_ids == (5, 6)
    assert ckpt.head.label_words == ("yes", "no")
    assert ckpt.tokenizer_dir == w.path
    assert torch.equal(ckpt.weights["encoder.layer.1.output.dense.weight"],
                       w.weights["encoder.layer.1.output.dense.weight"])


def test_smp_s_round_trip_mag_in_name_safetensors_tied_decoder(tmp_path):
    w = write_smp_checkpoint(tmp_path / "sst2_0.1_mag_s1", keep=0.1, smp_s=True, safetensors=True)
    ckpt = read_checkpoint(w.path, ReadOptions(label_words=("5", "8")))
    assert ckpt.method == "smp-s"
    assert_masks_equal(ckpt.masks, w.masks)
    assert ckpt.metadata["keep_ratios"] == ref_smp_s_ratios(w.scores, 0.1)
    for matrix_type in MATRIX_TYPES:
        ratios = [r for n, r in ckpt.metadata["keep_ratios"].items() if parse_linear_name(n)[1] == matrix_type]
        assert sum(ratios) / len(ratios) == pytest.approx(0.1)
    assert ckpt.head.label_token_ids == (5, 8) and ckpt.head.label_words == ("yes", "terrible")
    assert torch.equal(ckpt.weights["cls.predictions.decoder.weight"], w.weights["embeddings.word_embeddings.weight"])
    assert torch.equal(ckpt.weights["cls.predictions.bias"], w.weights["cls.predictions.bias"])
    assert "cls.predictions.decoder.bias" not in ckpt.weights


def test_smp_s_forced_with_temperature_and_smp_l_forced(tmp_path):
    w = write_smp_checkpoint(tmp_path / "run_0.3", keep=0.3)
    ckpt = read_checkpoint(w.path, ReadOptions(smp_s=True, smp_s_temperature=2.0, label_words=("yes", "no")))
    assert ckpt.method == "smp-s" and ckpt.metadata["temperature"] == 2.0
    assert_masks_equal(ckpt.masks, ref_smp_masks(w.scores, 0.3, smp_s=True, temperature=2.0))
    mag = write_smp_checkpoint(tmp_path / "run_0.3_mag", keep=0.3)
    assert read_checkpoint(mag.path, ReadOptions(smp_s=False, label_words=("yes", "no"))).method == "smp-l"


def test_keep_option_overrides_directory_name(tmp_path):
    w = write_smp_checkpoint(tmp_path / "mnli_0.25")
    ckpt = read_checkpoint(w.path, ReadOptions(keep=0.5, label_words=("yes", "no")))
    assert ckpt.metadata["keep_source"] == "--keep"
    assert_masks_equal(ckpt.masks, {n: ref_topk(s, 0.5) for n, s in w.scores.items()})


def test_keep_from_config_field(tmp_path):
    w = write_smp_checkpoint(tmp_path / "run", config_extra={"keep_ratio": 0.2})
    ckpt = read_checkpoint(w.path, WORDS)
    assert ckpt.metadata["keep_source"] == "keep_ratio" and ckpt.metadata["keep"] == 0.2


def test_own_smp_train_format(tmp_path):
    w = write_smp_checkpoint(tmp_path / "out", keep=0.15, smp_s=True, temperature=0.5, own_format=True,
                             safetensors=True, label_words=("great", "terrible"))
    assert detect_format(w.path) == "smp"
    ckpt = read_checkpoint(w.path)
    assert ckpt.method == "smp-s" and ckpt.metadata["temperature"] == 0.5
    assert ckpt.metadata["keep_source"] == "smp.keep"
    assert_masks_equal(ckpt.masks, w.masks)
    assert ckpt.head.label_token_ids == w.label_token_ids == (7, 8)


def test_smp_sequence_classification_head(tmp_path):
    w = write_smp_checkpoint(tmp_path / "rte_0.4", head="sequence-classification", keep=0.4, tokenizer=False)
    ckpt = read_checkpoint(w.path, input_format="smp")
    assert ckpt.head.kind == "sequence-classification" and ckpt.config.num_labels == 3
    assert ckpt.tokenizer_dir is None
    assert_masks_equal(ckpt.masks, w.masks)


def test_checkpoint_subdirectory_with_smallest_step(tmp_path, caplog):
    run = tmp_path / "qqp_0.2_s1"
    write_smp_checkpoint(run / "checkpoint-200", seed=1)
    early = write_smp_checkpoint(run / "checkpoint-100", seed=2, keep=0.2)
    (run / "config.json").write_text((early.path / "config.json").read_text())
    assert detect_format(run) == "smp"
    with caplog.at_level("WARNING"):
        ckpt = read_checkpoint(run, WORDS)
    assert ckpt.metadata["checkpoint"] == "checkpoint-100" and "checkpoint-100" in caplog.text
    assert_masks_equal(ckpt.masks, early.masks)


# --------------------------------------------------------------------------- movement pruning


@pytest.mark.parametrize("method,threshold", [("topK", 0.2), ("sigmoied_threshold", 0.7),
                                              ("threshold", 0.8), ("magnitude", 0.35)])
def test_movement_round_trip(tmp_path, method, threshold):
    w = write_movement_checkpoint(tmp_path / method, method)
    ckpt = read_checkpoint(w.path, ReadOptions(threshold=threshold))
    assert (ckpt.source_format, ckpt.method) == ("movement", f"movement-{method}")
    if method == "topK":
        expected = {n: ref_topk(s, threshold) for n, s in w.scores.items()}
    elif method == "magnitude":
        expected = {n: ref_topk(w.weights[n].abs(), threshold) for n in linear_weight_names(2)}
    else:
        expected = {n: ref_threshold(s, threshold, method == "sigmoied_threshold") for n, s in w.scores.items()}
    assert_masks_equal(ckpt.masks, expected)
    assert_canonical(ckpt)
    assert ckpt.head.kind == "sequence-classification" and ckpt.config.num_labels == 2


def test_movement_threshold_minimum_rule_applies(tmp_path):
    w = write_movement_checkpoint(tmp_path / "m", "sigmoied_threshold")
    ckpt = read_checkpoint(w.path, ReadOptions(threshold=0.9999))
    for name, mask in ckpt.masks.items():
        assert int(mask.sum()) == int(0.005 * mask.numel()) + 1, name


def test_movement_l0_folds_soft_mask(tmp_path):
    w = write_movement_checkpoint(tmp_path / "l0", "l0", score_scale=3.0)
    ckpt = read_checkpoint(w.path)  # l0 needs no threshold
    for name, scores in w.scores.items():
        soft = (torch.sigmoid(scores) * 1.2 - 0.1).clamp(0, 1)
        assert torch.allclose(ckpt.weights[name], w.weights[name] * soft)
        assert torch.equal(ckpt.masks[name], soft > 0)
        assert 0 < int(ckpt.masks[name].sum()) < scores.numel()
    masked = ckpt.masked_weights()
    assert torch.allclose(masked[name], w.weights[name] * soft)


# --------------------------------------------------------------------------- packed bits


def test_packed_round_trip_sequence_classification(tmp_path):
    base = write_dense_base(tmp_path / "base", head="sequence-classification")
    masks = random_masks(base.config, base.weights, 0.1)
    bits = write_packed_mask(tmp_path / "mask.npy", masks)
    ckpt = read_checkpoint(base.path, ReadOptions(mask_file=tmp_path / "mask.npy"))
    assert (ckpt.source_format, ckpt.method) == ("packed", "packed-bits")
    assert bits == sum(m.numel() for m in masks.values())
    assert_masks_equal(ckpt.masks, masks)
    assert ckpt.metadata["keep"] == pytest.approx(ckpt.density())
    assert ckpt.head.kind == "sequence-classification"
    assert torch.equal(ckpt.weights["classifier.weight"], base.weights["classifier.weight"])


def test_packed_mlm_base_with_label_words(tmp_path):
    base = write_dense_base(tmp_path / "base", head="smp-label-words", tokenizer=True)
    masks = random_masks(base.config, base.weights, 0.3)
    write_packed_mask(tmp_path / "m.npy", masks)
    ckpt = read_checkpoint(base.path, ReadOptions(mask_file=tmp_path / "m.npy", label_words=("no", "yes")))
    assert ckpt.head.kind == "smp-label-words" and ckpt.head.label_token_ids == (6, 5)
    embeddings = base.weights["embeddings.word_embeddings.weight"]
    assert torch.equal(ckpt.weights["cls.predictions.decoder.weight"], embeddings)
    bare = read_checkpoint(base.path, ReadOptions(mask_file=tmp_path / "m.npy"))
    assert bare.head.kind == "none"


def test_packed_bit_order_is_lexicographic(tmp_path):
    base = write_dense_base(tmp_path / "base", num_layers=12, hidden_size=8, num_attention_heads=2,
                            intermediate_size=16)
    masks = random_masks(base.config, base.weights, 0.5, seed=3)
    natural = linear_weight_names(12)
    lexicographic = sorted(natural, key=packed_key)
    assert lexicographic[6].startswith("encoder.layer.1.") and lexicographic[12].startswith("encoder.layer.10.")
    write_packed_mask(tmp_path / "lex.npy", masks, lexicographic)
    ckpt = read_checkpoint(base.path, ReadOptions(mask_file=tmp_path / "lex.npy"))
    assert_masks_equal(ckpt.masks, masks)
    write_packed_mask(tmp_path / "natural.npy", masks, natural)
    wrong = read_checkpoint(base.path, ReadOptions(mask_file=tmp_path / "natural.npy"))
    assert not all(torch.equal(wrong.masks[n], masks[n]) for n in natural)


# --------------------------------------------------------------------------- torch.nn.utils.prune, dense


def test_torch_prune_round_trip(tmp_path):
    skipped = "encoder.layer.1.attention.self.key.weight"
    w = write_torch_prune_checkpoint(tmp_path / "tp", amount=0.6, skip=[skipped])
    ckpt = read_checkpoint(w.path)
    assert (ckpt.source_format, ckpt.method) == ("torch_prune", "torch-prune")
    assert_masks_equal(ckpt.masks, w.masks)
    assert bool(ckpt.masks[skipped].all())
    name = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(ckpt.weights[name], w.weights[name])  # weight_orig, not folded
    assert int((ckpt.weights[name] == 0).sum()) == 0
    assert torch.equal(ckpt.weights["pooler.dense.weight"], w.weights["pooler.dense.weight"])  # folded
    assert int((ckpt.weights["pooler.dense.weight"] == 0).sum()) == int(0.6 * 32 * 32 + 0.5)
    assert_canonical(ckpt)
    assert not any(n.endswith(("_orig", "_mask")) for n in ckpt.weights)


def test_dense_zero_round_trip(tmp_path):
    w = write_dense_zero_checkpoint(tmp_path / "dense", keep=0.3)
    ckpt = read_checkpoint(w.path)
    assert (ckpt.source_format, ckpt.method) == ("dense", "dense-zeros")
    assert_masks_equal(ckpt.masks, w.masks)
    assert ckpt.density() == pytest.approx(0.3, abs=1e-3) and ckpt.tokenizer_dir is None
    assert ckpt.head.kind == "sequence-classification"
    assert_canonical(ckpt)


def test_dense_bin_without_head(tmp_path):
    w = write_dense_zero_checkpoint(tmp_path / "dense", keep=0.5, head="none", safetensors=False)
    ckpt = read_checkpoint(w.path)
    assert ckpt.head.kind == "none"
    assert_masks_equal(ckpt.masks, w.masks)


# --------------------------------------------------------------------------- detection and forcing


@pytest.mark.parametrize("writer,expected", [
    (lambda p: write_smp_checkpoint(p / "a_0.1"), "smp"),
    (lambda p: write_smp_checkpoint(p / "a_0.1", safetensors=True), "smp"),
    (lambda p: write_smp_checkpoint(p / "a", own_format=True, head="sequence-classification"), "smp"),
    # official SMP without label words is MaskedBertForSequenceClassification: movement topK
    (lambda p: write_smp_checkpoint(p / "a_0.1", head="sequence-classification"), "movement"),
    (lambda p: write_movement_checkpoint(p / "a", "sigmoied_threshold"), "movement"),
    (lambda p: write_movement_checkpoint(p / "a", "magnitude"), "movement"),
    (lambda p: write_torch_prune_checkpoint(p / "a"), "torch_prune"),
    (lambda p: write_dense_zero_checkpoint(p / "a"), "dense"),
    (lambda p: write_dense_base(p / "a"), "dense"),
])
def test_detect_format(tmp_path, writer, expected):
    written = writer(tmp_path)
    assert detect_format(written.path) == expected


def test_detect_packed_when_mask_file_given(tmp_path):
    base = write_dense_base(tmp_path / "a")
    assert detect_format(base.path, ReadOptions(mask_file=tmp_path / "m.npy")) == "packed"


def test_detect_smp_from_mlm_keys_without_architectures(tmp_path):
    w = write_smp_checkpoint(tmp_path / "a_0.1", config_extra={"architectures": None})
    assert detect_format(w.path) == "smp"


def test_input_format_forcing(tmp_path):
    w = write_smp_checkpoint(tmp_path / "x_0.2", keep=0.2)
    as_movement = read_checkpoint(w.path, ReadOptions(threshold=0.2, label_words=("yes", "no")),
                                  input_format="movement")
    assert as_movement.method == "movement-topK"
    assert_masks_equal(as_movement.masks, w.masks)  # SMP-L == movement topK at the same ratio
    as_dense = read_checkpoint(w.path, input_format="dense")
    assert as_dense.method == "dense-zeros" and as_dense.density() == 1.0 and as_dense.head.kind == "none"
    with pytest.raises(UnknownFormatError, match="field '--input-format'.*unknown input format 'onnx'"):
        read_checkpoint(w.path, input_format="onnx")


def test_every_reader_has_name_and_description():
    for name in available_formats():
        reader = get_reader(name)
        assert reader.name == name and reader.description


def test_legacy_bin_serialization(tmp_path):
    w = write_torch_prune_checkpoint(tmp_path / "tp")
    state = torch.load(w.path / "pytorch_model.bin", weights_only=True)
    torch.save(state, w.path / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    assert detect_format(w.path) == "torch_prune"
    assert_masks_equal(read_checkpoint(w.path).masks, w.masks)


def test_sharded_safetensors(tmp_path):
    w = write_dense_zero_checkpoint(tmp_path / "m", keep=0.4)
    model_dir = tmp_path / "sharded"
    from transformers import BertForSequenceClassification

    BertForSequenceClassification.from_pretrained(w.path).save_pretrained(model_dir, max_shard_size="20KB")
    assert (model_dir / "model.safetensors.index.json").is_file()
    ckpt = read_checkpoint(model_dir)
    assert ckpt.method == "dense-zeros"
    assert_masks_equal(ckpt.masks, w.masks)


def test_pack_masks_matches_fixture_writer_and_round_trips(tmp_path):
    from smp_export.readers.packed import pack_masks

    base = write_dense_base(tmp_path / "base", num_layers=11, hidden_size=8, num_attention_heads=2,
                            intermediate_size=16)
    masks = random_masks(base.config, base.weights, 0.2, seed=4)
    write_packed_mask(tmp_path / "ref.npy", masks)
    packed = pack_masks(masks)
    assert packed.dtype == np.uint8 and np.array_equal(packed, np.load(tmp_path / "ref.npy"))
    np.save(tmp_path / "own.npy", packed)
    assert_masks_equal(read_checkpoint(base.path, ReadOptions(mask_file=tmp_path / "own.npy")).masks, masks)
