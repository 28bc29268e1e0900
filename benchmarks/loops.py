"""The two training loops the benchmark times, epoch by epoch, on the same model and objective.

- `pipeline_loop`: `vaeops.training.fit`, exactly what the train step runs (in-memory batches,
  the divergence guard, per-epoch validation -- here on the test split).
- `dataloader_loop`: the idiomatic loop of the classic PyTorch VAE example (pytorch/examples
  vae/main.py): `DataLoader(datasets.MNIST(root, transform=ToTensor()), shuffle=True)`, a
  `.item()` per batch, then a test pass through a second DataLoader. Same model, same
  `loss_terms`, same Adam(lr=1e-3); only the data path and the loop differ.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vaeops.config import TrainConfig
from vaeops.models import Autoencoder, ModelSpec, build_model
from vaeops.objectives import loss_terms
from vaeops.training import fit, seed_everything


@dataclass
class LoopFigures:
    """Per-epoch times and the final losses (nats per image) of one timed training run."""

    epoch_seconds: list[float] = field(default_factory=list)
    # The matmul rate measured right after each epoch (GFLOP/s), where the loop was asked to.
    epoch_matmul_gflops: list[float] = field(default_factory=list)
    train_neg_elbo: float = float("nan")
    test_neg_elbo: float = float("nan")
    diverged: bool = False

    @property
    def seconds_per_epoch(self) -> float:
        # The median ignores a first epoch slowed by one-off initialization and a noisy neighbour.
        return statistics.median(self.epoch_seconds) if self.epoch_seconds else float("nan")

    def as_dict(self) -> dict:
        return {
            "seconds_per_epoch": self.seconds_per_epoch,
            "epoch_seconds": [round(seconds, 4) for seconds in self.epoch_seconds],
            "train_neg_elbo": self.train_neg_elbo,
            "test_neg_elbo": self.test_neg_elbo,
            "diverged": self.diverged,
        }


def seeded_model(spec: ModelSpec, seed: int, device: torch.device) -> Autoencoder:
    """The same initial weights for every loop: seed as the train step does, then build."""
    seed_everything(seed)
    return build_model(spec).to(device)


def pipeline_loop(
    model: Autoencoder,
    train_images: torch.Tensor,
    test_images: torch.Tensor | None,
    config: TrainConfig,
    seed: int,
    measure_rate: Callable[[], float] | None = None,
) -> LoopFigures:
    """`fit` with the test split as its per-epoch validation set (None: training only); images
    are already on the device. `measure_rate`, if given, runs after each epoch, outside its time:
    on a shared machine the rate moves within a run, so each epoch is set against its own."""
    figures = LoopFigures()
    last = [time.perf_counter()]

    def on_epoch(_epoch: int, _metrics: dict[str, float]) -> None:
        # fit has just turned the validation sums into floats: the device is synchronized here.
        figures.epoch_seconds.append(time.perf_counter() - last[0])
        if measure_rate is not None:
            figures.epoch_matmul_gflops.append(measure_rate())
        last[0] = time.perf_counter()

    result = fit(model, train_images, config, seed, val_images=test_images, on_epoch=on_epoch)
    figures.diverged = result.diverged
    if result.history:
        figures.train_neg_elbo = result.final["train/neg_elbo"]
        figures.test_neg_elbo = result.final.get("val/neg_elbo", float("nan"))
    return figures


def mnist_loaders(root: Path, batch_size: int, device: torch.device):
    """The example's loaders: ToTensor per image, a worker and pinned memory only on CUDA."""
    from torchvision import datasets, transforms

    kwargs = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
    to_tensor = transforms.ToTensor()
    train = datasets.MNIST(str(root), train=True, download=False, transform=to_tensor)
    test = datasets.MNIST(str(root), train=False, download=False, transform=to_tensor)
    return (
        torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, **kwargs),
        torch.utils.data.DataLoader(test, batch_size=batch_size, shuffle=False, **kwargs),
    )


def dataloader_epoch(model, optimizer, loader, config: TrainConfig, device) -> float:
    """One training epoch of the example; returns the mean training negative ELBO."""
    model.train()
    total, count = 0.0, 0
    for images, _labels in loader:
        images = images.to(device)  # (b, 1, 28, 28) float32 in [0, 1], as ToTensor makes it
        terms = loss_terms(model(images), images, config.beta)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
        total += (terms.reconstruction + terms.kl).item() * len(images)
        count += len(images)
    return total / count


@torch.no_grad()
def dataloader_test(model, loader, config: TrainConfig, device) -> float:
    model.eval()
    total, count = 0.0, 0
    for images, _labels in loader:
        images = images.to(device)
        terms = loss_terms(model(images), images, config.beta)
        total += (terms.reconstruction + terms.kl).item() * len(images)
        count += len(images)
    return total / count


def dataloader_loop(
    model: Autoencoder, root: Path, config: TrainConfig, seed: int, device: torch.device
) -> LoopFigures:
    """The baseline; `root` holds MNIST/raw/ (see `mnist_idx.torchvision_root`)."""
    torch.manual_seed(seed)  # the shuffling order of the DataLoader
    train_loader, test_loader = mnist_loaders(root, config.batch_size, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    figures = LoopFigures()
    for _epoch in range(config.epochs):
        started = time.perf_counter()
        figures.train_neg_elbo = dataloader_epoch(model, optimizer, train_loader, config, device)
        figures.test_neg_elbo = dataloader_test(model, test_loader, config, device)
        figures.epoch_seconds.append(time.perf_counter() - started)
    return figures
