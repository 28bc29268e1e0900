"""Model FLOPs: the multiply-accumulates of the matmul layers (Linear, Conv, ConvTranspose).

Counted from one traced forward pass, so any architecture `build_model` makes is covered.
Convention (as in the scaling-law literature): 1 MAC = 2 FLOPs; forward = 2 * MACs; backward =
the gradient with respect to the weights (2 * MACs) plus, only where the layer's input needs a
gradient, the gradient with respect to the input (2 * MACs) -- the first layer sees the data, so
its input gradient is never computed. Element-wise work (activations, the loss, Adam) is not
counted: it is memory-bound and is exactly the overhead the roofline fraction exposes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

MATMUL_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


@dataclass(frozen=True)
class FlopCount:
    """FLOPs per image (or per code, for a decoder)."""

    forward: int
    backward: int

    @property
    def training(self) -> int:
        return self.forward + self.backward


def layer_macs(module: nn.Module, layer_input: torch.Tensor, output: torch.Tensor) -> int:
    """Multiply-accumulates of one call of a matmul layer, for the whole batch."""
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    kernel = math.prod(module.kernel_size)
    if isinstance(module, nn.ConvTranspose2d):
        # Each input element is scattered into out_channels/groups kernels.
        return layer_input.numel() * (module.out_channels // module.groups) * kernel
    return output.numel() * (module.in_channels // module.groups) * kernel


def count_flops(module: nn.Module, example: torch.Tensor) -> FlopCount:
    """FLOPs per example row of `module(example)`; `example` is (batch, ...) with batch >= 1.

    The forward pass draws from torch's RNG (the VAE's reparameterization), so the RNG state is
    restored afterwards: counting never changes what a seeded run that follows computes.
    """
    forward_macs = 0
    backward_macs = 0

    def record(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal forward_macs, backward_macs
        macs = layer_macs(layer, inputs[0], output)
        forward_macs += macs
        backward_macs += macs if layer.weight.requires_grad else 0
        backward_macs += macs if inputs[0].requires_grad else 0

    layers = [layer for layer in module.modules() if isinstance(layer, MATMUL_LAYERS)]
    hooks = [layer.register_forward_hook(record) for layer in layers]
    devices = [example.device] if example.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            module(example)
    finally:
        for hook in hooks:
            hook.remove()
    batch = len(example)
    return FlopCount(forward=2 * forward_macs // batch, backward=2 * backward_macs // batch)


def model_flops(model: nn.Module, image_shape: tuple[int, ...]) -> FlopCount:
    """FLOPs per image of a full forward (and backward) pass of an autoencoder."""
    device = next(model.parameters()).device
    return count_flops(model, torch.zeros(2, *image_shape, device=device))


def decoder_flops(model: nn.Module, latent: int) -> FlopCount:
    """FLOPs per code of the decoder alone: the cost of one importance sample in IWAE."""
    device = next(model.parameters()).device
    return count_flops(model.decoder, torch.zeros(2, latent, device=device))
