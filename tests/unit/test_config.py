"""config: params.yaml is parsed into strict models whose defaults are the study's params.yaml;
relative paths follow the params file; every problem is a ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vaeops.config import ACTIVATION_NAMES, ConfigError, load_params, parse_params


def test_given_no_keys_when_parsed_then_every_default_is_the_repository_params_file(repo_root):
    """The config models' defaults are the study's params.yaml: one source of truth each way."""
    defaults = parse_params({})

    from_file = load_params(repo_root / "params.yaml")

    assert defaults.model_dump(exclude={"paths"}) == from_file.model_dump(exclude={"paths"})
    assert defaults.paths.resolved(repo_root) == from_file.paths


def test_given_no_keys_when_parsed_then_the_sweep_is_every_stable_activation_over_three_seeds():
    params = parse_params({})

    assert params.sweep.activations == tuple(name for name in ACTIVATION_NAMES if name != "exp")
    assert len(params.sweep.activations) == 12
    assert params.sweep.seeds == (0, 1, 2)
    assert params.train.epochs == 15
    assert (params.sweep.baseline.kind, params.sweep.baseline.activation) == ("ae", "relu")
    assert params.paths.splits == Path("outputs/splits.npz")


def test_given_an_empty_yaml_file_when_loaded_then_it_is_the_defaults_rooted_at_its_folder(
    tmp_path,
):
    path = tmp_path / "params.yaml"
    path.write_text("")

    params = load_params(path)

    assert params.root == tmp_path
    assert params.model_dump(exclude={"paths"}) == parse_params({}).model_dump(exclude={"paths"})
    assert params.paths.splits == tmp_path / "outputs" / "splits.npz"
    assert params.paths.data_dvc == tmp_path / "data.dvc"


def test_given_relative_and_absolute_paths_when_loaded_elsewhere_then_relative_ones_follow_the_file(
    tmp_path, monkeypatch
):
    project = tmp_path / "project"
    project.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = project / "params.yaml"
    path.write_text(f"paths:\n  data: ../shared/data\n  metrics: {tmp_path / 'abs'}\n")
    monkeypatch.chdir(elsewhere)

    params = load_params(path)

    assert params.paths.data == project / "../shared/data"
    assert params.paths.metrics == tmp_path / "abs"
    assert params.paths.variants == project / "outputs" / "variants"
    for name, value in params.paths:
        assert value.is_absolute(), name


def test_given_the_repository_params_file_when_loaded_then_it_matches_the_yaml(repo_root):
    path = repo_root / "params.yaml"
    raw = yaml.safe_load(path.read_text())

    params = load_params(path)

    assert params.root == repo_root
    assert params.model.hidden == tuple(raw["model"]["hidden"])
    assert params.model.latent == raw["model"]["latent"]
    assert params.train.epochs == raw["train"]["epochs"]
    assert params.sweep.activations == tuple(raw["sweep"]["activations"])
    assert params.sweep.seeds == tuple(raw["sweep"]["seeds"])
    assert set(raw["paths"]) == {name for name, _ in params.paths}
    for name, value in params.paths:
        assert value == repo_root / raw["paths"][name], name


def test_given_no_path_when_loaded_from_a_subfolder_then_the_projects_params_file_is_used(
    tmp_path, monkeypatch
):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 3\n")
    (tmp_path / "src" / "deep").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "src" / "deep")

    params = load_params()

    assert params.root == tmp_path
    assert params.train.epochs == 3
    assert params.paths.data == tmp_path / "data"


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


@pytest.mark.parametrize(
    ("raw", "valid"),
    [
        ({"trian": {}}, "paths, data, prepare, model, train, sweep, evaluate, tracking, promote"),
        ({"train": {"epochs_typo": 3}}, "epochs, batch_size, learning_rate, beta, max_loss"),
        ({"sweep": {"baseline": {"knd": "ae"}}}, "valid keys here: kind, activation"),
        ({"paths": {"promotion": "p.json"}}, "data, splits, variants, evaluation, summary"),
    ],
)
def test_given_an_unknown_key_when_parsed_then_the_error_lists_the_valid_keys_there(raw, valid):
    with pytest.raises(ConfigError) as caught:
        parse_params(raw)

    assert "valid keys here: " in str(caught.value)
    assert valid in str(caught.value)


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
    ("content", "expected"),
    [
        (None, "no such params file"),
        ("train:\n  epochs: [1, 2\n", "not valid YAML"),
        ("- train\n- model\n", "expected a mapping"),
    ],
    ids=["missing", "invalid-yaml", "not-a-mapping"],
)
def test_given_an_unusable_file_when_loaded_then_config_error_names_the_path_and_problem(
    tmp_path, content, expected
):
    path = tmp_path / "params.yaml"
    if content is not None:
        path.write_text(content)

    with pytest.raises(ConfigError) as caught:
        load_params(path)

    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


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
