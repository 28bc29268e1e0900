"""The prepare step's split: seeded, stratified, disjoint, and byte-for-byte reproducible."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from vaeops.config import PrepareConfig
from vaeops.data.idx import write_idx
from vaeops.data.sources import IMAGES_FILE, LABELS_FILE
from vaeops.data.splits import SPLITS, load_split, prepare_splits, stratified_indices

# Uneven classes: 30, 50 and 80 members, interleaved so class order is not index order.
LABELS = np.random.default_rng(0).permutation(np.repeat([0, 1, 2], [30, 50, 80]))


def test_given_a_seed_when_split_twice_then_the_indices_are_identical():
    first = stratified_indices(LABELS, 0.1, 0.2, seed=3)
    again = stratified_indices(LABELS, 0.1, 0.2, seed=3)
    other = stratified_indices(LABELS, 0.1, 0.2, seed=4)

    assert set(first) == set(SPLITS)
    for name in SPLITS:
        np.testing.assert_array_equal(first[name], again[name])
    assert any(not np.array_equal(first[name], other[name]) for name in SPLITS)


@pytest.mark.parametrize(("val", "test"), [(0.1, 0.2), (0.25, 0.25), (0.05, 0.4)])
def test_given_fractions_when_split_then_splits_are_disjoint_cover_all_and_keep_ratios(val, test):
    indices = stratified_indices(LABELS, val, test, seed=0)

    together = np.concatenate([indices[name] for name in SPLITS])
    assert len(together) == len(LABELS)
    np.testing.assert_array_equal(np.sort(together), np.arange(len(LABELS)))
    for label, size in zip([0, 1, 2], [30, 50, 80], strict=True):
        val_count = int((LABELS[indices["val"]] == label).sum())
        test_count = int((LABELS[indices["test"]] == label).sum())
        train_count = int((LABELS[indices["train"]] == label).sum())
        assert val_count == round(size * val)
        assert test_count == round(size * test)
        assert train_count == size - val_count - test_count


@pytest.fixture
def pool_dir(tmp_path, mnist_5k):
    """A fetched-data folder holding 300 real digits (30 per class)."""
    images, labels = mnist_5k
    folder = tmp_path / "data"
    folder.mkdir()
    write_idx(folder / IMAGES_FILE, images[::50].repeat(3, axis=0))
    write_idx(folder / LABELS_FILE, labels[::50].repeat(3, axis=0))
    return folder


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_given_a_pool_when_prepared_then_splits_load_as_floats_in_the_unit_interval(
    pool_dir, tmp_path, mnist_5k
):
    out = tmp_path / "outputs" / "splits.npz"
    config = PrepareConfig(seed=0, val_fraction=0.1, test_fraction=0.2)

    sizes = prepare_splits(pool_dir, out, config)

    assert sizes == {"train": 210, "val": 30, "test": 60}
    pool_images = mnist_5k[0][::50].repeat(3, axis=0)
    expected = stratified_indices(mnist_5k[1][::50].repeat(3, axis=0), 0.1, 0.2, seed=0)
    for name in SPLITS:
        split = load_split(out, name)
        assert split.images.dtype == torch.float32
        assert split.images.shape == (sizes[name], 1, 28, 28)
        assert split.images.min() >= 0 and split.images.max() <= 1
        assert split.labels.dtype == torch.int64 and split.labels.shape == (sizes[name],)
        torch.testing.assert_close(
            split.images, torch.from_numpy(pool_images[expected[name]]).unsqueeze(1) / 255.0
        )
        assert torch.bincount(split.labels).tolist() == [sizes[name] // 10] * 10


def test_given_the_same_pool_when_prepared_twice_then_the_npz_files_are_byte_identical(
    pool_dir, tmp_path
):
    config = PrepareConfig(seed=5, binarize=True)

    prepare_splits(pool_dir, tmp_path / "a.npz", config)
    prepare_splits(pool_dir, tmp_path / "b.npz", config)
    prepare_splits(pool_dir, tmp_path / "c.npz", PrepareConfig(seed=6, binarize=True))

    assert md5(tmp_path / "a.npz") == md5(tmp_path / "b.npz")
    assert md5(tmp_path / "a.npz") != md5(tmp_path / "c.npz")


def test_given_binarize_when_prepared_then_every_pixel_is_zero_or_one(pool_dir, tmp_path):
    prepare_splits(pool_dir, tmp_path / "splits.npz", PrepareConfig(binarize=True))

    images = load_split(tmp_path / "splits.npz", "train").images

    assert set(images.unique().tolist()) == {0.0, 1.0}
    assert 0.05 < float(images.mean()) < 0.3  # about the mean intensity of MNIST digits


def test_given_an_unknown_split_name_when_loaded_then_value_error_lists_splits(tmp_path):
    with pytest.raises(ValueError, match="train, val, test"):
        load_split(tmp_path / "splits.npz", "validation")


def test_given_no_split_file_when_loaded_then_file_not_found_says_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match="vaeops prepare"):
        load_split(tmp_path / "splits.npz", "train")
