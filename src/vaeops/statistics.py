"""Spread over seeds and paired comparisons with the best config, with scipy and statsmodels.

- `describe`: mean, sample std and a Student-t 95% interval of the mean over seeds.
- `compare_with_best`: for every other config, a paired t-test over the seeds both share (the
  seeds are shared, so pairing removes the seed-to-seed variation common to both), with Holm's
  step-down correction across the family of comparisons (Holm 1979, "A simple sequentially
  rejective multiple test procedure"), which controls the family-wise error rate at `alpha`.

Missing values are None, never NaN, so every result serializes to valid JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """Mean over n values; std (ddof=1) and the interval are None for a single value."""

    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """`config` against `best` over `n_pairs` shared seeds; mean_difference = config - best.

    p_value, p_adjusted (Holm) and mean_difference are None where no test is possible. `resolved`
    is Holm's rejection at the family's alpha: the difference is larger than seed noise explains.
    """

    config: str
    best: str
    n_pairs: int
    mean_difference: float | None
    p_value: float | None
    p_adjusted: float | None
    resolved: bool

    def as_dict(self) -> dict:
        return asdict(self)


def describe(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean, std and Student-t interval of the mean of finite values (e.g. one per seed)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0 or not np.isfinite(data).all():
        raise ValueError(f"describe needs one or more finite values, got {list(values)}")
    mean = float(data.mean())
    if data.size == 1:
        return Summary(mean, None, None, None, 1)
    std = float(data.std(ddof=1))
    if std == 0:  # scipy returns NaN for a zero scale; the interval of equal values is a point
        return Summary(mean, 0.0, mean, mean, int(data.size))
    low, high = stats.t.interval(confidence, df=data.size - 1, loc=mean, scale=stats.sem(data))
    return Summary(mean, std, float(low), float(high), int(data.size))


def best_config(per_config_means: Mapping[str, float], lower_is_better: bool = True) -> str:
    """The config with the lowest (or highest) mean; non-finite means (diverged) never win."""
    finite = {name: mean for name, mean in per_config_means.items() if math.isfinite(mean)}
    if not finite:
        raise ValueError(f"no config has a finite mean: {dict(per_config_means)}")
    choose = min if lower_is_better else max
    return choose(finite, key=finite.__getitem__)


def paired_test(
    config: Mapping[int, float], best: Mapping[int, float]
) -> tuple[int, float | None, float | None]:
    """(shared seeds, mean of config - best, two-sided p) of a paired t-test over shared seeds.

    p is None for fewer than 2 pairs, or where every pair differs by the same amount (equal
    values included): the differences have no spread to judge their mean against, and the t
    statistic is undefined (scipy would report p = 0 for any constant nonzero difference).
    """
    seeds = sorted(config.keys() & best.keys())
    if not seeds:
        return 0, None, None
    ours = np.array([config[seed] for seed in seeds], dtype=float)
    theirs = np.array([best[seed] for seed in seeds], dtype=float)
    differences = ours - theirs
    mean_difference = float(differences.mean())
    if len(seeds) < 2 or np.ptp(differences) == 0:
        return len(seeds), mean_difference, None
    return len(seeds), mean_difference, float(stats.ttest_rel(ours, theirs).pvalue)


def compare_with_best(
    per_config: Mapping[str, Mapping[int, float]],
    best: str,
    alpha: float,
    lower_is_better: bool = True,
) -> list[Comparison]:
    """Every other config against `best` (in `per_config` order), Holm-corrected at `alpha`.

    per_config maps config -> seed -> value. The family is the comparisons that have a p-value.
    A resolved comparison is also one where `best` is the better side; a significant difference
    in the other direction says `best` was not the best on these seeds and is not resolved.
    """
    if best not in per_config:
        raise ValueError(f"best config '{best}' is not among {sorted(per_config)}")
    others = [name for name in per_config if name != best]
    tests = {name: paired_test(per_config[name], per_config[best]) for name in others}
    testable = [name for name in others if tests[name][2] is not None]
    adjusted, rejected = {}, {}
    if testable:
        reject, p_adjusted, _, _ = multipletests(
            [tests[name][2] for name in testable], alpha=alpha, method="holm"
        )
        adjusted = dict(zip(testable, p_adjusted.tolist(), strict=True))
        rejected = dict(zip(testable, reject.tolist(), strict=True))
    comparisons = []
    for name in others:
        n_pairs, difference, p_value = tests[name]
        best_is_better = difference is not None and (
            difference > 0 if lower_is_better else difference < 0
        )
        comparisons.append(
            Comparison(
                config=name,
                best=best,
                n_pairs=n_pairs,
                mean_difference=difference,
                p_value=p_value,
                p_adjusted=adjusted.get(name),
                resolved=bool(rejected.get(name, False)) and best_is_better,
            )
        )
    return comparisons
