"""Property-based tests (hypothesis) of the two parsers that read what users hand in: the config
parser and the IDX reader. Whatever the input, each either parses or raises the project's own
error type with a message on one line, never a stray exception."""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from vaeops.config import ConfigError, Params, load_params, parse_params, valid_keys
from vaeops.data.idx import IdxError, parse_idx, write_idx
from vaeops.errors import VaeopsError

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_one_line_error(error: VaeopsError, source: str) -> None:
    lines = str(error).splitlines()
    assert lines and all(line.startswith(f"{source}: ") for line in lines)


# --- the IDX reader -------------------------------------------------------------------------


def parses_or_idx_error(raw: bytes) -> np.ndarray | None:
    try:
        array = parse_idx(raw, "input")
    except IdxError as error:
        assert_one_line_error(error, "input")
        assert len(str(error).splitlines()) == 1
        return None
    assert array.dtype == np.uint8
    return array


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_either_parse_as_idx_or_raise_idx_error(raw):
    parses_or_idx_error(raw)


@st.composite
def idx_like(draw) -> bytes:
    """Bytes that start like an IDX file: right or wrong magic, a few dimensions of any size,
    a body of any length; gzipped or not."""
    magic = draw(st.sampled_from([b"\x00\x00\x08", b"\x00\x00\x0d", b"\x00\x01\x08"]))
    ndim = draw(st.integers(0, 70))
    dims = draw(st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 4), min_size=0, max_size=6))
    body = draw(st.binary(max_size=64))
    raw = magic + bytes([ndim]) + b"".join(struct.pack(">I", size) for size in dims) + body
    return gzip.compress(raw) if draw(st.booleans()) else raw


@SETTINGS
@given(idx_like())
def test_any_idx_like_header_either_parses_to_its_declared_shape_or_raises_idx_error(raw):
    array = parses_or_idx_error(raw)
    if array is not None:
        plain = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        ndim = plain[3]
        assert array.shape == struct.unpack(f">{ndim}I", plain[4 : 4 + 4 * ndim])
        assert len(plain) == 4 + 4 * ndim + math.prod(array.shape)


@SETTINGS
@given(
    arrays(np.uint8, array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6)),
    st.booleans(),
    st.data(),
)
def test_an_idx_file_round_trips_and_any_cut_of_it_is_an_idx_error(tmp_path_factory, array, packed,
                                                                   data):  # fmt: skip
    path = tmp_path_factory.mktemp("idx") / "array-idx"
    write_idx(path, array)
    raw = path.read_bytes()
    np.testing.assert_array_equal(parse_idx(gzip.compress(raw) if packed else raw, "x"), array)

    cut = data.draw(st.integers(0, len(raw) - 1))
    assert parses_or_idx_error(raw[:cut]) is None


# --- the config parser ----------------------------------------------------------------------

SECTIONS = list(Params.model_fields)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


@st.composite
def params_like(draw) -> dict:
    """Mappings shaped like params.yaml: real sections and keys (and misspelt ones) with values
    of any type, valid values included often enough that many examples parse."""
    raw = {}
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "trian", "sweeps"]), max_size=4)):
        keys = valid_keys((section,)) if section in SECTIONS else ["epochs"]
        chosen = draw(st.lists(st.sampled_from([*keys, "typo"]), max_size=3))
        raw[section] = {key: draw(values) for key in chosen}
    return raw


def parses_or_config_error(raw, source: str = "params") -> Params | None:
    try:
        return parse_params(raw, source=source)
    except ConfigError as error:
        assert_one_line_error(error, source)
        return None


@SETTINGS
@given(params_like())
def test_any_params_mapping_either_parses_or_raises_config_error(raw):
    params = parses_or_config_error(raw)
    if params is not None:
        # What parsed is a valid, complete config: it survives a round trip through its dump.
        assert parse_params(params.model_dump(mode="json")) == params


@SETTINGS
@given(values)
def test_any_yaml_value_as_a_whole_params_file_either_parses_or_raises_config_error(raw):
    parses_or_config_error(raw)


@SETTINGS
@given(st.text(max_size=120) | st.builds(yaml.safe_dump, params_like()))
def test_any_params_file_text_either_loads_or_raises_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(text)

    try:
        load_params(path)
    except ConfigError as error:
        assert str(path) in str(error)
