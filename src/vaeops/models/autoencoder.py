"""One autoencoder family: a VAE (Kingma & Welling 2014) and its deterministic twin, the AE.

Encoder and decoder bodies are built once from `ModelSpec`, as an MLP (the classic PyTorch example:
784-400-20) or a small conv net. The only difference between the kinds is the encoder head: the VAE
predicts a Gaussian q(z|x) = N(mu, diag(exp(logvar))), the AE a single code z.
Images are (n, C, H, W) tensors with pixel intensities in [0, 1]; the decoder returns Bernoulli
logits of the same shape.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn

from vaeops.models.activations import make_activation

CONV_CHANNELS = (32, 64)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model from its weights; stored beside them as JSON."""

    kind: str = "vae"
    architecture: str = "mlp"
    activation: str = "relu"
    decoder_activation: str | None = None
    hidden: tuple[int, ...] = (400,)
    latent: int = 20
    dropout: float = 0.0
    image_shape: tuple[int, int, int] = (1, 28, 28)

    @property
    def pixels(self) -> int:
        return math.prod(self.image_shape)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        raw = json.loads(text)
        raw["hidden"] = tuple(raw["hidden"])
        raw["image_shape"] = tuple(raw["image_shape"])
        return cls(**raw)


class ForwardOutput(NamedTuple):
    logits: torch.Tensor  # (n, C, H, W) Bernoulli logits of the reconstruction
    z: torch.Tensor  # (n, latent) the code the decoder saw
    mu: torch.Tensor  # (n, latent) posterior mean (the code itself for the AE)
    logvar: torch.Tensor | None  # (n, latent) posterior log-variance; None for the AE


def mlp(sizes: list[int], activation: str, dropout: float) -> nn.Sequential:
    """Linear -> activation (-> dropout) for each consecutive pair of sizes."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), make_activation(activation)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def conv_downsampler(channels: int, activation: str) -> nn.Sequential:
    """Two stride-2 convolutions: (n, C, H, W) -> (n, 64, H/4, W/4), flattened."""
    first, second = CONV_CHANNELS
    return nn.Sequential(
        nn.Conv2d(channels, first, kernel_size=4, stride=2, padding=1),
        make_activation(activation),
        nn.Conv2d(first, second, kernel_size=4, stride=2, padding=1),
        make_activation(activation),
        nn.Flatten(),
    )


def conv_upsampler(channels: int, height: int, width: int, activation: str) -> nn.Sequential:
    """The mirror of `conv_downsampler`: flat features -> (n, C, H, W) logits."""
    first, second = CONV_CHANNELS
    return nn.Sequential(
        nn.Unflatten(1, (second, height // 4, width // 4)),
        nn.ConvTranspose2d(second, first, kernel_size=4, stride=2, padding=1),
        make_activation(activation),
        nn.ConvTranspose2d(first, channels, kernel_size=4, stride=2, padding=1),
    )


class Autoencoder(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        if spec.kind not in ("vae", "ae"):
            raise ValueError(f"unknown model kind '{spec.kind}'; valid: vae, ae")
        if spec.architecture not in ("mlp", "conv"):
            raise ValueError(f"unknown architecture '{spec.architecture}'; valid: mlp, conv")
        self.spec = spec
        channels, height, width = spec.image_shape
        decoder_activation = spec.decoder_activation or spec.activation
        hidden = list(spec.hidden)

        if spec.architecture == "mlp":
            self.encoder = nn.Sequential(
                nn.Flatten(), mlp([spec.pixels, *hidden], spec.activation, spec.dropout)
            )
            self.decoder = nn.Sequential(
                mlp([spec.latent, *hidden[::-1]], decoder_activation, spec.dropout),
                nn.Linear(hidden[0], spec.pixels),
                nn.Unflatten(1, spec.image_shape),
            )
        else:
            if height % 4 or width % 4:
                raise ValueError(
                    f"conv architecture needs H and W divisible by 4, got {height}x{width}"
                )
            flat = CONV_CHANNELS[1] * (height // 4) * (width // 4)
            self.encoder = nn.Sequential(
                conv_downsampler(channels, spec.activation),
                mlp([flat, *hidden], spec.activation, spec.dropout),
            )
            self.decoder = nn.Sequential(
                mlp([spec.latent, *hidden[::-1], flat], decoder_activation, spec.dropout),
                conv_upsampler(channels, height, width, decoder_activation),
            )

        code_size = 2 * spec.latent if spec.kind == "vae" else spec.latent
        self.head = nn.Linear(hidden[-1], code_size)
        # The distribution `sample` draws codes from: N(0, I) for the VAE; for the AE, a diagonal
        # Gaussian fitted to its training codes (`fit_code_distribution`), a fair AE prior.
        self.register_buffer("prior_mean", torch.zeros(spec.latent))
        self.register_buffer("prior_std", torch.ones(spec.latent))

    @property
    def is_variational(self) -> bool:
        return self.spec.kind == "vae"

    def weight_layers(self) -> list[tuple[str, nn.Parameter]]:
        """(layer name, weight matrix or kernel) in the order data flows: input layer first.

        Parameters are registered encoder, decoder, head; the data flows encoder, head, decoder.
        """
        flow = ("encoder", "head", "decoder")
        named = sorted(self.named_parameters(), key=lambda item: flow.index(item[0].split(".")[0]))
        return [
            (name.removesuffix(".weight"), parameter)
            for name, parameter in named
            if name.endswith("weight") and parameter.ndim >= 2
        ]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        code = self.head(self.encoder(x))
        if not self.is_variational:
            return code, None
        mu, logvar = code.chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> ForwardOutput:
        mu, logvar = self.encode(x)
        # Reparameterization trick (Kingma & Welling 2014, section 2.4): z = mu + sigma * eps.
        z = mu if logvar is None else mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return ForwardOutput(self.decode(z), z, mu, logvar)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images (pixel probabilities) decoded from codes drawn from the prior."""
        eps = torch.randn(n, self.spec.latent, generator=generator, device=self.prior_mean.device)
        return torch.sigmoid(self.decode(self.prior_mean + self.prior_std * eps))

    @torch.no_grad()
    def fit_code_distribution(self, images: torch.Tensor, batch_size: int = 1000) -> None:
        """Set the AE's sampling distribution to the mean and std of its codes on `images`."""
        codes = torch.cat([self.encode(batch)[0] for batch in images.split(batch_size)])
        self.prior_mean.copy_(codes.mean(0))
        self.prior_std.copy_(codes.std(0).clamp_min(1e-6))


def build_model(spec: ModelSpec) -> Autoencoder:
    return Autoencoder(spec)


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
