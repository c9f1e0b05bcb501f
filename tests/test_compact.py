"""Structural compaction keeps the masked model's function exactly (HF BertModel as reference)."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertModel

from smp_export.arch import BERT
from smp_export.checkpoint import linear_module
from smp_export.errors import CheckpointError
from smp_export.formats import CompactionConfig, CompactionResult, compact, layer_shapes
from tests.helpers import VOCAB, tiny_checkpoint

EQUIVALENT = dict(atol=1e-5, rtol=1e-5)
CLEARLY_DIFFERENT = 1e-3  # max |diff| a wrong compaction produces, far above float noise


def w_name(layer: int, matrix_type: str, kind: str = "weight") -> str:
    return f"{linear_module(layer, matrix_type)}.{kind}"


def masked(keep: float = 0.5, **config_overrides) -> tuple[BertConfig, dict[str, torch.Tensor]]:
    ckpt = tiny_checkpoint(keep=keep, **config_overrides)
    return ckpt.config, {k: v.clone() for k, v in ckpt.masked_weights().items()}


def head_rows(config: BertConfig, head: int) -> slice:
    d = config.hidden_size // config.num_attention_heads
    return slice(head * d, (head + 1) * d)


def zero_head(w, config, layer: int, head: int, by: str) -> None:
    """Zero a head's value rows (``by="value"``), output columns (``"output"``) or Q+K rows (``"qk"``)."""
    rows = head_rows(config, head)
    if by == "value":
        w[w_name(layer, "value")][rows] = 0.0
    elif by == "output":
        w[w_name(layer, "attention_output")][:, rows] = 0.0
    elif by == "qk":
        w[w_name(layer, "query")][rows] = 0.0
        w[w_name(layer, "key")][rows] = 0.0
    else:
        raise ValueError(by)


def zero_neuron(w, layer: int, neuron: int, by: str) -> None:
    """Zero an FFN neuron's intermediate row (``by="input"``) or output column (``"output"``)."""
    if by == "input":
        w[w_name(layer, "intermediate")][neuron] = 0.0
    else:
        w[w_name(layer, "output")][:, neuron] = 0.0


def build_model(config: BertConfig, weights: dict[str, torch.Tensor],
                result: CompactionResult | None = None) -> BertModel:
    """An eager-attention BertModel holding ``weights``, its linears resized to ``result``."""
    config = copy.deepcopy(config)
    config._attn_implementation = "eager"
    model = BertModel(config, add_pooling_layer=False)
    hidden, d = config.hidden_size, config.hidden_size // config.num_attention_heads
    for i, layer in enumerate(model.encoder.layer if result is not None else []):
        heads, neurons = result.num_heads(i) * d, result.intermediate_size(i)
        attn = layer.attention.self
        attn.query, attn.key, attn.value = (nn.Linear(hidden, heads) for _ in range(3))
        attn.num_attention_heads, attn.all_head_size = result.num_heads(i), heads
        layer.attention.output.dense = nn.Linear(heads, hidden)
        layer.intermediate.dense = nn.Linear(hidden, neurons)
        layer.output.dense = nn.Linear(neurons, hidden)
    model.load_state_dict(weights, strict=True)
    return model.eval()


def run(model: BertModel) -> torch.Tensor:
    """last_hidden_state on a fixed padded batch (lengths 10, 6, 3)."""
    gen = torch.Generator().manual_seed(123)
    input_ids = torch.randint(1, VOCAB, (3, 10), generator=gen)
    attention_mask = torch.zeros(3, 10, dtype=torch.long)
    for row, length in enumerate((10, 6, 3)):
        attention_mask[row, :length] = 1
    input_ids[attention_mask == 0] = 0
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def assert_equivalent(config, weights, result: CompactionResult) -> torch.Tensor:
    reference = run(build_model(config, weights))
    torch.testing.assert_close(run(build_model(config, result.weights, result)), reference, **EQUIVALENT)
    return reference


def test_reference_model_uses_eager_attention():
    config, w = masked()
    assert type(build_model(config, w).encoder.layer[0].attention.self).__name__ == "BertSelfAttention"


@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_removed_heads_and_neurons_keep_function(act):
    config, w = masked(hidden_act=act)
    zero_head(w, config, 0, 1, "value")
    zero_head(w, config, 0, 2, "output")
    zero_head(w, config, 1, 0, "value")
    zero_head(w, config, 1, 3, "output")
    zero_head(w, config, 1, 3, "value")
    for j in (3, 10, 40):
        zero_neuron(w, 0, j, "input")
    for j in (5, 20):
        zero_neuron(w, 0, j, "output")
    zero_neuron(w, 1, 63, "input")
    zero_neuron(w, 1, 0, "output")
    result = compact(w, BERT.dims(config))
    assert result.heads_kept == [[0, 3], [1, 2]]
    assert result.neurons_kept[0] == [j for j in range(64) if j not in (3, 5, 10, 20, 40)]
    assert result.neurons_kept[1] == list(range(1, 63))
    assert (result.heads_removed, result.neurons_removed) == (4, 7)
    assert result.weights[w_name(0, "query")].shape == (16, 32)
    assert result.weights[w_name(0, "attention_output")].shape == (32, 16)
    assert result.weights[w_name(0, "output")].shape == (32, 59)
    assert_equivalent(config, w, result)


def test_bias_folding_is_needed():
    """Dropping value-empty heads / input-empty neurons without folding changes the function."""
    config, w = masked()
    zero_head(w, config, 0, 1, "value")
    zero_neuron(w, 1, 7, "input")
    result = compact(w, BERT.dims(config))
    reference = assert_equivalent(config, w, result)
    for layer, matrix_type in ((0, "attention_output"), (1, "output")):
        unfolded = dict(result.weights)
        unfolded[w_name(layer, matrix_type, "bias")] = w[w_name(layer, matrix_type, "bias")]
        diff = (run(build_model(config, unfolded, result)) - reference).abs().max()
        assert diff > CLEARLY_DIFFERENT


def test_no_removable_units_changes_nothing():
    config, w = masked(keep=0.5)
    result = compact(w, BERT.dims(config))
    assert (result.heads_removed, result.neurons_removed) == (0, 0)
    assert result.heads_kept == [[0, 1, 2, 3]] * 2 and result.neurons_kept == [list(range(64))] * 2
    assert all(result.weights[name] is tensor for name, tensor in w.items())
    assert_equivalent(config, w, result)


@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_all_heads_and_all_neurons_of_a_layer_removable(act):
    config, w = masked(hidden_act=act)
    for head, by in enumerate(("value", "output", "value", "output")):
        zero_head(w, config, 0, head, by)
    for j in range(64):
        zero_neuron(w, 1, j, "output" if j % 3 == 1 else "input")  # neuron 0 (placeholder) is folded
    result = compact(w, BERT.dims(config))
    assert result.heads_kept == [[0], [0, 1, 2, 3]]
    assert result.neurons_kept == [list(range(64)), [0]]
    assert (result.heads_removed, result.neurons_removed) == (3, 63)
    assert result.num_heads(0) == 1 and result.intermediate_size(1) == 1
    for matrix_type in ("query", "key", "value", "attention_output"):
        assert not result.weights[w_name(0, matrix_type)].any()
    assert not result.weights[w_name(1, "output")].any()
    assert not result.weights[w_name(1, "intermediate")].any()
    assert_equivalent(config, w, result)


def test_everything_removable():
    config, w = masked(hidden_act="relu")
    for layer in range(2):
        for head in range(4):
            zero_head(w, config, layer, head, "value" if (head + layer) % 2 else "output")
        for j in range(64):
            zero_neuron(w, layer, j, "input" if (j + layer) % 2 else "output")
    result = compact(w, BERT.dims(config))
    assert result.heads_kept == [[0], [0]] and result.neurons_kept == [[0], [0]]
    assert_equivalent(config, w, result)


def test_query_and_key_empty_head_is_kept():
    """Empty Q and K rows give uniform attention over the unmasked positions: still input-dependent."""
    config, w = masked()
    zero_head(w, config, 0, 1, "qk")
    result = compact(w, BERT.dims(config))
    assert result.heads_kept[0] == [0, 1, 2, 3] and result.heads_removed == 0
    reference = assert_equivalent(config, w, result)
    # Dropping that head anyway (the wrong call) clearly changes the output.
    wrong = dict(w)
    wrong[w_name(0, "attention_output")] = w[w_name(0, "attention_output")].clone()
    wrong[w_name(0, "attention_output")][:, head_rows(config, 1)] = 0.0
    assert (run(build_model(config, wrong)) - reference).abs().max() > CLEARLY_DIFFERENT


def test_flags_disable_each_kind():
    config, w = masked()
    zero_head(w, config, 0, 2, "value")
    zero_neuron(w, 1, 9, "input")
    only_neurons = compact(w, BERT.dims(config), CompactionConfig(remove_heads=False))
    assert only_neurons.heads_removed == 0 and only_neurons.neurons_removed == 1
    assert_equivalent(config, w, only_neurons)
    only_heads = compact(w, BERT.dims(config), CompactionConfig(remove_neurons=False))
    assert only_heads.heads_removed == 1 and only_heads.neurons_removed == 0
    assert_equivalent(config, w, only_heads)


def test_input_untouched_and_other_weights_passed_through():
    config, w = masked()
    zero_head(w, config, 0, 1, "value")
    zero_neuron(w, 0, 4, "input")
    before = {k: v.clone() for k, v in w.items()}
    result = compact(w, BERT.dims(config))
    assert set(result.weights) == set(w)
    for name, tensor in w.items():
        torch.testing.assert_close(tensor, before[name], atol=0.0, rtol=0.0)
        touched = ("encoder.layer.0.attention.", "encoder.layer.0.intermediate.", "encoder.layer.0.output.dense.")
        if not name.startswith(touched):
            assert result.weights[name] is tensor, name


def test_layer_shapes():
    config, w = masked()
    zero_head(w, config, 1, 2, "output")
    zero_neuron(w, 0, 0, "output")
    shapes = layer_shapes(compact(w, BERT.dims(config)))
    assert len(shapes) == 12
    assert shapes[w_name(1, "value")] == (24, 32) and shapes[w_name(1, "attention_output")] == (32, 24)
    assert shapes[w_name(0, "intermediate")] == (63, 32) and shapes[w_name(0, "output")] == (32, 63)
    assert shapes[w_name(0, "query")] == (32, 32)


def test_missing_or_misshapen_weight_raises():
    config, w = masked()
    missing = {k: v for k, v in w.items() if k != w_name(1, "key", "bias")}
    with pytest.raises(CheckpointError, match="missing") as info:
        compact(missing, BERT.dims(config))
    assert info.value.field == w_name(1, "key", "bias")
    misshapen = dict(w, **{w_name(0, "output"): torch.zeros(32, 60)})
    with pytest.raises(CheckpointError, match="shape"):
        compact(misshapen, BERT.dims(config))


def test_logs_summary(caplog):
    config, w = masked()
    zero_head(w, config, 0, 0, "output")
    with caplog.at_level(logging.INFO, logger="smp_export.formats.compact"):
        compact(w, BERT.dims(config))
    assert "removed 1/8 attention heads and 0/128 FFN neurons" in caplog.text
