"""The digit classifier: learns real digits, trains bit-reproducibly, and loads without pickle."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vaeops.classifier import (
    CLASSES,
    FEATURES,
    WEIGHTS_FILE,
    DigitClassifier,
    accuracy,
    load_classifier,
    save_classifier,
    train_classifier,
)
from vaeops.config import ClassifierConfig
from vaeops.errors import VaeopsError

QUICK = ClassifierConfig(epochs=1, batch_size=16, seed=0)  # 16 Adam steps on `tiny_images`


def held_out_digits(mnist_5k) -> tuple[torch.Tensor, torch.Tensor]:
    """500 real digits (50 per class) that `tiny_images` (every 20th from 0) does not hold."""
    images, labels = mnist_5k[0][5::10], mnist_5k[1][5::10]
    as_float = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255.0)
    return as_float, torch.from_numpy(labels.astype(np.int64))


def test_given_images_when_run_then_features_and_logits_have_their_shapes(tiny_images):
    torch.manual_seed(0)
    model = DigitClassifier()

    assert model.features(tiny_images[:7]).shape == (7, FEATURES)
    assert model(tiny_images[:7]).shape == (7, CLASSES)


def test_given_250_real_digits_when_trained_one_epoch_then_held_out_accuracy_is_well_above_chance(
    tiny_images, tiny_labels, mnist_5k
):
    test_images, test_labels = held_out_digits(mnist_5k)

    model = train_classifier(tiny_images, tiny_labels, QUICK)

    assert not model.training
    assert accuracy(model, test_images, test_labels) > 0.4  # chance is 0.1; this run gives 0.61


def test_given_the_same_config_when_trained_twice_then_weights_are_bit_equal(
    tiny_images, tiny_labels
):
    global_state = torch.get_rng_state()

    images, labels = tiny_images[::4], tiny_labels[::4]  # 63 digits: 4 steps are enough here

    first = train_classifier(images, labels, QUICK)
    second = train_classifier(images, labels, QUICK)
    other_seed = train_classifier(images, labels, QUICK.model_copy(update={"seed": 1}))

    for key, weights in first.state_dict().items():
        assert torch.equal(weights, second.state_dict()[key]), key
    assert not torch.equal(first.head.weight, other_seed.head.weight)
    assert torch.equal(torch.get_rng_state(), global_state)  # the caller's random state is kept


def refuse_pickle(*_args, **_kwargs):
    raise AssertionError("loading the classifier must not unpickle anything")


def test_given_a_saved_classifier_when_loaded_then_logits_are_identical_and_no_pickle_is_used(
    tiny_images, tiny_labels, tmp_path, monkeypatch
):
    model = train_classifier(tiny_images[::4], tiny_labels[::4], QUICK)
    save_classifier(model, tmp_path / "nested" / "classifier")

    monkeypatch.setattr(torch, "load", refuse_pickle)
    monkeypatch.setattr(pickle, "load", refuse_pickle)
    monkeypatch.setattr(pickle, "loads", refuse_pickle)
    loaded = load_classifier(tmp_path / "nested" / "classifier")

    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(tiny_images), model(tiny_images))
    weights = load_file(tmp_path / "nested" / "classifier" / WEIGHTS_FILE)
    assert set(weights) == set(model.state_dict())


def test_given_no_saved_classifier_when_loaded_then_a_user_error_names_the_file_and_the_fix(
    tmp_path,
):
    with pytest.raises(VaeopsError) as raised:
        load_classifier(tmp_path / "classifier")

    message = str(raised.value)
    assert str(tmp_path / "classifier" / WEIGHTS_FILE) in message
    assert "vaeops classifier" in message
    assert isinstance(raised.value, FileNotFoundError)
    assert "\n" not in message
