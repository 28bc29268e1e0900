"""The training objective: negative ELBO with a Bernoulli decoder and a Gaussian posterior.

All terms are in nats per image (summed over pixels and latent units, averaged over the batch),
the unit of the classic PyTorch VAE example and of the NLLs reported in the VAE literature.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from vaeops.models import ForwardOutput


class LossTerms(NamedTuple):
    total: torch.Tensor  # reconstruction + beta * kl, the quantity minimised
    reconstruction: torch.Tensor  # E_q[-log p(x|z)], one-sample estimate
    kl: torch.Tensor  # KL(q(z|x) || N(0, I)); zero for the AE


def bernoulli_nll(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image, shape (n,). BCE on logits is the numerically stable form."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, images, reduction="none")
    return per_pixel.flatten(1).sum(1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per image, shape (n,).

    Closed form from Kingma & Welling 2014, Appendix B: -1/2 * sum(1 + logvar - mu^2 - exp(logvar)).
    """
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def loss_terms(output: ForwardOutput, images: torch.Tensor, beta: float = 1.0) -> LossTerms:
    """Batch means of the objective; beta weights the KL term (Higgins et al. 2017)."""
    reconstruction = bernoulli_nll(output.logits.float(), images).mean()
    if output.logvar is None:
        kl = torch.zeros((), device=images.device)
    else:
        kl = gaussian_kl(output.mu.float(), output.logvar.float()).mean()
    return LossTerms(reconstruction + beta * kl, reconstruction, kl)
