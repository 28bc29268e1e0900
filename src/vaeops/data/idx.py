"""Read and write MNIST-format IDX files (http://yann.lecun.com/exdb/mnist/, "file formats").

Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then each
dimension as a big-endian uint32; the data follows in C order. Gzipped files are read transparently.
Anything else (a wrong magic number, a truncated header or body, bytes after the data) is an
`IdxError` naming the file and what is wrong; callers add how to fix it.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from vaeops.errors import VaeopsError

UNSIGNED_BYTE = 0x08
# numpy arrays have at most 64 dimensions; real IDX files have 1 (labels) to 3 (images).
MAX_DIMENSIONS = 32


class IdxError(VaeopsError, ValueError):
    """Bytes that are not a readable unsigned-byte IDX file."""


def read_idx(path: Path) -> np.ndarray:
    """The array in an IDX file (plain or gzipped); an IdxError if it is not one."""
    try:
        raw = Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
        raise IdxError(f"{path}: cannot read: {error.strerror}") from None
    return parse_idx(raw, str(path))


def parse_idx(raw: bytes, source: str) -> np.ndarray:
    """The array that the bytes `raw` of an IDX file encode; `source` names them in errors."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:  # bad header, truncated, corrupt
            raise IdxError(f"{source}: not a readable gzip file ({error})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != UNSIGNED_BYTE:
        magic = raw[:4].hex() or "none"
        raise IdxError(
            f"{source}: not an unsigned-byte IDX file (bad magic number {magic}; "
            "expected 000008 then the number of dimensions)"
        )
    ndim = raw[3]
    if not 1 <= ndim <= MAX_DIMENSIONS:
        raise IdxError(f"{source}: IDX header declares {ndim} dimensions (1 to {MAX_DIMENSIONS})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(f"{source}: truncated IDX header ({ndim} dimensions, {len(raw)} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected, held = math.prod(shape), len(raw) - header
    if held != expected:
        problem = "truncated" if held < expected else "bytes after the data"
        raise IdxError(
            f"{source}: {problem}: the header says shape {shape} ({expected} values) "
            f"but the file holds {held}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, UNSIGNED_BYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    Path(path).write_bytes(header + array.tobytes())
