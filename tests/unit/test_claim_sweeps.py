"""The claim sweeps' points: which variants, with which settings, in which folders."""

from __future__ import annotations

import pytest

from vaeops.config import ConfigError, parse_params
from vaeops.steps.claim_sweeps import point_params, sweep_points

CLAIMS = {
    "seeds": [0, 1],
    "beta_activations": ["relu", "silu"],
    "betas": [0.5, 4.0],
    "dropouts": [0.3],
    "latents": [2, 40],
}


@pytest.fixture
def params():
    return parse_params({"sweep": {"seeds": [0, 1, 2]}, "claims": CLAIMS})


def test_given_a_best_config_when_points_listed_then_every_sweep_value_for_every_seed(params):
    points = sweep_points(params, best="prelu")

    names = {point.variant.name for point in points}
    assert len(points) == len(names) == (2 * 2 + 1 + 2) * 2
    assert "vae-silu-s1-beta0.5" in names
    assert "vae-prelu-s0-dropout0.3" in names
    assert "vae-prelu-s1-latent40" in names
    assert {point.variant.config_name for point in points if point.sweep == "latent"} == {
        "vae-prelu-latent2",
        "vae-prelu-latent40",
    }


def test_given_no_best_config_when_points_listed_then_only_the_beta_sweep(params):
    assert {point.sweep for point in sweep_points(params, best=None)} == {"beta"}


def test_given_a_point_when_its_params_derived_then_one_setting_and_the_folders_change(params):
    point = next(p for p in sweep_points(params, "prelu") if p.sweep == "latent")

    derived = point_params(params, point)

    assert derived.model.latent == point.value == 2
    assert derived.model.model_dump(exclude={"latent"}) == params.model.model_dump(
        exclude={"latent"}
    )
    assert derived.train == params.train
    assert derived.paths.variants == params.paths.claim_sweeps / "variants"
    assert derived.paths.evaluation == params.paths.claim_sweeps / "evaluation"
    assert derived.root == params.root


def test_given_claim_seeds_outside_the_sweep_when_parsed_then_the_error_names_both():
    with pytest.raises(ConfigError, match=r"claims.seeds \[5\] are not in sweep.seeds \[0, 1\]"):
        parse_params({"sweep": {"seeds": [0, 1]}, "claims": {"seeds": [0, 5]}})
