"""Hand-computed values of every measure :mod:`isoplastic.verify` reports.

The trainer's ``tolerance`` compares ``eps_scaled`` to refuse a change and the report prints all
four, so each is pinned to a value worked out by hand on two or three logits (the arithmetic is
in the comments), not to a re-implementation of the formula."""

from __future__ import annotations

import math

import pytest
import torch

import isoplastic as ip
from isoplastic.verify import compare_logits

# before: z_1 = (3, 4) (norm 5), z_2 = (0, 1) (norm 1); after: z'_1 = (3, 4.5), z'_2 = (1, 1)
BEFORE = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
AFTER = torch.tensor([[3.0, 4.5], [1.0, 1.0]], dtype=torch.float64)


def test_eps_scaled_is_mean_relative_l2_change_in_percent():
    # ‖Δ_1‖/‖z_1‖ = 0.5/5 = 0.1, ‖Δ_2‖/‖z_2‖ = 1/1 = 1; mean 0.55 → 55 %
    assert compare_logits(BEFORE, AFTER).eps_scaled == pytest.approx(55.0, rel=1e-14)


def test_max_abs_is_the_largest_single_logit_change():
    # |Δ| entries: 0, 0.5, 1, 0
    assert compare_logits(BEFORE, AFTER).max_abs == 1.0


def test_agreement_is_the_fraction_with_unchanged_argmax():
    # row 1: argmax 1 → 1 (kept); row 2: argmax 1 → 0 (ties resolve to the first index) → 1/2
    assert compare_logits(BEFORE, AFTER).agreement == 0.5
    flipped = torch.tensor([[4.0, 3.0], [1.0, 0.0]], dtype=torch.float64)
    assert compare_logits(BEFORE, flipped).agreement == 0.0
    assert compare_logits(BEFORE, BEFORE).agreement == 1.0


def test_kl_is_mean_kl_of_before_to_after_softmax_in_nats():
    # row 1: p = softmax(3, 4) = (1/(1+e), e/(1+e)), q = softmax(3, 4.5) = (1/(1+e^1.5), …)
    # KL(p‖q) = Σ p log(p/q); row 2: p = softmax(0, 1), q = softmax(1, 1) = (1/2, 1/2)
    def kl(p: list[float], q: list[float]) -> float:
        return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))

    e = math.e
    p1, q1 = [1 / (1 + e), e / (1 + e)], [1 / (1 + e ** 1.5), e ** 1.5 / (1 + e ** 1.5)]
    p2, q2 = [1 / (1 + e), e / (1 + e)], [0.5, 0.5]
    expected = (kl(p1, q1) + kl(p2, q2)) / 2
    # numerically: KL_1 = 0.02262..., KL_2 = 0.11094... (nats)
    assert expected == pytest.approx(0.066783, abs=1e-6)
    assert compare_logits(BEFORE, AFTER).kl == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("shape", [(1, 2, 2), (2, 1, 2), (2, 1, 1, 2)])
def test_token_logits_are_one_prediction_per_position(shape):
    # a language model's (batch, T, vocab) logits: the same two rows as BEFORE/AFTER laid out as
    # tokens give the per-row values above (55 %, KL 0.066783 nats per token, agreement 1/2),
    # not those of one flattened row per sequence (‖Δ‖/‖z‖ = √1.25/√26 → 21.9 % for (1, 2, 2))
    fc = compare_logits(BEFORE.reshape(shape), AFTER.reshape(shape))
    assert fc.eps_scaled == pytest.approx(55.0, rel=1e-14)
    assert fc.kl == pytest.approx(compare_logits(BEFORE, AFTER).kl, rel=1e-14)
    assert fc.agreement == 0.5 and fc.max_abs == 1.0
    net = lambda tokens: AFTER.reshape(shape) * tokens  # noqa: E731 - a callable model
    assert ip.function_change(BEFORE.reshape(shape), net, torch.ones(shape)).eps_scaled == \
        pytest.approx(55.0, rel=1e-14)


def test_a_one_dimensional_logit_vector_is_one_prediction():
    # (classes,) logits, e.g. one sample's: row 1 of BEFORE/AFTER alone gives ε = 0.5/5 = 10 %,
    # agreement 1 (argmax 1 → 1), max-abs 0.5 and row 1's KL, as the (1, classes) batch does
    fc = compare_logits(BEFORE[0], AFTER[0])
    assert fc == compare_logits(BEFORE[:1], AFTER[:1])
    assert fc.eps_scaled == pytest.approx(10.0, rel=1e-14)
    assert (fc.agreement, fc.max_abs) == (1.0, 0.5)


def test_kl_is_directional_before_to_after():
    # KL(p‖q) ≠ KL(q‖p): swapping the arguments must change the value for this pair
    forward = compare_logits(BEFORE, AFTER).kl
    backward = compare_logits(AFTER, BEFORE).kl
    assert abs(forward - backward) > 1e-3


def test_identical_logits_measure_zero_change_and_shift_invariance_of_kl():
    same = compare_logits(BEFORE, BEFORE.clone())
    assert (same.eps_scaled, same.kl, same.max_abs, same.agreement) == (0.0, 0.0, 0.0, 1.0)
    # softmax ignores a per-row constant: KL is 0 and agreement 1, but ε and max-abs are not 0
    shifted = compare_logits(BEFORE, BEFORE + 2.0)
    assert shifted.kl == pytest.approx(0.0, abs=1e-15)
    assert shifted.agreement == 1.0 and shifted.max_abs == 2.0
    # ‖(2,2)‖/5 and ‖(2,2)‖/1 → mean (√8/5 + √8)/2 · 100
    assert shifted.eps_scaled == pytest.approx(100 * (math.sqrt(8) / 5 + math.sqrt(8)) / 2, rel=1e-14)


def test_within_compares_eps_scaled_in_percent():
    change = compare_logits(BEFORE, AFTER)  # 55 % (55.00000000000001 after rounding)
    assert change.within(55.0 + 1e-9) and change.within(60.0) and not change.within(54.9)


def test_function_change_of_networks_matches_their_logits_and_restores_train_mode():
    net = ip.IsotropicMLP([2, 3, 2]).double()
    other = ip.IsotropicMLP([2, 3, 2]).double()
    x = torch.tensor([[1.0, -2.0], [0.5, 0.25]], dtype=torch.float64)
    net.train()
    with torch.no_grad():
        net.eval()
        zb, za = net(x), other.eval()(x)
    net.train()
    measured = ip.function_change(net, other, x)
    assert measured == compare_logits(zb, za)
    assert net.training


def test_within_includes_the_tolerance_itself():
    change = compare_logits(BEFORE, AFTER)
    assert change.within(change.eps_scaled)


def test_float32_logits_are_measured_in_float64():
    # 3, 4, 4.5, 0, 1 are exact in float32; the measures must match the float64 hand values to
    # float64 precision (0.5/5 = 0.1 alone is off by ~1e-8 relative if computed in float32)
    ref = compare_logits(BEFORE, AFTER)
    got = compare_logits(BEFORE.float(), AFTER.float())
    assert got.eps_scaled == pytest.approx(ref.eps_scaled, rel=1e-15)
    assert got.kl == pytest.approx(ref.kl, rel=1e-15)


def test_agreement_compares_each_row_own_argmax():
    z = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    assert compare_logits(z, z.clone()).agreement == 1.0
    assert compare_logits(z, z.flip(1)).agreement == 0.0


def test_bad_inputs_raise_value_errors_that_name_the_problem():
    with pytest.raises(ValueError, match=r"^compare_logits: shapes differ, \(2, 2\) vs \(2, 3\); "
                       "compare outputs of networks with the same number of outputs$"):
        compare_logits(BEFORE, torch.zeros(2, 3, dtype=torch.float64))
    for empty in (BEFORE[:0], torch.tensor(1.0)):  # no rows, or a 0-d tensor
        with pytest.raises(ValueError,
                           match="^compare_logits: empty batch; pass at least one probe input$"):
            compare_logits(empty, empty.clone())
    with pytest.raises(ValueError,
                       match="^function_change: pass probe inputs x when comparing networks$"):
        ip.function_change(lambda x: x, lambda x: x)


def test_function_change_evaluates_modules_in_eval_mode_and_accepts_plain_callables():
    torch.manual_seed(0)
    # dropout makes train- and eval-mode outputs differ: the measure must use eval mode
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Dropout(0.5)).double().train()
    x = torch.randn(64, 2, dtype=torch.float64)
    with torch.no_grad():
        reference = net.eval()(x)
    net.train()
    assert ip.function_change(net, reference, x).max_abs == 0.0
    assert net.training
    # a plain function has no .training attribute
    assert ip.function_change(lambda t: t * 2, lambda t: t * 2, x).max_abs == 0.0


def test_as_dict_holds_the_four_measures():
    change = compare_logits(BEFORE, AFTER)
    assert change.as_dict() == {"eps_scaled": change.eps_scaled, "kl": change.kl,
                                "max_abs": 1.0, "agreement": 0.5}
