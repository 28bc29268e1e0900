"""A small CNN digit classifier whose penultimate layer is the feature space for sample quality.

Trained once, seeded, on the train split. Its 128 penultimate activations replace Inception-v3's
pool features in the Frechet distance of `vaeops.sample_quality` (Heusel et al. 2017): Inception
neither fits 28x28 grey digits nor is its weight file available offline. Saved as safetensors,
so loading it unpickles nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional

from vaeops.config import ClassifierConfig
from vaeops.errors import MissingFileError

FEATURES = 128
CLASSES = 10
WEIGHTS_FILE = "classifier.safetensors"
PREDICT_BATCH = 500  # bounds the memory of the first conv's (batch, 32, 28, 28) activations
# Pixel mean and std of MNIST's training set. The default config takes only 128 Adam steps (4
# epochs of 4,000 images); standardized inputs reach about a point more test accuracy in them.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class Standardize(nn.Module):
    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


class DigitClassifier(nn.Module):
    """(n, 1, 28, 28) images in [0, 1] -> (n, 10) logits.

    No dropout and no batch norm: train and eval mode compute the same function, so features do
    not depend on the mode or the batch. Batch norm was tried: it made training a little more
    reliable, but with its running statistics the blurry samples of some VAEs came out further
    from the test digits than uniform noise, which makes the Frechet distance hard to read.
    """

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            Standardize(MNIST_MEAN, MNIST_STD),
            nn.Conv2d(1, 32, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (n, 32, 14, 14)
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (n, 64, 7, 7)
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, FEATURES),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(n, 1, 28, 28) -> (n, 128) penultimate activations."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def train_classifier(
    images: torch.Tensor, labels: torch.Tensor, config: ClassifierConfig
) -> DigitClassifier:
    """Adam on cross-entropy; the same config and data give bit-equal weights on CPU."""
    # fork_rng: seed the initialization without changing the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = DigitClassifier().to(images.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    batch_order = torch.Generator().manual_seed(config.seed)
    for _ in range(config.epochs):
        for batch in torch.randperm(len(images), generator=batch_order).split(config.batch_size):
            loss = functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def predict_logits(model: DigitClassifier, images: torch.Tensor) -> torch.Tensor:
    """(n, 1, 28, 28) -> (n, 10) logits, in batches."""
    return torch.cat([model(batch) for batch in images.split(PREDICT_BATCH)])


def accuracy(model: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of images whose most likely class is their label."""
    predicted = predict_logits(model, images).argmax(dim=-1)
    return (predicted == labels).float().mean().item()


def save_classifier(model: DigitClassifier, directory: Path) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    save_file(state, directory / WEIGHTS_FILE)


def load_classifier(directory: Path, device: str = "cpu") -> DigitClassifier:
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise MissingFileError(
            f"{weights}: no digit classifier; run `vaeops classifier` (or `dvc repro`) first"
        )
    model = DigitClassifier()
    model.load_state_dict(load_file(weights, device=device))
    return model.to(device).eval()
