"""Identities: a variant is the same computation exactly when its definition, split file, model
and train params (and the train step's code) are; an evaluation adds the evaluate params."""

from __future__ import annotations

import pytest

from vaeops.config import parse_params
from vaeops.identity import evaluation_key, study_key, variant_identity
from vaeops.variants import Variant

VARIANT = Variant("vae", "relu", 0)


@pytest.fixture
def make_params(tmp_path):
    """`make(**sections)` -> params whose split file is a small file in tmp_path."""
    splits = tmp_path / "splits.npz"
    splits.write_bytes(b"the split file")

    def make(**sections):
        return parse_params({"paths": {"splits": str(splits)}} | sections)

    return make


@pytest.mark.parametrize(
    "variant",
    [Variant("vae", "relu", 1), Variant("vae", "tanh", 0), Variant("ae", "relu", 0)],
    ids=["seed", "activation", "kind"],
)
def test_given_another_variant_definition_when_identified_then_the_identity_differs(
    make_params, variant
):
    params = make_params()

    assert variant_identity(params, variant) != variant_identity(params, VARIANT)


@pytest.mark.parametrize(
    "sections",
    [
        {"model": {"hidden": [32]}},
        {"model": {"architecture": "conv"}},
        {"model": {"decoder_activation": "tanh"}},
        {"train": {"epochs": 3}},
        {"train": {"learning_rate": 0.01}},
        {"train": {"beta": 0.5}},
    ],
    ids=["hidden", "architecture", "decoder", "epochs", "learning-rate", "beta"],
)
def test_given_other_model_or_train_params_when_identified_then_the_identity_differs(
    make_params, sections
):
    assert variant_identity(make_params(**sections), VARIANT) != variant_identity(
        make_params(), VARIANT
    )


def test_given_another_split_file_when_identified_then_the_identity_differs(make_params):
    params = make_params()
    before = variant_identity(params, VARIANT)

    params.paths.splits.write_bytes(b"another split")

    assert variant_identity(params, VARIANT) != before


@pytest.mark.parametrize(
    "sections",
    [
        {"sweep": {"activations": ["relu", "gelu", "mish"], "seeds": [0, 5]}},
        {"sweep": {"baseline": {"activation": "tanh"}}},
        {"evaluate": {"iwae_samples": 3, "seed": 9}},
        {"promote": {"min_margin": 0.0}},
        {"tracking": {"experiment": "another"}},
    ],
    ids=["sweep-lists", "baseline", "evaluate", "promote", "experiment"],
)
def test_given_settings_the_training_does_not_read_when_identified_then_the_identity_is_the_same(
    make_params, sections
):
    params, other = make_params(), make_params(**sections)

    assert variant_identity(other, VARIANT) == variant_identity(params, VARIANT)
    assert study_key(other) == study_key(params)


def test_given_the_same_settings_in_another_folder_when_identified_then_the_identity_is_the_same(
    make_params, tmp_path
):
    moved = tmp_path / "elsewhere" / "splits.npz"
    moved.parent.mkdir()
    moved.write_bytes(b"the split file")  # the same bytes

    other = parse_params({"paths": {"splits": str(moved)}})

    assert variant_identity(other, VARIANT) == variant_identity(make_params(), VARIANT)


def test_given_other_evaluate_params_when_keyed_then_the_evaluation_key_differs(make_params):
    identity = variant_identity(make_params(), VARIANT)
    key = evaluation_key(make_params(), identity)

    assert evaluation_key(make_params(evaluate={"iwae_samples": 3}), identity) != key
    assert evaluation_key(make_params(evaluate={"seed": 1}), identity) != key
    assert evaluation_key(make_params(), "another-variant") != key
    assert evaluation_key(make_params(sweep={"seeds": [4]}), identity) == key


def test_given_other_train_step_code_when_identified_then_the_identity_differs(
    make_params, monkeypatch
):
    params = make_params()
    before = variant_identity(params, VARIANT)

    monkeypatch.setattr("vaeops.identity.code_digest", lambda module: f"edited {module}")

    assert variant_identity(params, VARIANT) != before
