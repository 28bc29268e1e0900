"""The study's table: one row per variant, and the per-activation-config aggregate over seeds."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from vaeops.config import Params
from vaeops.outputs import EVAL_FILE, TRAIN_FILE, read_json
from vaeops.variants import Variant, sweep_variants

# The figures of a variant that registered model versions carry as tags.
KEY_METRICS = (
    "val/iwae_nll",
    "val/neg_elbo",
    "val/reconstruction",
    "val/active_units",
    "test/iwae_nll",
    "test/neg_elbo",
    "test/reconstruction",
)


@dataclass(frozen=True)
class ConfigScore:
    """One activation config (kind + activation) aggregated over its non-diverged seeds."""

    config: str
    kind: str
    activation: str
    mean: float
    std: float
    seeds: int
    diverged: int
    best_variant: str
    best_value: float


def variant_row(params: Params, variant: Variant) -> dict:
    trained = read_json(variant.train_dir(params) / TRAIN_FILE)
    evaluated = read_json(variant.eval_dir(params) / EVAL_FILE)
    return {"config": variant.config_name, **trained, **evaluated}


def leaderboard_rows(params: Params) -> list[dict]:
    return [variant_row(params, variant) for variant in sweep_variants(params)]


def aggregate(rows: list[dict], metric: str) -> list[ConfigScore]:
    """Mean and spread of `metric` (lower is better) per config, best config first.

    Configs where every seed diverged, or whose kind does not define the metric, are left out.
    """
    scores = []
    for config in dict.fromkeys(row["config"] for row in rows):
        members = [row for row in rows if row["config"] == config]
        usable = [row for row in members if not row["diverged"] and row.get(metric) is not None]
        if not usable:
            continue
        values = [row[metric] for row in usable]
        best = min(usable, key=lambda row: row[metric])
        scores.append(
            ConfigScore(
                config=config,
                kind=best["kind"],
                activation=best["activation"],
                mean=statistics.fmean(values),
                std=statistics.stdev(values) if len(values) > 1 else 0.0,
                seeds=len(values),
                diverged=sum(row["diverged"] for row in members),
                best_variant=best["variant"],
                best_value=best[metric],
            )
        )
    return sorted(scores, key=lambda score: score.mean)
