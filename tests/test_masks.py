"""The mask rules of smp_export.masks against the official binarizers and SMP-S rule."""

from __future__ import annotations

import math

import pytest
import torch

from smp_export.checkpoint import MATRIX_TYPES, linear_weight_names, parse_linear_name
from smp_export.errors import MaskError
from smp_export.masks import (check_finite, check_keep_ratio, l0_soft_mask, magnitude_mask, smp_l_masks,
                              smp_s_keep_ratios, smp_s_masks, smp_s_ratio_map, threshold_mask, topk_mask)
from tests.fixtures import ref_smp_masks, ref_smp_s_ratios, ref_threshold, ref_topk

_SHAPES = {"intermediate": (16, 8), "output": (8, 16)}


def _scores(num_layers: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random scores of every linear of a hidden-8 model, a different spread per matrix."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in linear_weight_names(num_layers):
        layer, matrix_type = parse_linear_name(name)
        shape = _SHAPES.get(matrix_type, (8, 8))
        out[name] = torch.randn(shape, generator=gen) * (0.5 + layer) + MATRIX_TYPES.index(matrix_type) * 0.1
    return out


@pytest.mark.parametrize("keep", [0.03, 0.1, 0.25, 0.5, 0.999, 1.0])
def test_topk_keeps_exactly_int_keep_numel(keep):
    scores = torch.randn(37, 23, generator=torch.Generator().manual_seed(1))
    mask = topk_mask(scores, keep)
    assert int(mask.sum()) == int(keep * scores.numel())
    assert torch.equal(mask, ref_topk(scores, keep))


def test_topk_above_one_keeps_everything_and_ties_are_deterministic():
    assert bool(topk_mask(torch.randn(4, 4), 1.7).all())
    ties = torch.zeros(10)
    assert topk_mask(ties, 0.3).tolist() == [True] * 3 + [False] * 7


def test_magnitude_uses_absolute_values():
    weight = torch.tensor([[-5.0, 0.1], [0.2, 3.0]])
    assert magnitude_mask(weight, 0.5).tolist() == [[True, False], [False, True]]


@pytest.mark.parametrize("sigmoid", [True, False])
@pytest.mark.parametrize("threshold", [-0.5, 0.0, 0.3, 0.5, 0.9, 0.999999, 50.0])
def test_threshold_matches_official_binarizer(sigmoid, threshold):
    scores = torch.randn(40, 25, generator=torch.Generator().manual_seed(2))
    assert torch.equal(threshold_mask(scores, threshold, sigmoid=sigmoid), ref_threshold(scores, threshold, sigmoid))


def test_threshold_keeps_at_least_half_a_percent():
    scores = torch.randn(1000, generator=torch.Generator().manual_seed(3))
    mask = threshold_mask(scores, 0.999999, sigmoid=True)  # nothing passes the threshold
    nb_min = int(0.005 * 1000) + 1
    assert int(mask.sum()) == nb_min == 6
    assert torch.equal(mask, scores >= scores.topk(6).values.min())
    # exactly nb_min above the threshold: no fallback, the threshold decides
    exact = torch.cat([torch.full((6,), 10.0), torch.full((994,), -10.0)])
    assert torch.equal(threshold_mask(exact, 0.5, sigmoid=True), exact > 0)
    # tiny matrices: nb_min = 1, k = max(n - 1, 1); a single score is then never kept
    assert int(threshold_mask(torch.randn(10), 5.0, sigmoid=False).sum()) == 1
    assert int(threshold_mask(torch.tensor([0.3]), 5.0, sigmoid=False).sum()) == 0


def test_l0_soft_mask_is_stretched_clamped_sigmoid():
    scores = torch.tensor([-10.0, -2.3979, 0.0, 2.3979, 10.0])  # sigmoid(+-2.3979) = 1/12, 11/12
    soft = l0_soft_mask(scores)
    expected = (torch.sigmoid(scores) * 1.2 - 0.1).clamp(0, 1)
    assert torch.allclose(soft, expected)
    assert soft[0] == 0 and soft[-1] == 1 and soft[2] == pytest.approx(0.5)


def test_smp_s_hand_computed_ratios():
    # sigmoid(0) = 0.5 and sigmoid(ln 3) = 0.75: R = [0.5, 0.75], sum 1.25, keep 0.4, L = 2
    scores = [torch.zeros(4, 5), torch.full((4, 5), math.log(3))]
    assert smp_s_keep_ratios(scores, 0.4) == pytest.approx([0.5 / 1.25 * 0.8, 0.75 / 1.25 * 0.8])
    assert smp_s_keep_ratios(scores, 0.4) == pytest.approx([0.32, 0.48])
    # temperature 2: sigmoid(ln 3 / 2) = sqrt(3) / (1 + sqrt(3))
    r1 = math.sqrt(3) / (1 + math.sqrt(3))
    assert smp_s_keep_ratios(scores, 0.4, 2.0) == pytest.approx([0.5 / (0.5 + r1) * 0.8, r1 / (0.5 + r1) * 0.8])
    masks = smp_s_masks({"encoder.layer.0.attention.self.query.weight": scores[0] + torch.randn(4, 5) * 1e-3,
                         "encoder.layer.1.attention.self.query.weight": scores[1]}, 0.4)
    assert [int(m.sum()) for m in masks.values()] == [int(0.32 * 20), int(0.48 * 20)]


def test_smp_s_zero_total_gives_zero_ratios():
    assert smp_s_keep_ratios([torch.full((3,), -1e4), torch.full((3,), -1e4)], 0.5) == [0.0, 0.0]


@pytest.mark.parametrize("temperature", [1.0, 0.3, 2.0, 3.0])
@pytest.mark.parametrize("keep", [0.03, 0.1, 0.5])
def test_smp_s_ratios_bitwise_equal_to_official_rule(keep, temperature):
    scores = _scores(num_layers=4, seed=int(keep * 100) + int(temperature * 10))
    assert smp_s_ratio_map(scores, keep, temperature) == ref_smp_s_ratios(scores, keep, temperature)
    expected = ref_smp_masks(scores, keep, smp_s=True, temperature=temperature)
    got = smp_s_masks(scores, keep, temperature)
    assert all(torch.equal(got[n], expected[n]) for n in scores)


def test_smp_s_average_ratio_per_type_equals_keep():
    scores = _scores(num_layers=6, seed=5)
    ratios = smp_s_ratio_map(scores, 0.2)
    assert max(ratios.values()) <= 1
    for matrix_type in MATRIX_TYPES:
        values = [r for n, r in ratios.items() if parse_linear_name(n)[1] == matrix_type]
        assert len(values) == 6
        assert len(set(values)) > 1  # really layer-dependent
        assert sum(values) / len(values) == pytest.approx(0.2)


def test_smp_l_same_ratio_everywhere():
    scores = _scores()
    masks = smp_l_masks(scores, 0.15)
    assert all(int(m.sum()) == int(0.15 * m.numel()) for m in masks.values())


@pytest.mark.parametrize("bad", [0, 0.0, 1.5, -0.1, float("nan"), float("inf"), "0.5", None])
def test_check_keep_ratio_rejects(bad):
    with pytest.raises(MaskError, match=r"field '--keep'.*\(0, 1\]"):
        check_keep_ratio(bad, path="x", field="--keep")


def test_check_finite_names_field():
    with pytest.raises(MaskError, match=r"f\.pt: field 'w': 2 non-finite"):
        check_finite(torch.tensor([1.0, float("nan"), float("inf")]), path="f.pt", field="w")
