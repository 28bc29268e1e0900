"""How good and how varied a model's prior samples are, judged by the digit classifier.

- `frechet_distance`: the Frechet distance between Gaussians fitted to classifier features of
  real and generated images (Heusel et al. 2017, "GANs trained by a two time-scale update rule
  converge to a local Nash equilibrium"), computed by torchmetrics' `FrechetInceptionDistance`
  with `vaeops.classifier.DigitClassifier`'s 128 penultimate features in place of Inception's.
- `sample_statistics`: the classifier's mean confidence on the samples (do they look like
  digits?) and how the predicted classes spread (do they look like every digit?).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from vaeops.classifier import CLASSES, FEATURES, DigitClassifier, predict_logits
from vaeops.models import Autoencoder

# A class counts as covered when at least 2% of the samples are predicted as it: a fifth of the
# 10% that uniform coverage gives, so a few stray predictions do not count as a mode.
COVERAGE_SHARE = 0.02
FEATURE_BATCH = 500


class ClassifierFeatures(nn.Module):
    """The classifier's penultimate layer as torchmetrics' FID feature extractor."""

    def __init__(self, classifier: DigitClassifier):
        super().__init__()
        self.classifier = classifier
        # Read by FrechetInceptionDistance instead of probing with a dummy 3x299x299 image.
        self.num_features = FEATURES

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images)


def frechet_distance(
    classifier: DigitClassifier, real: torch.Tensor, generated: torch.Tensor
) -> float:
    """FD between (n, 1, 28, 28) real and (m, 1, 28, 28) generated images in [0, 1]; n, m >= 2."""
    # With a custom feature module torchmetrics passes the float images through unchanged.
    metric = FrechetInceptionDistance(feature=ClassifierFeatures(classifier), normalize=True)
    metric = metric.to(real.device)  # its running sums live beside the features
    for batch in real.split(FEATURE_BATCH):
        metric.update(batch, real=True)
    for batch in generated.split(FEATURE_BATCH):
        metric.update(batch, real=False)
    return metric.compute().item()


def sample_statistics(classifier: DigitClassifier, generated: torch.Tensor) -> dict:
    """Confidence and class coverage of the classifier's predictions on (n, 1, 28, 28) samples."""
    probabilities = predict_logits(classifier, generated).softmax(dim=-1)  # (n, 10)
    confidence, predicted = probabilities.max(dim=-1)
    counts = torch.bincount(predicted, minlength=CLASSES)
    shares = counts / len(generated)
    present = shares[shares > 0]
    # Entropy of the predicted-class histogram over its maximum, log 10: 1 = every class equally.
    entropy = -(present * present.log()).sum().item() / math.log(CLASSES)
    return {
        "mean_confidence": confidence.mean().item(),
        "classes_covered": int((shares >= COVERAGE_SHARE).sum()),
        "class_entropy": entropy,
        "class_counts": counts.tolist(),
    }


def score_samples(
    classifier: DigitClassifier,
    real_images: torch.Tensor,
    model: Autoencoder,
    n_samples: int,
    seed: int,
) -> dict:
    """Draw `n_samples` prior samples of `model` (seeded) and score them against `real_images`.

    Samples are pixel probabilities, the same [0, 1] grey levels as the real images. For the AE
    the prior is the Gaussian fitted to its codes.
    """
    model.eval()  # dropout off: score the model itself, not a random thinning of it
    generator = torch.Generator(device=model.prior_mean.device).manual_seed(seed)
    generated = model.sample(n_samples, generator).to(real_images.device)
    return {
        "n_samples": n_samples,
        "frechet_distance": frechet_distance(classifier, real_images, generated),
        **sample_statistics(classifier, generated),
    }
