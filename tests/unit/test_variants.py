"""Variants: the sweep's list, filtering it, and command-line values checked with the choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaeops.config import ACTIVATION_NAMES, ConfigError, parse_params
from vaeops.variants import Variant, select_variants, sweep_variants

PARAMS = parse_params(
    {
        "paths": {"variants": "out/variants", "evaluation": "out/evaluation"},
        "model": {"hidden": [32, 8], "latent": 3, "decoder_activation": "tanh"},
        "sweep": {
            "activations": ["relu", "gelu"],
            "seeds": [0, 7],
            "baseline": {"kind": "ae", "activation": "relu"},
        },
    }
)

# Every variant of PARAMS, in sweep order: activations x seeds, then the AE baseline.
SWEEP_NAMES = [
    "vae-relu-s0",
    "vae-relu-s7",
    "vae-gelu-s0",
    "vae-gelu-s7",
    "ae-relu-s0",
    "ae-relu-s7",
]


def test_given_a_sweep_when_listed_then_each_activation_seed_pair_and_the_baseline_appear():
    names = [variant.name for variant in sweep_variants(PARAMS)]

    assert names == SWEEP_NAMES


def test_given_the_default_params_when_listed_then_every_activation_seed_pair_and_the_baselines():
    params = parse_params({})

    variants = sweep_variants(params)

    vaes = [Variant("vae", name, seed) for name in params.sweep.activations for seed in (0, 1, 2)]
    baselines = [Variant("ae", "relu", seed) for seed in (0, 1, 2)]
    assert variants == vaes + baselines
    assert len(variants) == 12 * 3 + 3


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, SWEEP_NAMES),
        ({"activation": "gelu"}, ["vae-gelu-s0", "vae-gelu-s7"]),
        ({"activation": "relu"}, ["vae-relu-s0", "vae-relu-s7", "ae-relu-s0", "ae-relu-s7"]),
        ({"kind": "ae"}, ["ae-relu-s0", "ae-relu-s7"]),
        ({"seed": 0}, ["vae-relu-s0", "vae-gelu-s0", "ae-relu-s0"]),
        ({"kind": "vae", "activation": "relu", "seed": 7}, ["vae-relu-s7"]),
    ],
)
def test_given_filters_when_selecting_then_only_matching_variants_are_returned(filters, expected):
    assert [variant.name for variant in select_variants(PARAMS, **filters)] == expected


@pytest.mark.parametrize(
    "filters", [{"activation": "tanh"}, {"seed": 3}, {"kind": "ae", "activation": "gelu"}]
)
def test_given_filters_that_match_nothing_when_selecting_then_config_error_lists_the_sweep(
    filters,
):
    with pytest.raises(ConfigError) as caught:
        select_variants(PARAMS, **filters)

    for variant in sweep_variants(PARAMS):
        assert variant.name in str(caught.value)


def test_given_an_unknown_activation_when_selecting_then_config_error_lists_valid_names():
    with pytest.raises(ConfigError) as caught:
        select_variants(PARAMS, activation="nope")

    assert "--activation" in str(caught.value)
    for name in ACTIVATION_NAMES:
        assert name in str(caught.value)


def test_given_an_unknown_kind_when_selecting_then_config_error_lists_vae_and_ae():
    with pytest.raises(ConfigError, match="valid: vae, ae"):
        select_variants(PARAMS, kind="gan")


def test_given_a_variant_when_asked_for_folders_and_spec_then_they_follow_params():
    variant = Variant("vae", "gelu", 7)

    assert variant.train_dir(PARAMS) == Path("out/variants/vae-gelu-s7")
    assert variant.eval_dir(PARAMS) == Path("out/evaluation/vae-gelu-s7")
    spec = variant.model_spec(PARAMS.model, (1, 28, 28))

    assert (spec.kind, spec.activation, spec.decoder_activation) == ("vae", "gelu", "tanh")
    assert (spec.architecture, spec.hidden, spec.latent) == ("mlp", (32, 8), 3)
    assert (spec.dropout, spec.image_shape) == (0.0, (1, 28, 28))
