"""validate_export: passes a faithful export, catches wrong values, names and shapes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from runtime.contract import random_inputs
from smp_export.errors import ValidationError
from smp_export.graph import build_onnx_model
from smp_export.reference import build_reference_model
from smp_export.validate import ValidationConfig, _compare, validate_export
from tests.helpers import tiny_checkpoint


def _export(tmp_path, ckpt, edit=None):
    model = build_onnx_model(ckpt.config, ckpt.masked_weights(), ckpt.head)
    if edit is not None:
        edit(model)
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return path


def _validate(path, ckpt, reference=None, **config):
    reference = reference if reference is not None else build_reference_model(ckpt)
    return validate_export(path, reference, vocab_size=ckpt.config.vocab_size,
                           type_vocab_size=ckpt.config.type_vocab_size, output_name=ckpt.head.output_name,
                           config=ValidationConfig(**config))


def test_faithful_export_passes(tmp_path):
    ckpt = tiny_checkpoint(head="smp-label-words")
    record = _validate(_export(tmp_path, ckpt), ckpt)
    assert record.passed and not record.skipped and record.labels_agree is True
    assert 0.0 <= record.max_abs_diff < 1e-5 and record.atol == 1e-4


def test_perturbed_weight_is_caught_with_max_diff(tmp_path):
    ckpt = tiny_checkpoint(head="sequence-classification")

    def perturb(model):
        init = next(i for i in model.graph.initializer
                    if i.name == "encoder.layer.1.attention.self.value.weight_t")
        w = numpy_helper.to_array(init).copy()
        w[3, 5] += 5.0
        init.CopyFrom(numpy_helper.from_array(w, init.name))

    with pytest.raises(ValidationError) as info:
        _validate(_export(tmp_path, ckpt, perturb), ckpt)
    err = info.value
    assert err.max_abs_diff is not None and err.max_abs_diff > 1e-4
    assert any("max |diff|" in f for f in err.failures)
    assert len([f for f in err.failures if "max |diff|" in f]) == 3      # every shape reported
    assert "model.onnx" in str(err)


def test_wrong_output_name_is_named(tmp_path):
    ckpt = tiny_checkpoint(head="sequence-classification")

    def rename(model):
        model.graph.output[0].name = "scores"
        next(n for n in model.graph.node if "logits" in n.output).output[0] = "scores"

    with pytest.raises(ValidationError) as info:
        _validate(_export(tmp_path, ckpt, rename), ckpt)
    assert any("'logits'" in f and "scores" in f for f in info.value.failures)


def test_wrong_shape_is_reported(tmp_path):
    ckpt = tiny_checkpoint(head="smp-label-words")
    other = tiny_checkpoint(head="smp-label-words", label_token_ids=(5, 7))
    with pytest.raises(ValidationError, match=r"shape \[1, 3\] != reference \[1, 2\]"):
        _validate(_export(tmp_path, ckpt), ckpt, reference=build_reference_model(other))


def test_long_shapes_are_clamped_to_max_positions(tmp_path):
    ckpt = tiny_checkpoint()
    record = _validate(_export(tmp_path, ckpt), ckpt, shapes=((2, 100),))
    assert record.shapes == [[2, 64]] and record.labels_agree is None


def test_inputs_are_seeded_and_padded():
    a = random_inputs(4, 10, vocab_size=50, type_vocab_size=2, rng=np.random.default_rng(0), padded_rows=True)
    b = random_inputs(4, 10, vocab_size=50, type_vocab_size=2, rng=np.random.default_rng(0), padded_rows=True)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    mask, ids = a["attention_mask"], a["input_ids"]
    assert mask[0].all() and mask[2].all()
    for row in (1, 3):
        length = int(mask[row].sum())
        assert 1 <= length < 10 and not mask[row, length:].any() and not ids[row, length:].any()
    assert ids[mask == 1].min() >= 1 and ids.max() < 50 and a["token_type_ids"].max() <= 1


def test_label_disagreement_is_a_failure():
    want = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    got = np.array([[0.0, 1.0], [0.5, 0.6]], dtype=np.float32)
    failures, diff, agree = _compare(got, want, where="logits", atol=1.0, labels=True)
    assert agree is False and diff == pytest.approx(0.6)
    assert failures and "argmax labels" in failures[0]
