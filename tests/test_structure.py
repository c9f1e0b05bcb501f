"""smp_export.structure: granularities, unit scores -> masks, the structure checks."""

from __future__ import annotations

import math

import pytest
import torch

from smp_export.arch import EncoderDims
from smp_export.errors import MaskError
from smp_export.structure import (Granularity, expand, head_key, magnitude_scores, neuron_key, nm_mask, score_shapes,
                                  select, structured_masks, weight_shapes)
from smp_export.structure_check import check_structure, structure_report
from smp_train.masking import StraightThroughMask

DIMS = EncoderDims(layers=3, hidden=32, heads=4, intermediate=64, vocab_size=100, type_vocab_size=2,
                   max_positions=64, layer_norm_eps=1e-12, activation="gelu")
W = "encoder.layer.{}.{}.weight"


def _scores(g: Granularity, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=gen) for k, shape in score_shapes(g, DIMS).items()}


@pytest.mark.parametrize("text", ["weight", "neuron", "head", "structured", "block:32x32", "block:1x4", "2:4", "1:8"])
def test_granularities_parse_and_print_back(text):
    assert str(Granularity.parse(text)) == text


@pytest.mark.parametrize("text", ["rows", "block:0x4", "block:4", "4:2", "0:4", "2:2", ""])
def test_bad_granularities_name_the_field(text):
    with pytest.raises(MaskError) as err:
        Granularity.parse(text)
    assert err.value.field == "granularity"


def test_a_block_that_does_not_divide_the_matrix_names_it():
    with pytest.raises(MaskError, match="does not divide the 32 x 32") as err:
        score_shapes(Granularity.parse("block:5x4"), DIMS)
    assert err.value.field == W.format(0, "attention.self.query")
    with pytest.raises(MaskError, match="num_attention_heads|heads"):
        score_shapes(Granularity.parse("head"), EncoderDims(**{**DIMS.__dict__, "heads": 5}))


def test_neuron_masks_are_whole_rows_and_columns_smp_l():
    g = Granularity.parse("neuron")
    scores = _scores(g)
    masks = structured_masks(g, "smp-l", scores, 0.25, DIMS)
    for layer in range(DIMS.layers):
        w1, w2 = masks[W.format(layer, "intermediate.dense")], masks[W.format(layer, "output.dense")]
        kept = scores[neuron_key(layer)].topk(16).indices.sort().values   # int(0.25 * 64) neurons
        assert torch.equal(w1.all(1).nonzero().flatten(), kept) and torch.equal(w1.any(1), w1.all(1))
        assert torch.equal(w2.all(0), w1.all(1)) and torch.equal(w2.any(0), w2.all(0))
        assert masks[W.format(layer, "attention.self.query")].all()       # attention not covered: kept whole
    check_structure(g, masks, DIMS)


def test_head_masks_cover_qkv_rows_and_output_columns():
    g = Granularity.parse("head")
    scores = _scores(g, seed=1)
    masks = structured_masks(g, "smp-l", scores, 0.5, DIMS)
    for layer in range(DIMS.layers):
        heads = torch.zeros(4, dtype=torch.bool)
        heads[scores[head_key(layer)].topk(2).indices] = True
        rows = heads.repeat_interleave(8)
        for module in ("attention.self.query", "attention.self.key", "attention.self.value"):
            assert torch.equal(masks[W.format(layer, module)], rows[:, None].expand(32, 32))
        assert torch.equal(masks[W.format(layer, "attention.output.dense")], rows[None, :].expand(32, 32))
    report = structure_report(masks, DIMS)
    assert report["heads_with_weights"] == [2, 2, 2] and report["neurons_with_weights"] == [64, 64, 64]


def test_smp_s_budgets_sum_to_the_target():
    """SMP-S: each layer its own share of neurons (and of heads), the shares summing to keep x layers."""
    g = Granularity.parse("structured")
    scores = _scores(g, seed=2)
    for layer in range(DIMS.layers):               # layers of different mean score: unequal ratios
        scores[neuron_key(layer)] += layer - 1.0
    units = select(g, "smp-s", scores, 0.3)
    neurons = [int(units[neuron_key(layer)].sum()) for layer in range(DIMS.layers)]
    assert len(set(neurons)) > 1                                       # not uniform
    assert 0.3 * 64 * 3 - 3 <= sum(neurons) <= 0.3 * 64 * 3            # floor per layer, at most one each
    heads = sum(int(units[head_key(layer)].sum()) for layer in range(DIMS.layers))
    assert 0.3 * 4 * 3 - 3 <= heads <= 0.3 * 4 * 3


def test_block_masks_are_whole_blocks_at_the_keep_ratio():
    g = Granularity.parse("block:8x4")
    masks = structured_masks(g, "smp-l", _scores(g, seed=3), 0.25, DIMS)
    for name, mask in masks.items():
        assert mask.sum() == int(0.25 * mask.numel() / 32) * 32, name
    check_structure(g, masks, DIMS)
    with pytest.raises(MaskError, match="partly kept"):
        check_structure(Granularity.parse("block:16x16"), masks, DIMS)


def test_n_m_keeps_n_of_every_m_and_follows_the_schedule():
    scores = torch.randn(8, 32, generator=torch.Generator().manual_seed(4))
    final = nm_mask(scores, 2, 4)
    assert torch.equal(final.reshape(8, 8, 4).sum(-1), torch.full((8, 8), 2))
    kept = final.reshape(8, 8, 4)
    dropped_max = scores.reshape(8, 8, 4).masked_fill(kept, -math.inf).amax(-1)
    assert (scores.reshape(8, 8, 4).masked_fill(~kept, math.inf).amin(-1) >= dropped_max).all()
    assert nm_mask(scores, 2, 4, keep=0.75).reshape(8, 8, 4).sum(-1).eq(3).all()    # mid-schedule: 3 of 4
    assert nm_mask(scores, 2, 4, keep=1.0).all()
    ties = nm_mask(torch.zeros(1, 4), 2, 4)
    assert ties.tolist() == [[True, True, False, False]]                             # ties: first positions


def test_a_mask_claimed_n_m_that_is_not_is_refused():
    g = Granularity.parse("2:4")
    masks = structured_masks(g, "smp-s", _scores(g, seed=5), 0.5, DIMS)
    check_structure(g, masks, DIMS)
    assert structure_report(masks, DIMS)["two_four"]
    name = W.format(1, "output.dense")
    masks[name] = masks[name].clone()
    masks[name][3, :4] = True
    with pytest.raises(MaskError, match=r"not 2:4: encoder.layer.1.output.dense.weight: 1 groups") as err:
        check_structure(g, masks, DIMS, path="ckpt", field="--granularity")
    assert err.value.path == "ckpt" and err.value.field == "--granularity"


def test_partly_kept_heads_and_neurons_are_refused_for_structured():
    masks = {n: torch.ones(s, dtype=torch.bool) for n, s in weight_shapes(DIMS).items()}
    masks[W.format(0, "intermediate.dense")][5, :3] = False
    masks[W.format(2, "attention.self.key")][9, 0] = False
    with pytest.raises(MaskError) as err:
        check_structure(Granularity.parse("structured"), masks, DIMS)
    assert "layer.0.intermediate: 1 neurons" in str(err.value) and "layer.2.attention: 1 heads" in str(err.value)
    check_structure(Granularity.parse("weight"), masks, DIMS)                     # nothing claimed


def test_straight_through_gradient_of_a_unit_is_the_sum_over_its_weights():
    g = Granularity.parse("structured")
    scores = {k: s.requires_grad_() for k, s in _scores(g, seed=6).items()}
    units = select(g, "smp-l", scores, 0.5)
    masks = expand(g, {k: StraightThroughMask.apply(scores[k], u) for k, u in units.items()}, DIMS)
    upstream = {n: torch.randn(m.shape) for n, m in masks.items()}
    sum((masks[n] * upstream[n]).sum() for n in masks).backward()
    want = upstream[W.format(1, "intermediate.dense")].sum(1) + upstream[W.format(1, "output.dense")].sum(0)
    torch.testing.assert_close(scores[neuron_key(1)].grad, want)
    per_row = sum(upstream[W.format(0, f"attention.self.{t}")].sum(1) for t in ("query", "key", "value"))
    per_row = per_row + upstream[W.format(0, "attention.output.dense")].sum(0)
    torch.testing.assert_close(scores[head_key(0)].grad, per_row.reshape(4, 8).sum(1))


def test_magnitude_scores_are_l2_norms_of_the_units():
    gen = torch.Generator().manual_seed(7)
    weights = {n: torch.randn(s, generator=gen) for n, s in weight_shapes(DIMS).items()}
    scores = magnitude_scores(Granularity.parse("structured"), weights, DIMS)
    w1, w2 = weights[W.format(2, "intermediate.dense")], weights[W.format(2, "output.dense")]
    torch.testing.assert_close(scores[neuron_key(2)][7], torch.cat([w1[7], w2[:, 7]]).norm())
    blocks = magnitude_scores(Granularity.parse("block:8x4"), weights, DIMS)
    q = weights[W.format(0, "attention.self.query")]
    torch.testing.assert_close(blocks[W.format(0, "attention.self.query")][1, 2], q[8:16, 8:12].norm())


def test_hybrid_is_the_structured_units_and_the_weights_own_topk():
    g = Granularity.parse("hybrid")
    scores = _scores(g, seed=8)
    assert {k for k in scores if not k.endswith(".weight")} == set(score_shapes(Granularity.parse("structured"), DIMS))
    masks = structured_masks(g, "smp-l", scores, 0.5, DIMS, inner_keep=0.25)
    units = structured_masks(Granularity.parse("structured"), "smp-l",
                             {k: s for k, s in scores.items() if not k.endswith(".weight")}, 0.5, DIMS)
    for name, mask in masks.items():
        inner = scores[name].flatten().topk(int(0.25 * mask.numel())).indices
        want = torch.zeros(mask.numel(), dtype=torch.bool)
        want[inner] = True
        assert torch.equal(mask, units[name] & want.view_as(mask)), name
    assert structure_report(masks, DIMS)["heads_with_weights"] == [2, 2, 2]


def test_budget_of_heads_and_inner_weights_follows_the_schedule():
    from smp_export.structure import budget_at

    assert budget_at(1.0, 0.2, 0.5) == 1.0 and budget_at(0.2, 0.2, 0.5) == 0.5
    assert budget_at(0.6, 0.2, 0.5) == pytest.approx(0.75) and budget_at(0.6, 0.2, None) is None
    g = Granularity.parse("structured")
    units = select(g, "smp-l", _scores(g), 0.25, head_keep=0.75)
    assert [int(units[head_key(i)].sum()) for i in range(3)] == [3, 3, 3]
    assert [int(units[neuron_key(i)].sum()) for i in range(3)] == [16, 16, 16]


def test_hybrid_without_an_inner_budget_is_the_structured_masks():
    g = Granularity.parse("hybrid")
    scores = _scores(g, seed=9)
    for method in ("smp-s", "smp-l"):
        masks = structured_masks(g, method, scores, 0.5, DIMS)
        units = structured_masks(Granularity.parse("structured"), method,
                                 {k: s for k, s in scores.items() if not k.endswith(".weight")}, 0.5, DIMS)
        assert all(torch.equal(masks[n], units[n]) for n in masks), method
