"""The activation registry: every activation the study compares, looked up by name."""

from collections.abc import Callable

import torch
from torch import nn

from vaeops.config import ACTIVATION_NAMES


class Exp(nn.Module):
    """exp(x): unbounded and always positive; included to show how a sweep survives divergence."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)


# Factories, not instances: each layer gets its own module (PReLU has a learnable slope per layer).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "identity": nn.Identity,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(negative_slope=0.01),
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "mish": nn.Mish,
    "softplus": nn.Softplus,
    "exp": Exp,
}
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES, "registry and config disagree on activation names"


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation '{name}'; valid: {', '.join(ACTIVATIONS)}") from None
