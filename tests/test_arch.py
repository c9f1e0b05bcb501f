"""The architecture descriptions: which config.json fields give the encoder's dimensions, and
the clear error (file and field, before anything is built) when one cannot be true."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smp_export.arch import ARCHITECTURES, BERT, DISTILBERT, architecture_of
from smp_export.errors import CheckpointError
from smp_export.readers import read_checkpoint
from tests.fixtures import write_dense_base


@pytest.fixture()
def bert_dir(tmp_path) -> Path:
    return write_dense_base(tmp_path / "bert").path


def _with_config(model_dir: Path, **changes) -> Path:
    path = model_dir / "config.json"
    cfg = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key)
        else:
            cfg[key] = value
    path.write_text(json.dumps(cfg))
    return model_dir


@pytest.mark.parametrize("field, value, message", [
    ("num_attention_heads", 0, "must be an integer >= 1, got 0"),
    ("intermediate_size", -5, "integer field missing or invalid|must be an integer >= 1"),
    ("num_hidden_layers", -3, "must be an integer >= 1, got -3"),
    ("num_hidden_layers", None, "required integer field missing or invalid"),
    ("hidden_size", 30, "30 is not a multiple of the 4 heads"),
    ("layer_norm_eps", "abc", "must be a positive number, got 'abc'"),
    ("layer_norm_eps", -1.0, "must be a positive number"),
    ("hidden_act", "swish", "unsupported activation 'swish'"),
    ("max_position_embeddings", 0, "must be an integer >= 1"),
])
def test_impossible_dimensions_are_refused_naming_the_field(bert_dir, field, value, message):
    _with_config(bert_dir, **{field: value})
    with pytest.raises(CheckpointError, match=message) as info:
        read_checkpoint(bert_dir)
    assert info.value.field == field and info.value.path.endswith("config.json")


def test_unknown_model_type_names_the_field(bert_dir):
    _with_config(bert_dir, model_type="gpt2")
    with pytest.raises(CheckpointError, match="unsupported model_type 'gpt2'; supported: bert, distilbert"):
        read_checkpoint(bert_dir, input_format="dense")
    assert architecture_of({"model_type": "masked_bert"}) is BERT and architecture_of({}) is BERT


def test_every_entry_maps_each_canonical_linear_to_a_name_of_its_own():
    from smp_export.checkpoint import linear_weight_names

    for arch in ARCHITECTURES.values():
        own = [arch.own_name(n) for n in linear_weight_names(3)]
        assert len(set(own)) == len(own)
        assert [arch.canonical_name(n) for n in own] == linear_weight_names(3)
    assert DISTILBERT.own_name("encoder.layer.2.attention.output.LayerNorm.weight") == \
        "transformer.layer.2.sa_layer_norm.weight"
    assert DISTILBERT.input_names == ("input_ids", "attention_mask") and "token_type_ids" in BERT.input_names
