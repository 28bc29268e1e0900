"""The prepare step: a seeded, stratified train/validation/test split of the fetched pool.

Later steps read only the split file (`paths.splits`, a compressed .npz of uint8 arrays), so
everything downstream of prepare is independent of which source produced the data.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from vaeops.config import PrepareConfig
from vaeops.data.sources import read_pool
from vaeops.errors import MissingFileError, VaeopsError

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "val", "test")
REWRITE = "rewrite it with `vaeops prepare` (or `dvc repro prepare`)"


class SplitError(VaeopsError):
    """A split file that cannot be read, or a split that cannot serve the params."""


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


def split_pool(data_dir: Path, config: PrepareConfig) -> dict[str, np.ndarray]:
    """The pool in `data_dir` split as the split file stores it: `<split>_images` (n, H, W) and
    `<split>_labels` (n,) uint8 per split. A split left empty by the fractions is a SplitError."""
    images, labels = read_pool(data_dir)
    if config.binarize:
        images = binarize(images, config.seed)
    indices = stratified_indices(labels, config.val_fraction, config.test_fraction, config.seed)
    arrays = {}
    for name, index in indices.items():
        if len(index) == 0:
            raise SplitError(
                f"{data_dir}: {len(labels)} images leave the {name} split empty at "
                f"prepare.val_fraction {config.val_fraction} and prepare.test_fraction "
                f"{config.test_fraction}; fetch more data or change the fractions"
            )
        arrays[f"{name}_images"] = images[index]
        arrays[f"{name}_labels"] = labels[index]
    return arrays


def split_sizes(arrays: dict[str, np.ndarray]) -> dict[str, int]:
    return {name: len(arrays[f"{name}_labels"]) for name in SPLITS}


def write_splits(arrays: dict[str, np.ndarray], out_path: Path) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_path, **arrays)


def prepare_splits(data_dir: Path, out_path: Path, config: PrepareConfig) -> dict[str, int]:
    """Write the split file; returns the number of images per split."""
    arrays = split_pool(data_dir, config)
    write_splits(arrays, out_path)
    return split_sizes(arrays)


def check_batch_fits(key: str, batch_size: int, split: str, size: int) -> None:
    """A batch larger than its split would make every epoch a single step: a SplitError."""
    if batch_size > size:
        raise SplitError(
            f"params.yaml: {key}: {batch_size} is larger than the {split} split ({size} images); "
            f"set {key} to at most {size}"
        )


def load_split(path: Path, name: str, device: str | torch.device = "cpu") -> Split:
    """One split as float tensors, read once into memory (the training loop batches from them)."""
    import torch

    if name not in SPLITS:
        raise ValueError(f"unknown split '{name}'; valid: {', '.join(SPLITS)}")
    if not Path(path).is_file():
        raise MissingFileError(
            f"{path}: no split file; run `vaeops prepare` (or `dvc repro`) first"
        )
    images, labels = read_split_arrays(Path(path), name)
    images = torch.from_numpy(images).to(device)
    labels = torch.from_numpy(labels.astype(np.int64)).to(device)
    return Split(images.unsqueeze(1).float().div_(255.0), labels)


def read_split_arrays(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One split's uint8 images (n, H, W) and labels (n,) from the split file, or a SplitError
    if the file is damaged (truncated, not a zip, a member missing or of the wrong shape)."""
    try:
        with np.load(path) as arrays:
            images, labels = arrays[f"{name}_images"], arrays[f"{name}_labels"]
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError, ValueError, OSError) as error:
        raise SplitError(f"{path}: not a readable split file ({error}); {REWRITE}") from None
    if images.dtype != np.uint8 or images.ndim != 3 or labels.shape != (len(images),):
        raise SplitError(
            f"{path}: split '{name}' holds images {images.dtype}{images.shape} and labels "
            f"{labels.shape}, not uint8 (n, H, W) and (n,); {REWRITE}"
        )
    return images, labels
