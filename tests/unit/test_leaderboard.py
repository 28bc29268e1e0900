"""The leaderboard's aggregate: one score per activation config over its usable seeds."""

from __future__ import annotations

import math

import pytest

from vaeops.config import parse_params
from vaeops.leaderboard import aggregate, leaderboard_rows
from vaeops.outputs import EVAL_FILE, TRAIN_FILE, write_json

METRIC = "val/iwae_nll"


def row(kind: str, activation: str, seed: int, value: float | None, diverged: bool = False):
    return {
        "config": f"{kind}-{activation}",
        "variant": f"{kind}-{activation}-s{seed}",
        "kind": kind,
        "activation": activation,
        "seed": seed,
        "diverged": diverged,
        METRIC: value,
    }


ROWS = [
    row("vae", "relu", 0, 104.0),
    row("vae", "relu", 1, 100.0),
    row("vae", "relu", 2, 102.0),
    row("vae", "tanh", 0, 94.0),
    row("vae", "tanh", 1, 90.0),
    row("vae", "tanh", 2, 1.0, diverged=True),  # a diverged seed's figure is never used
    row("vae", "exp", 0, float("nan"), diverged=True),
    row("vae", "exp", 1, 5.0, diverged=True),
    row("ae", "relu", 0, None),  # the AE has no likelihood bound
    row("ae", "relu", 1, None),
]


def test_given_rows_when_aggregated_then_configs_are_ranked_by_mean_and_std_over_usable_seeds():
    scores = aggregate(ROWS, METRIC)

    assert [score.config for score in scores] == ["vae-tanh", "vae-relu"]
    tanh, relu = scores
    assert tanh.mean == pytest.approx(92.0)
    assert tanh.std == pytest.approx(math.sqrt(8.0))  # sample std of 94, 90
    assert (tanh.seeds, tanh.diverged) == (2, 1)
    assert (tanh.best_variant, tanh.best_value) == ("vae-tanh-s1", 90.0)
    assert (tanh.kind, tanh.activation) == ("vae", "tanh")
    assert relu.mean == pytest.approx(102.0)
    assert relu.std == pytest.approx(2.0)
    assert (relu.seeds, relu.diverged) == (3, 0)
    assert (relu.best_variant, relu.best_value) == ("vae-relu-s1", 100.0)


def test_given_configs_without_the_metric_or_all_diverged_when_aggregated_then_left_out():
    configs = {score.config for score in aggregate(ROWS, METRIC)}

    assert "ae-relu" not in configs
    assert "vae-exp" not in configs


def test_given_a_metric_the_ae_defines_when_aggregated_then_the_ae_is_ranked_too():
    rows = [dict(r, **{"val/reconstruction": 80.0 + r["seed"]}) for r in ROWS]

    scores = {score.config: score for score in aggregate(rows, "val/reconstruction")}

    assert set(scores) == {"vae-relu", "vae-tanh", "ae-relu"}
    assert scores["ae-relu"].mean == pytest.approx(80.5)


def test_given_a_single_seed_when_aggregated_then_std_is_zero():
    (score,) = aggregate([row("vae", "gelu", 3, 50.0)], METRIC)

    assert (score.mean, score.std, score.seeds) == (50.0, 0.0, 1)


def test_given_rows_missing_the_metric_key_when_aggregated_then_they_are_skipped():
    rows = [
        row("vae", "relu", 0, 10.0),
        {k: v for k, v in row("vae", "relu", 1, 0.0).items() if k != METRIC},
    ]

    (score,) = aggregate(rows, METRIC)

    assert (score.mean, score.seeds) == (10.0, 1)


def test_given_variant_output_files_when_rows_are_read_then_train_and_eval_are_merged(tmp_path):
    params = parse_params(
        {
            "paths": {"variants": str(tmp_path / "v"), "evaluation": str(tmp_path / "e")},
            "sweep": {"activations": ["relu"], "seeds": [0]},
        }
    )
    for name in ("vae-relu-s0", "ae-relu-s0"):
        kind = name.split("-")[0]
        write_json(tmp_path / "v" / name / TRAIN_FILE, {"variant": name, "kind": kind})
        write_json(tmp_path / "e" / name / EVAL_FILE, {METRIC: 1.5 if kind == "vae" else None})

    rows = leaderboard_rows(params)

    assert rows == [
        {"config": "vae-relu", "variant": "vae-relu-s0", "kind": "vae", METRIC: 1.5},
        {"config": "ae-relu", "variant": "ae-relu-s0", "kind": "ae", METRIC: None},
    ]


def test_given_a_missing_eval_file_when_rows_are_read_then_file_not_found_says_what_to_run(
    tmp_path,
):
    params = parse_params({"paths": {"variants": str(tmp_path), "evaluation": str(tmp_path)}})

    with pytest.raises(FileNotFoundError, match="dvc repro"):
        leaderboard_rows(params)
