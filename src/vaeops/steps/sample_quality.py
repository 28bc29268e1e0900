"""Sample quality: train the digit classifier once, then score every variant's prior samples.

The classifier's features are the space in which a variant's samples are compared with the test
images (a Frechet distance, `vaeops.sample_quality`); its confidence and class coverage on the
samples say whether they look like digits, and like every digit. The AE baseline is scored the
same way, from the Gaussian fitted to its codes.
"""

from __future__ import annotations

import torch

from vaeops.checkpoints import load_model
from vaeops.classifier import accuracy, load_classifier, save_classifier, train_classifier
from vaeops.config import Params
from vaeops.data.splits import load_split
from vaeops.outputs import TRAIN_FILE, read_json, write_json
from vaeops.sample_quality import score_samples
from vaeops.variants import sweep_variants

CLASSIFIER_METRICS = "classifier.json"


def train_digit_classifier(params: Params) -> dict:
    """Train on the train split, save to `paths.classifier`; its test accuracy (a DVC metric)."""
    train = load_split(params.paths.splits, "train")
    test = load_split(params.paths.splits, "test")
    classifier = train_classifier(train.images, train.labels, params.classifier)
    save_classifier(classifier, params.paths.classifier)
    metrics = {
        "test_accuracy": accuracy(classifier, test.images, test.labels),
        "train_images": len(train.images),
        "test_images": len(test.images),
    }
    write_json(params.paths.metrics / CLASSIFIER_METRICS, metrics)
    return metrics


def score_variant(params: Params, name: str, classifier, test_images: torch.Tensor) -> dict:
    """One variant's sample-quality figures; a diverged variant has none."""
    trained = read_json(params.paths.variants / name / TRAIN_FILE)
    if trained["diverged"]:
        return {"variant": name, "diverged": True}
    model = load_model(params.paths.variants / name)
    config = params.sample_quality
    scores = score_samples(classifier, test_images, model, config.n_samples, config.seed)
    return {"variant": name, "diverged": False, **scores}


def score_sweep(params: Params) -> list[dict]:
    """Score every variant of the main sweep into `paths.sample_quality/<variant>.json`."""
    classifier = load_classifier(params.paths.classifier)
    test_images = load_split(params.paths.splits, "test").images
    scores = []
    for variant in sweep_variants(params):
        score = score_variant(params, variant.name, classifier, test_images)
        write_json(params.paths.sample_quality / f"{variant.name}.json", score)
        scores.append(score)
    return scores
