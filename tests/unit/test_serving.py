"""The pyfunc wrapper's predict modes, on a small model in memory (no MLflow store)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaeops.models import build_model
from vaeops.serving import AutoencoderPyfunc


@pytest.fixture
def wrapped(tiny_spec) -> AutoencoderPyfunc:
    torch.manual_seed(0)
    wrapper = AutoencoderPyfunc()
    wrapper.model = build_model(tiny_spec).eval()
    return wrapper


def test_given_the_same_images_when_reconstructed_twice_then_the_outputs_are_equal(
    wrapped, tiny_images
):
    images = tiny_images[:6].flatten(1).numpy()
    first = wrapped.predict(None, images)
    torch.randn(100)  # the global random stream moves on between the calls
    second = wrapped.predict(None, images)
    assert first.shape == (6, 784)
    np.testing.assert_array_equal(first, second)
    assert ((first >= 0) & (first <= 1)).all()


def test_given_a_seed_when_sampled_then_the_samples_repeat_and_differ_by_seed(wrapped):
    one = wrapped.predict(None, None, params={"mode": "sample", "n_samples": 5, "seed": 1})
    again = wrapped.predict(None, None, params={"mode": "sample", "n_samples": 5, "seed": 1})
    other = wrapped.predict(None, None, params={"mode": "sample", "n_samples": 5, "seed": 2})
    assert one.shape == (5, 784)
    np.testing.assert_array_equal(one, again)
    assert not np.array_equal(one, other)


def test_given_an_unknown_mode_when_predicted_then_the_error_lists_the_modes(wrapped):
    with pytest.raises(ValueError, match="valid: reconstruct, encode, sample, interpolate"):
        wrapped.predict(None, np.zeros((1, 784), np.float32), params={"mode": "bogus"})


@pytest.mark.parametrize("shape", [(3, 100), (784,), (2, 1, 28, 28)])
def test_given_images_of_the_wrong_shape_then_the_error_names_the_expected_shape(wrapped, shape):
    with pytest.raises(ValueError, match=r"expected \(n, 784\) images") as caught:
        wrapped.predict(None, np.zeros(shape, np.float32))
    # The error code `mlflow models serve` answers with HTTP 400 and the message
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert caught.value.get_http_status_code() == 400
    assert f"input of shape {shape}" in caught.value.message
