"""The prepare step: a seeded, stratified train/validation/test split of the fetched pool.

Later steps read only the split file (`paths.splits`, a compressed .npz of uint8 arrays), so
everything downstream of prepare is independent of which source produced the data.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from vaeops.config import PrepareConfig
from vaeops.data.sources import read_pool

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "val", "test")


# torch is imported where a split is loaded, not here: `prepare` needs only numpy, and importing
# torch would double the start-up of a stage that reruns on every edit of params.yaml.
class Split(NamedTuple):
    images: torch.Tensor  # (n, 1, H, W) float32 in [0, 1]
    labels: torch.Tensor  # (n,) int64


def stratified_indices(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Per class, shuffle with `seed` and cut val and test shares; each split keeps class ratios."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = round(len(members) * val_fraction)
        n_test = round(len(members) * test_fraction)
        parts["val"].append(members[:n_val])
        parts["test"].append(members[n_val : n_val + n_test])
        parts["train"].append(members[n_val + n_test :])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def binarize(images: np.ndarray, seed: int) -> np.ndarray:
    """Stochastic binarization, drawn once: each pixel is 255 with probability intensity / 255."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(images.shape) < images / 255.0, 255, 0).astype(np.uint8)


def prepare_splits(data_dir: Path, out_path: Path, config: PrepareConfig) -> dict[str, int]:
    """Write the split file; returns the number of images per split."""
    images, labels = read_pool(data_dir)
    if config.binarize:
        images = binarize(images, config.seed)
    indices = stratified_indices(labels, config.val_fraction, config.test_fraction, config.seed)
    arrays = {}
    for name, index in indices.items():
        arrays[f"{name}_images"] = images[index]
        arrays[f"{name}_labels"] = labels[index]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_path, **arrays)
    return {name: len(index) for name, index in indices.items()}


def load_split(path: Path, name: str, device: str | torch.device = "cpu") -> Split:
    """One split as float tensors, read once into memory (the training loop batches from them)."""
    import torch

    if name not in SPLITS:
        raise ValueError(f"unknown split '{name}'; valid: {', '.join(SPLITS)}")
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path}: no split file; run `vaeops prepare` (or `dvc repro`) first"
        )
    with np.load(path) as arrays:
        images = torch.from_numpy(arrays[f"{name}_images"]).to(device)
        labels = torch.from_numpy(arrays[f"{name}_labels"].astype(np.int64)).to(device)
    return Split(images.unsqueeze(1).float().div_(255.0), labels)
