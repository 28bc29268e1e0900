"""Sample quality in the digit classifier's feature space: distances and coverage that add up."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from vaeops.classifier import CLASSES, train_classifier
from vaeops.config import ClassifierConfig
from vaeops.models import build_model
from vaeops.sample_quality import frechet_distance, sample_statistics, score_samples


def real_digits_from(mnist_5k, offset: int, stride: int) -> tuple[torch.Tensor, np.ndarray]:
    """Every `stride`-th of the label-sorted 5k digits from `offset`, (n, 1, 28, 28), and labels."""
    images = torch.from_numpy(mnist_5k[0][offset::stride].copy()).unsqueeze(1).float() / 255.0
    return images, mnist_5k[1][offset::stride].astype(np.int64)


@pytest.fixture(scope="module")
def classifier(mnist_5k):
    """A weak but real digit classifier: one epoch (16 steps) on 250 digits, trained once."""
    images, labels = real_digits_from(mnist_5k, offset=0, stride=20)
    config = ClassifierConfig(epochs=1, batch_size=16)
    return train_classifier(images, torch.from_numpy(labels), config)


@pytest.fixture
def real_digits(mnist_5k) -> torch.Tensor:
    """500 real digits (50 per class) that the classifier did not see: (500, 1, 28, 28)."""
    return real_digits_from(mnist_5k, offset=5, stride=10)[0]


def test_given_real_halves_and_noise_when_distances_are_taken_then_noise_is_far_and_self_is_zero(
    classifier, real_digits
):
    noise = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0))

    to_itself = frechet_distance(classifier, real_digits, real_digits)
    between_halves = frechet_distance(classifier, real_digits[::2], real_digits[1::2])
    to_noise = frechet_distance(classifier, real_digits, noise)

    assert abs(to_itself) < 1e-6 * to_noise
    assert 0 < between_halves < 0.05 * to_noise


def test_given_samples_of_one_predicted_class_when_described_then_one_class_is_covered(
    classifier, real_digits
):
    predicted = classifier(real_digits).argmax(dim=-1)
    ones = real_digits[predicted == 1]  # what the classifier calls a 1, right or wrong

    statistics = sample_statistics(classifier, ones)

    assert statistics["classes_covered"] == 1
    assert statistics["class_counts"][1] == len(ones) == sum(statistics["class_counts"]) > 0
    assert statistics["class_entropy"] == pytest.approx(0.0, abs=1e-6)
    assert 1 / CLASSES < statistics["mean_confidence"] <= 1


def copies_of_predicted(classifier, images: torch.Tensor, label: int, count: int) -> torch.Tensor:
    """`count` copies of the first image that the classifier predicts as `label`."""
    predicted = classifier(images).argmax(dim=-1)
    first = images[predicted == label][:1]
    assert len(first) == 1, f"no image is predicted as {label}"
    return first.repeat(count, 1, 1, 1)


def test_given_two_predicted_classes_in_equal_numbers_then_two_are_covered_at_entropy_log2(
    classifier, real_digits
):
    zeros, ones = (copies_of_predicted(classifier, real_digits, label, 50) for label in (0, 1))
    samples = torch.cat([zeros, ones])

    statistics = sample_statistics(classifier, samples)

    assert statistics["class_counts"] == [50, 50] + [0] * (CLASSES - 2)
    assert statistics["classes_covered"] == 2
    assert statistics["class_entropy"] == pytest.approx(math.log(2) / math.log(10))


def test_given_a_class_under_two_percent_when_described_then_it_is_counted_but_not_covered(
    classifier, real_digits
):
    majority = copies_of_predicted(classifier, real_digits, 0, 99)
    samples = torch.cat([majority, copies_of_predicted(classifier, real_digits, 1, 1)])

    statistics = sample_statistics(classifier, samples)

    assert statistics["class_counts"][:2] == [99, 1]
    assert statistics["classes_covered"] == 1
    entropy = -(0.99 * math.log(0.99) + 0.01 * math.log(0.01)) / math.log(10)
    assert statistics["class_entropy"] == pytest.approx(entropy)


def test_given_every_class_when_described_then_coverage_is_full(classifier, real_digits):
    statistics = sample_statistics(classifier, real_digits)

    assert statistics["classes_covered"] == CLASSES
    assert sum(statistics["class_counts"]) == len(real_digits)
    assert 0.8 < statistics["class_entropy"] <= 1


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_given_a_model_when_scored_with_a_seed_then_scores_repeat_and_another_seed_differs(
    classifier, real_digits, tiny_spec, tiny_images, kind
):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_spec, kind=kind))
    if kind == "ae":
        model.fit_code_distribution(tiny_images)

    first = score_samples(classifier, real_digits, model, n_samples=200, seed=3)
    again = score_samples(classifier, real_digits, model, n_samples=200, seed=3)
    other = score_samples(classifier, real_digits, model, n_samples=200, seed=4)

    assert first == again
    assert first["frechet_distance"] != other["frechet_distance"]
    assert set(first) == {
        "n_samples",
        "frechet_distance",
        "mean_confidence",
        "classes_covered",
        "class_entropy",
        "class_counts",
    }
    assert first["n_samples"] == sum(first["class_counts"]) == 200
    assert math.isfinite(first["frechet_distance"]) and first["frechet_distance"] > 0
    assert json.loads(json.dumps(first, allow_nan=False)) == first
    assert all(isinstance(count, int) for count in first["class_counts"])
    assert np.isclose(first["class_entropy"], other["class_entropy"], atol=0.2)


def test_given_a_classifier_left_in_train_mode_when_scoring_then_scores_equal_eval_mode_ones(
    classifier, real_digits
):
    halves = real_digits[::2], real_digits[1::2]
    expected_distance = frechet_distance(classifier.eval(), *halves)
    expected_statistics = sample_statistics(classifier.eval(), real_digits)

    # Guards the classifier's promise: no batch norm or dropout, whose train mode would differ.
    distance = frechet_distance(classifier.train(), *halves)
    statistics = sample_statistics(classifier.train(), real_digits)

    assert distance == expected_distance
    assert statistics == expected_statistics
