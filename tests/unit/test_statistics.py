"""Spread over seeds and Holm-corrected paired comparisons, checked against hand-computed cases."""

from __future__ import annotations

import json
import math

import pytest

from vaeops.statistics import Comparison, best_config, compare_with_best, describe, paired_test

# Student-t 97.5% quantile for 2 degrees of freedom, from printed t tables.
T_975_DF2 = 4.302653


def test_given_three_values_when_described_then_mean_std_and_t_interval_match_hand_values():
    summary = describe([1.0, 2.0, 3.0])

    half_width = T_975_DF2 * 1.0 / math.sqrt(3)  # t * std / sqrt(n), std = 1
    assert summary.mean == pytest.approx(2.0)
    assert summary.std == pytest.approx(1.0)
    assert summary.ci_low == pytest.approx(2.0 - half_width, abs=1e-5)
    assert summary.ci_high == pytest.approx(2.0 + half_width, abs=1e-5)
    assert summary.n == 3


def test_given_one_value_when_described_then_spread_is_none_and_json_is_valid():
    summary = describe([4.5])

    assert summary.as_dict() == {"mean": 4.5, "std": None, "ci_low": None, "ci_high": None, "n": 1}
    assert json.loads(json.dumps(summary.as_dict(), allow_nan=False))["std"] is None


def test_given_equal_values_when_described_then_the_interval_is_the_point():
    summary = describe([7.0, 7.0, 7.0])

    assert (summary.std, summary.ci_low, summary.ci_high) == (0.0, 7.0, 7.0)


@pytest.mark.parametrize("values", [[], [1.0, math.nan], [math.inf, 2.0]], ids=str)
def test_given_no_or_non_finite_values_when_described_then_value_error(values):
    with pytest.raises(ValueError, match="finite"):
        describe(values)


def test_given_means_when_best_is_chosen_then_direction_is_respected_and_nan_never_wins():
    means = {"relu": 100.0, "tanh": 98.0, "exp": math.nan, "silu": 99.0}

    assert best_config(means) == "tanh"
    assert best_config(means, lower_is_better=False) == "relu"
    with pytest.raises(ValueError, match="no config has a finite mean"):
        best_config({"exp": math.nan})


def test_given_differences_1_2_3_when_compared_then_p_is_the_t_test_closed_form():
    # Paired differences d = (1, 2, 3): t = mean / (sd / sqrt n) = 2 / (1 / sqrt 3) = sqrt 12 on
    # 2 degrees of freedom, whose two-sided p has the closed form 1 - t / sqrt(t^2 + 2).
    per_config = {"best": {0: 10.0, 1: 10.0, 2: 10.0}, "other": {0: 11.0, 1: 12.0, 2: 13.0}}

    [comparison] = compare_with_best(per_config, "best", alpha=0.05)

    expected_p = 1 - math.sqrt(12) / math.sqrt(14)
    assert comparison.n_pairs == 3
    assert comparison.mean_difference == pytest.approx(2.0)
    assert comparison.p_value == pytest.approx(expected_p)  # 0.0742
    assert comparison.p_adjusted == pytest.approx(expected_p)  # a family of one
    assert comparison.resolved is False  # 0.074 > 0.05: within noise


def paired(best: list[float], differences: list[float]) -> dict[int, float]:
    """seed -> best's value plus that seed's difference."""
    shifted = zip(best, differences, strict=True)
    return {seed: value + difference for seed, (value, difference) in enumerate(shifted)}


def test_given_three_comparisons_when_compared_then_holm_adjusts_in_step_down_order():
    best = [10.0, 11.0, 9.0, 10.5]
    per_config = {
        "best": dict(enumerate(best)),
        "near": paired(best, [0.1, -0.2, 0.3, 0.05]),  # within noise
        "far": paired(best, [5.0, 5.2, 4.9, 5.1]),  # clearly worse
        "mid": paired(best, [1.0, 0.6, 1.3, 0.9]),  # worse, less clearly
    }

    comparisons = compare_with_best(per_config, "best", alpha=0.05)

    by_name = {comparison.config: comparison for comparison in comparisons}
    assert [comparison.config for comparison in comparisons] == ["near", "far", "mid"]
    # Holm: sort p ascending, multiply the i-th smallest (0-based) by m - i, keep it monotone.
    p = {name: by_name[name].p_value for name in by_name}
    assert p["far"] < p["mid"] < p["near"]
    assert by_name["far"].p_adjusted == pytest.approx(3 * p["far"])
    assert by_name["mid"].p_adjusted == pytest.approx(max(3 * p["far"], 2 * p["mid"]))
    assert by_name["near"].p_adjusted == pytest.approx(min(1.0, max(2 * p["mid"], p["near"])))
    assert by_name["far"].resolved and by_name["mid"].resolved
    assert not by_name["near"].resolved


def test_given_higher_is_better_when_best_is_worse_on_shared_seeds_then_it_is_not_resolved():
    per_config = {"best": {0: 0.90, 1: 0.91, 2: 0.92}, "other": {0: 0.95, 1: 0.97, 2: 0.98}}

    [lower_wins] = compare_with_best(per_config, "best", alpha=0.5, lower_is_better=True)
    [higher_wins] = compare_with_best(per_config, "best", alpha=0.5, lower_is_better=False)

    assert lower_wins.p_adjusted < 0.5
    assert lower_wins.resolved  # lower is better: best's smaller values are the better side
    assert not higher_wins.resolved  # higher is better: "best" is significantly worse


def test_given_too_few_shared_seeds_or_equal_pairs_when_compared_then_p_is_none_and_not_in_family():
    per_config = {
        "best": {0: 1.0, 1: 2.0, 2: 3.0},
        "one_seed": {0: 5.0, 7: 6.0},
        "disjoint": {8: 5.0, 9: 6.0},
        "same": {0: 1.0, 1: 2.0, 2: 3.0},
        "tested": {0: 2.0, 1: 4.0, 2: 4.5},
    }

    comparisons = {c.config: c for c in compare_with_best(per_config, "best", alpha=0.05)}

    assert comparisons["one_seed"] == Comparison("one_seed", "best", 1, 4.0, None, None, False)
    assert comparisons["disjoint"] == Comparison("disjoint", "best", 0, None, None, None, False)
    assert comparisons["same"] == Comparison("same", "best", 3, 0.0, None, None, False)
    # The family is the one comparison with a p-value, so Holm leaves it unchanged.
    assert comparisons["tested"].p_adjusted == pytest.approx(comparisons["tested"].p_value)
    payload = [c.as_dict() for c in comparisons.values()]
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload


def test_given_an_unknown_best_when_compared_then_value_error_names_it():
    with pytest.raises(ValueError, match="'gelu' is not among"):
        compare_with_best({"relu": {0: 1.0}}, "gelu", alpha=0.05)


def test_given_the_same_difference_on_every_seed_when_tested_then_no_p_value():
    """A constant difference (e.g. one epoch slower on every seed) has no spread to test."""
    n_pairs, difference, p_value = paired_test({0: 7, 1: 9, 2: 8}, {0: 6, 1: 8, 2: 7})

    assert (n_pairs, difference, p_value) == (3, 1.0, None)
