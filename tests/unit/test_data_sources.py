"""Raw sources materialized into one pool: the embedded MNIST 5k and folders of IDX files."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from vaeops.data.idx import write_idx
from vaeops.data.sources import (
    IMAGES_FILE,
    LABELS_FILE,
    SOURCE_FILE,
    DatasetError,
    fetch_dataset,
    load_idx_folder,
    load_source,
    read_pool,
)


def md5s(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in folder.iterdir()}


def test_given_mnist_5k_when_fetched_twice_then_the_files_are_identical_real_digits(
    tmp_path, mnist_5k_dir
):
    # mnist_5k_dir is the session's first fetch, into a folder of its own.
    info = fetch_dataset("mnist-5k", tmp_path / "second")

    assert md5s(tmp_path / "second") == md5s(mnist_5k_dir)
    assert set(md5s(mnist_5k_dir)) == {IMAGES_FILE, LABELS_FILE, SOURCE_FILE}
    assert (info.dataset, info.images, info.image_shape, info.classes) == (
        "mnist-5k",
        5000,
        (28, 28),
        10,
    )
    images, labels = read_pool(tmp_path / "second")
    assert images.dtype == np.uint8 and images.shape == (5000, 28, 28)
    assert labels.dtype == np.uint8 and labels.shape == (5000,)
    assert np.bincount(labels).tolist() == [500] * 10
    assert (images.min(), images.max()) == (0, 255)
    assert 0.1 < images.mean() / 255 < 0.15  # MNIST's mean intensity is about 0.13
    source = json.loads((tmp_path / "second" / SOURCE_FILE).read_text())
    assert source == {"dataset": "mnist-5k", "images": 5000, "image_shape": [28, 28], "classes": 10}


def write_pair(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool):
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (
        (f"{prefix}-images-idx3-ubyte", images),
        (f"{prefix}-labels-idx1-ubyte", labels),
    ):
        path = folder / name
        write_idx(path, array)
        if gz:
            path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
            path.unlink()


@pytest.fixture
def idx_folder(tmp_path):
    """A folder of MNIST-format files: train (plain, 6 images) and t10k (gzipped, 4 images)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "raw"
    parts = {
        "train": (np.full((6, 28, 28), 10, np.uint8), rng.integers(0, 10, 6, dtype=np.uint8)),
        "t10k": (np.full((4, 28, 28), 200, np.uint8), rng.integers(0, 10, 4, dtype=np.uint8)),
    }
    # t10k is written first, so the train-first order cannot come from the write order.
    write_pair(folder, "t10k", *parts["t10k"], gz=True)
    write_pair(folder, "train", *parts["train"], gz=False)
    return folder, parts


def test_given_an_idx_folder_when_fetched_then_files_are_pooled_train_first(idx_folder, tmp_path):
    folder, parts = idx_folder

    info = fetch_dataset(f"idx:{folder}", tmp_path / "data")

    images, labels = read_pool(tmp_path / "data")
    np.testing.assert_array_equal(images, np.concatenate([parts["train"][0], parts["t10k"][0]]))
    np.testing.assert_array_equal(labels, np.concatenate([parts["train"][1], parts["t10k"][1]]))
    assert info.images == 10
    assert info.dataset == f"idx:{folder}"


def test_given_plain_and_gzipped_copies_of_a_file_when_loaded_then_each_is_read_once(tmp_path):
    # torchvision's raw/ folders keep both the download (.gz) and the extracted file.
    folder = tmp_path / "raw"
    images = np.arange(3 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(3, 28, 28)
    labels = np.array([1, 2, 3], np.uint8)
    write_pair(folder, "train", images, labels, gz=True)
    write_pair(folder, "train", images, labels, gz=False)

    pooled_images, pooled_labels = load_idx_folder(folder)

    np.testing.assert_array_equal(pooled_images, images)
    np.testing.assert_array_equal(pooled_labels, labels)


def test_given_an_empty_folder_when_loaded_then_dataset_error_says_what_files_are_expected(
    tmp_path,
):
    with pytest.raises(DatasetError) as caught:
        load_source(f"idx:{tmp_path}")

    message = str(caught.value)
    assert str(tmp_path) in message
    assert "images-idx3-ubyte" in message
    assert "train-labels-idx1-ubyte" in message


def test_given_a_missing_folder_when_loaded_then_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        load_source(f"idx:{tmp_path / 'absent'}")


def test_given_images_without_labels_when_loaded_then_dataset_error_names_the_labels(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))

    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte"):
        load_idx_folder(tmp_path)


def test_given_a_corrupt_idx_file_in_a_folder_when_loaded_then_dataset_error(tmp_path):
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(2, np.uint8))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3, 0, 0]))

    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        load_idx_folder(tmp_path)


def test_given_mismatched_image_and_label_counts_when_loaded_then_dataset_error(tmp_path):
    write_pair(tmp_path, "train", np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8), False)

    with pytest.raises(DatasetError, match="3 images but 2 labels"):
        load_idx_folder(tmp_path)


def test_given_an_unknown_dataset_name_when_loaded_then_dataset_error_lists_choices():
    with pytest.raises(DatasetError) as caught:
        load_source("cifar-10")

    for choice in ("mnist-5k", "fashion-mnist", "idx:DIR"):
        assert choice in str(caught.value)


def test_given_an_empty_data_folder_when_reading_the_pool_then_dataset_error_says_fetch(tmp_path):
    with pytest.raises(DatasetError, match="vaeops data fetch"):
        read_pool(tmp_path)
