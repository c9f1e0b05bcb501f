"""smp_train's masks: TopK exactness, STE gradient, SMP-S budget, global TopK, schedules."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from smp_export.checkpoint import linear_weight_names
from smp_export.masks import global_topk_masks, smp_s_masks, smp_s_ratio_map, topk_mask
from smp_train.loss import distillation_loss, score_regularizer
from smp_train.masking import StraightThroughMask, masks_for
from smp_train.schedule import CubicSchedule, prune_steps
from tests.helpers import tiny_config, tiny_weights


def _sorted_topk(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """Independent reference: a full stable descending sort, the first int(keep * n) kept."""
    flat = scores.flatten()
    k = min(int(keep * flat.numel()), flat.numel())
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[torch.sort(flat, descending=True, stable=True).indices[:k]] = True
    return mask.view_as(scores)


def _scores(seed: int = 0, *, ties: bool = False) -> dict[str, torch.Tensor]:
    config = tiny_config(num_hidden_layers=3)
    weights = tiny_weights(config)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in linear_weight_names(3):
        s = torch.randn(weights[name].shape, generator=gen)
        out[name] = s.round() if ties else s       # rounding makes massive ties
    return out


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.sampled_from([-1.0, -0.0, 0.0, 0.5, 2.0, 3.25]) | st.floats(-4, 4, width=32),
                       min_size=1, max_size=60),
       keep=st.floats(0.0, 1.2))
def test_topk_selection_equals_a_stable_sort_with_ties(values, keep):
    scores = torch.tensor(values, dtype=torch.float32)
    assert torch.equal(topk_mask(scores, keep), _sorted_topk(scores, keep))


@pytest.mark.parametrize("keep", [0.0, 0.03, 0.1, 0.5, 0.97, 1.0, 1.5])
def test_topk_is_exact_on_matrices(keep):
    for ties in (False, True):
        for name, s in _scores(ties=ties).items():
            mask = topk_mask(s, keep)
            assert torch.equal(mask, _sorted_topk(s, keep)), name
            assert int(mask.sum()) == min(int(keep * s.numel()), s.numel())


def test_constant_scores_keep_the_first_entries():
    mask = topk_mask(torch.zeros(4, 5), 0.3)
    assert mask.flatten().tolist() == [True] * 6 + [False] * 14


@pytest.mark.parametrize("method", ["smp-s", "smp-l", "movement"])
def test_training_masks_are_export_masks(method):
    scores = _scores(1)
    got = masks_for(method, scores, 0.2, 0.7)
    want = smp_s_masks(scores, 0.2, 0.7) if method == "smp-s" else {n: topk_mask(s, 0.2) for n, s in scores.items()}
    assert all(torch.equal(got[n], want[n]) for n in scores)


def test_global_topk_is_one_topk_over_all_matrices():
    scores = _scores(2, ties=True)
    got = global_topk_masks(scores, 0.25)
    joined = _sorted_topk(torch.cat([s.flatten() for s in scores.values()]), 0.25)
    want = dict(zip(scores, torch.split(joined, [s.numel() for s in scores.values()])))
    want = {n: want[n].view_as(scores[n]) for n in scores}
    assert all(torch.equal(got[n], want[n]) for n in scores)
    total = sum(s.numel() for s in scores.values())
    assert sum(int(m.sum()) for m in got.values()) == int(0.25 * total)


@pytest.mark.parametrize("keep", [0.03, 0.1, 0.5])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_smp_s_ratios_sum_to_the_global_budget(keep, temperature):
    scores = _scores(3)
    for s in scores.values():
        s.mul_(3.0)
    ratios = smp_s_ratio_map(scores, keep, temperature)
    layers = 3
    by_type: dict[str, list[float]] = {}
    for name, ratio in ratios.items():
        by_type.setdefault(name.split(".", 3)[3], []).append(ratio)
    for values in by_type.values():
        assert len(values) == layers
        assert math.isclose(sum(values), keep * layers, rel_tol=1e-9)
    masks = masks_for("smp-s", scores, keep, temperature)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert abs(kept / total - keep) < 2 * len(masks) / total + 1e-9   # int() truncation only


def test_straight_through_gradient_is_the_mask_gradient():
    torch.manual_seed(0)
    weight = torch.randn(6, 5)
    scores = torch.randn(6, 5, requires_grad=True)
    x = torch.randn(4, 5)
    mask = topk_mask(scores, 0.4)
    ste = StraightThroughMask.apply(scores, mask)
    assert torch.equal(ste, mask.float())
    y = torch.nn.functional.linear(x, weight * ste)
    upstream = torch.randn_like(y)
    y.backward(upstream)
    # d/dM of <upstream, x @ (W * M)^T> is (upstream^T @ x) * W; the STE passes it to S unchanged.
    expected = (upstream.t() @ x) * weight
    torch.testing.assert_close(scores.grad, expected)


def test_cubic_schedule_values():
    s = CubicSchedule(final_keep=0.1, lambda_final=400.0, prune_steps=100)
    assert s.keep(0) == 1.0
    assert math.isclose(s.keep(50), 0.1 + 0.9 * 0.5 ** 3)
    assert math.isclose(s.keep(100), 0.1) and math.isclose(s.keep(1000), 0.1)
    assert s.regu_lambda(0) == 0.0
    assert math.isclose(s.regu_lambda(50), 400.0 * (1 - 0.5 ** 3))
    assert math.isclose(s.regu_lambda(150), 400.0)
    assert math.isclose(s.reg_weight(50), s.regu_lambda(50) * s.keep(50) / 0.1)
    keeps = [s.keep(t) for t in range(101)]
    assert all(a >= b for a, b in zip(keeps, keeps[1:]))
    assert CubicSchedule(final_keep=0.3, lambda_final=1.0, prune_steps=0).keep(0) == 0.3
    warm = CubicSchedule(final_keep=0.1, lambda_final=400.0, prune_steps=100, start_step=20)
    assert warm.keep(0) == warm.keep(20) == 1.0 and warm.regu_lambda(10) == 0.0
    assert math.isclose(warm.keep(70), s.keep(50)) and math.isclose(warm.keep(120), 0.1)
    assert prune_steps(336, 0.75) == 252 and prune_steps(10, 0.0) == 0


def test_regularizer_and_distillation():
    scores = [torch.zeros(3, 3), torch.full((2, 2), 100.0)]
    assert math.isclose(float(score_regularizer(scores)), (0.5 + 1.0) / 2, rel_tol=1e-6)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    same = distillation_loss(logits, logits, labels, temperature=2.0, alpha=0.5)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    torch.testing.assert_close(same, 0.5 * ce)      # KL(p || p) = 0
