"""config: params.yaml is parsed into frozen, strict models; every problem is a ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from vaeops.config import ACTIVATION_NAMES, ConfigError, Params, load_params, parse_params


def test_given_no_keys_when_parsed_then_every_section_has_its_defaults():
    params = parse_params({})

    assert params == Params()
    assert params.model.hidden == (400,)
    assert params.model.latent == 20
    assert params.train.epochs == 20
    assert params.sweep.activations == ("relu",)
    assert params.sweep.baseline.kind == "ae"
    assert params.paths.splits == Path("outputs/splits.npz")


def test_given_an_empty_yaml_file_when_loaded_then_it_is_the_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("")

    assert load_params(path) == Params()


def test_given_the_repository_params_file_when_loaded_then_it_matches_the_yaml(repo_root):
    path = repo_root / "params.yaml"
    raw = yaml.safe_load(path.read_text())

    params = load_params(path)

    assert params.model.hidden == tuple(raw["model"]["hidden"])
    assert params.model.latent == raw["model"]["latent"]
    assert params.train.epochs == raw["train"]["epochs"]
    assert params.sweep.activations == tuple(raw["sweep"]["activations"])
    assert params.sweep.seeds == tuple(raw["sweep"]["seeds"])
    assert params.paths.data == Path(raw["paths"]["data"])
    assert set(params.sweep.activations) <= set(ACTIVATION_NAMES)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"trian": {"epochs": 3}}, "trian"),
        ({"train": {"epochs_typo": 3}}, "train.epochs_typo"),
        ({"model": {"hiden": [8]}}, "model.hiden"),
        ({"sweep": {"baseline": {"knd": "ae"}}}, "sweep.baseline.knd"),
    ],
)
def test_given_an_unknown_key_when_parsed_then_config_error_names_the_key(raw, key):
    with pytest.raises(ConfigError) as caught:
        parse_params(raw)

    assert f"unknown key '{key}'" in str(caught.value)


def test_given_an_unknown_key_in_a_file_when_loaded_then_the_error_names_file_and_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: 2\n  epochs_typo: 3\n")

    with pytest.raises(ConfigError) as caught:
        load_params(path)

    assert str(path) in str(caught.value)
    assert "train.epochs_typo" in str(caught.value)


@pytest.mark.parametrize(
    "raw",
    [
        {"sweep": {"activations": ["relu", "nope"]}},
        {"sweep": {"baseline": {"activation": "nope"}}},
        {"model": {"decoder_activation": "nope"}},
    ],
    ids=["sweep", "baseline", "decoder"],
)
def test_given_a_bad_activation_name_when_parsed_then_the_error_lists_the_valid_names(raw):
    with pytest.raises(ConfigError) as caught:
        parse_params(raw)

    message = str(caught.value)
    assert "nope" in message
    for name in ACTIVATION_NAMES:
        assert f"'{name}'" in message


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"train": {"epochs": -1}}, "train.epochs"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"learning_rate": 0}}, "train.learning_rate"),
        ({"prepare": {"val_fraction": 0.5}}, "prepare.val_fraction"),
        ({"prepare": {"val_fraction": 0.7}}, "prepare.val_fraction"),
        ({"prepare": {"test_fraction": 0}}, "prepare.test_fraction"),
        ({"model": {"hidden": []}}, "model.hidden"),
        ({"model": {"hidden": [16, 0]}}, "model.hidden"),
        ({"model": {"latent": 0}}, "model.latent"),
        ({"sweep": {"seeds": [0, 1, 0]}}, "sweep.seeds"),
        ({"sweep": {"activations": ["relu", "relu"]}}, "sweep.activations"),
        ({"sweep": {"seeds": []}}, "sweep.seeds"),
        ({"model": {"architecture": "transformer"}}, "model.architecture"),
    ],
)
def test_given_a_bad_value_when_parsed_then_config_error_names_it(raw, named):
    with pytest.raises(ConfigError) as caught:
        parse_params(raw)

    assert named in str(caught.value)


def test_given_good_non_default_values_when_parsed_then_they_are_kept():
    params = parse_params(
        {
            "prepare": {"val_fraction": 0.49},
            "model": {"hidden": [32, 16], "decoder_activation": "tanh"},
            "sweep": {"seeds": [3, 1]},
        }
    )

    assert params.prepare.val_fraction == 0.49
    assert params.model.hidden == (32, 16)
    assert params.model.decoder_activation == "tanh"
    assert params.sweep.seeds == (3, 1)


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [("train", "epochs", 3), ("model", "latent", 2), ("paths", "data", Path("elsewhere"))],
)
def test_given_parsed_params_when_a_field_is_assigned_then_it_raises(section, field, value):
    params = parse_params({})

    with pytest.raises(ValidationError):
        setattr(getattr(params, section), field, value)
    with pytest.raises(ValidationError):
        params.train = params.train

    assert getattr(getattr(params, section), field) != value


def test_given_a_missing_file_when_loaded_then_config_error_names_the_path(tmp_path):
    path = tmp_path / "absent.yaml"

    with pytest.raises(ConfigError) as caught:
        load_params(path)

    assert str(path) in str(caught.value)
    assert "no such params file" in str(caught.value)


def test_given_invalid_yaml_when_loaded_then_config_error_names_the_path(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: [1, 2\n")

    with pytest.raises(ConfigError) as caught:
        load_params(path)

    assert str(path) in str(caught.value)
    assert "not valid YAML" in str(caught.value)


def test_given_yaml_that_is_not_a_mapping_when_loaded_then_config_error_says_so(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("- train\n- model\n")

    with pytest.raises(ConfigError) as caught:
        load_params(path)

    assert str(path) in str(caught.value)
    assert "expected a mapping" in str(caught.value)


def test_given_the_tiny_params_fixture_when_loaded_then_paths_are_under_tmp_path(
    tiny_params_file, tmp_path
):
    params = load_params(tiny_params_file)

    assert tiny_params_file == tmp_path / "params.yaml"
    for name, path in params.paths:
        assert path.is_relative_to(tmp_path), name
    assert params.sweep.activations == ("relu", "tanh")
    assert params.sweep.seeds == (0,)
    assert params.train.epochs == 2
    assert params.model.hidden == (32,)
    assert params.model.latent == 4
    assert params.evaluate.iwae_samples == 8
