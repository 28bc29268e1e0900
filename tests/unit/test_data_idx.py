"""IDX files (the MNIST format): write, read back, plain and gzipped; bad files are ValueErrors."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from vaeops.data.idx import read_idx, write_idx


@pytest.mark.parametrize("shape", [(7,), (5, 28, 28), (3, 4, 5, 6)])
def test_given_an_array_when_written_and_read_then_it_round_trips(tmp_path, shape):
    array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    path = tmp_path / "array-idx-ubyte"

    write_idx(path, array)
    restored = read_idx(path)

    assert restored.dtype == np.uint8
    assert restored.shape == shape
    np.testing.assert_array_equal(restored, array)


def test_given_a_written_file_when_inspected_then_the_header_is_mnist_format(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"

    write_idx(path, np.array([3, 1, 4], dtype=np.uint8))

    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 3, 1, 4])


def test_given_a_gzipped_idx_file_when_read_then_it_is_decompressed(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    plain = tmp_path / "images-idx3-ubyte"
    write_idx(plain, array)
    packed = tmp_path / "images-idx3-ubyte.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))

    np.testing.assert_array_equal(read_idx(packed), array)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not an idx file at all",
        bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + b"\x00\x00\x80\x3f",  # float32 type code
        bytes([1, 0, 8, 1, 0, 0, 0, 1, 7]),
    ],
    ids=["empty", "text", "float-type", "bad-leading-byte"],
)
def test_given_a_bad_magic_number_when_read_then_value_error(tmp_path, raw):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(raw)

    with pytest.raises(ValueError, match="bad magic"):
        read_idx(path)


def test_given_a_file_shorter_than_its_header_says_when_read_then_value_error(tmp_path):
    path = tmp_path / "short-idx3-ubyte"
    write_idx(path, np.zeros((2, 3, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-5])

    with pytest.raises(ValueError, match="header says shape"):
        read_idx(path)


def test_given_a_truncated_header_when_read_then_value_error(tmp_path):
    path = tmp_path / "truncated-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 2]))  # says 3 dimensions, holds one

    with pytest.raises(ValueError, match=str(path)):
        read_idx(path)


def truncated(data: bytes) -> bytes:
    return data[:-6]


def corrupted(data: bytes) -> bytes:
    middle = bytearray(data)
    for index in range(20, min(len(middle) - 8, 200), 7):
        middle[index] ^= 0xFF
    return bytes(middle)


def bad_method(data: bytes) -> bytes:
    return data[:2] + b"\x00" + data[3:]  # compression method 0 is not deflate


@pytest.mark.parametrize("damage", [truncated, corrupted, bad_method])
def test_given_a_damaged_gzip_file_when_read_then_value_error(tmp_path, damage):
    plain = tmp_path / "images-idx3-ubyte"
    noisy = np.random.default_rng(0).integers(0, 256, size=(2, 28, 28), dtype=np.uint8)
    write_idx(plain, noisy)
    packed = tmp_path / "images-idx3-ubyte.gz"
    packed.write_bytes(damage(gzip.compress(plain.read_bytes())))

    with pytest.raises(ValueError, match="gzip"):
        read_idx(packed)
