"""A trained model on disk: safetensors weights beside a JSON spec, loaded without pickle."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest
import torch
from safetensors.torch import load_file

from vaeops.checkpoints import SPEC_FILE, WEIGHTS_FILE, load_model, read_model, save_model
from vaeops.models import ModelSpec, build_model


def refuse_pickle(*_args, **_kwargs):
    raise AssertionError("loading a model must not unpickle anything")


@pytest.mark.parametrize(
    "changes",
    [
        {"kind": "vae"},
        {"kind": "ae", "activation": "prelu"},
        {"kind": "vae", "architecture": "conv", "decoder_activation": "tanh"},
    ],
    ids=["vae-mlp", "ae-prelu", "vae-conv"],
)
def test_given_a_saved_model_when_loaded_then_outputs_are_identical_and_no_pickle_is_used(
    tiny_spec, tiny_images, tmp_path, monkeypatch, changes
):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_spec, **changes))
    with torch.no_grad():  # move weights and buffers away from their initial values
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    if not model.is_variational:
        model.fit_code_distribution(tiny_images)
    model.eval()
    save_model(model, tmp_path / "model")

    monkeypatch.setattr(torch, "load", refuse_pickle)
    monkeypatch.setattr(pickle, "load", refuse_pickle)
    monkeypatch.setattr(pickle, "loads", refuse_pickle)
    loaded = load_model(tmp_path / "model")

    assert not loaded.training
    assert loaded.spec == model.spec
    images = tiny_images[:8]
    with torch.no_grad():
        torch.manual_seed(1)
        expected = model(images)
        torch.manual_seed(1)
        actual = loaded(images)
    for name in ("logits", "z", "mu", "logvar"):
        expected_tensor, actual_tensor = getattr(expected, name), getattr(actual, name)
        if expected_tensor is None:
            assert actual_tensor is None
        else:
            assert torch.equal(expected_tensor, actual_tensor), name
    assert torch.equal(loaded.prior_mean, model.prior_mean)
    assert torch.equal(loaded.prior_std, model.prior_std)


def test_given_a_saved_model_when_inspected_then_it_is_safetensors_and_json(tiny_spec, tmp_path):
    model = build_model(tiny_spec)

    save_model(model, tmp_path / "nested" / "model")

    folder = tmp_path / "nested" / "model"
    assert sorted(path.name for path in folder.iterdir()) == sorted([SPEC_FILE, WEIGHTS_FILE])
    assert ModelSpec.from_json((folder / SPEC_FILE).read_text()) == tiny_spec
    assert json.loads((folder / SPEC_FILE).read_text())["latent"] == tiny_spec.latent
    weights = load_file(folder / WEIGHTS_FILE)
    assert set(weights) == set(model.state_dict())


def test_given_no_spec_file_when_read_then_file_not_found_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model spec"):
        read_model(tmp_path / SPEC_FILE, tmp_path / WEIGHTS_FILE)
