"""The activation registry: one module factory per name in config.ACTIVATION_NAMES."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vaeops.config import ACTIVATION_NAMES
from vaeops.models.activations import ACTIVATIONS, make_activation

# What each name must compute, written independently of the registry.
REFERENCE = {
    "identity": lambda x: x,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, negative_slope=0.01),
    "prelu": lambda x: torch.where(x >= 0, x, 0.25 * x),  # PyTorch's initial slope is 0.25
    "elu": F.elu,
    "selu": F.selu,
    "gelu": F.gelu,
    "silu": F.silu,
    "mish": F.mish,
    "softplus": F.softplus,
    "exp": torch.exp,
}


def test_given_the_config_names_when_compared_then_registry_and_reference_cover_them():
    assert tuple(ACTIVATIONS) == ACTIVATION_NAMES
    assert set(REFERENCE) == set(ACTIVATION_NAMES)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_given_a_valid_name_when_built_then_output_keeps_the_shape_and_values(name):
    x = torch.linspace(-3, 3, 2 * 3 * 5).reshape(2, 3, 5)

    module = make_activation(name)
    y = module(x)

    assert isinstance(module, nn.Module)
    assert y.shape == x.shape
    torch.testing.assert_close(y, REFERENCE[name](x))


def test_given_prelu_when_built_twice_then_each_has_its_own_learnable_slope():
    first, second = make_activation("prelu"), make_activation("prelu")

    assert first is not second
    parameters = list(first.parameters())
    assert parameters and all(parameter.requires_grad for parameter in parameters)

    with torch.no_grad():
        first.weight.fill_(0.5)

    assert second.weight.item() == pytest.approx(0.25)


def test_given_prelu_when_backpropagated_then_its_slope_gets_a_gradient():
    module = make_activation("prelu")
    x = torch.tensor([-2.0, -1.0, 3.0])

    module(x).sum().backward()

    assert float(module.weight.grad) == pytest.approx(-3.0)  # d/da of a*x summed over x < 0


@pytest.mark.parametrize("name", ["Relu", "nope", ""])
def test_given_an_unknown_name_when_built_then_value_error_lists_valid_names(name):
    with pytest.raises(ValueError) as caught:
        make_activation(name)

    message = str(caught.value)
    assert f"unknown activation '{name}'" in message
    for valid in ACTIVATION_NAMES:
        assert valid in message


def test_given_exp_when_applied_then_it_computes_exp():
    x = torch.tensor([-2.0, 0.0, 1.0, 3.5])

    y = make_activation("exp")(x)

    torch.testing.assert_close(y, torch.tensor([0.1353353, 1.0, 2.7182817, 33.115452]))
