"""The training objective: negative ELBO with a Bernoulli decoder and a Gaussian posterior.

All terms are in nats per image (summed over pixels and latent units, averaged over the batch),
the unit of the classic PyTorch VAE example and of the NLLs reported in the VAE literature.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from vaeops.models import ForwardOutput


class LossTerms(NamedTuple):
    total: torch.Tensor  # reconstruction + beta * kl, the quantity minimised
    reconstruction: torch.Tensor  # E_q[-log p(x|z)], one-sample estimate
    kl: torch.Tensor  # KL(q(z|x) || N(0, I)); zero for the AE


def softplus(logits: torch.Tensor) -> torch.Tensor:
    """log(1 + e^l) as max(l, 0) + log(1 + e^-|l|), the overflow-free form; no autograd.

    Why not `F.softplus` or `torch.log1p`: in torch's CPU build both run without SIMD, about ten
    times slower than `exp` + `log` (benchmarks/README.md), and this is the costliest element-wise
    op of training and of the IWAE estimate. With e = e^-|l| in (0, 1], rounding 1 + e costs at
    most half an ulp of 1 (6e-8 nats per pixel) against log1p(e).
    """
    return logits.abs().neg_().exp_().add_(1).log_().add_(logits.clamp_min(0))


class _BernoulliNLL(torch.autograd.Function):
    """sum_p softplus(l_p) - x_p * l_p per image (BCE with logits), with its gradient written out:
    d/dl = sigmoid(l) - x and d/dx = -l, two kernels where autograd would chain five."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits, images)
        return softplus(logits).sub_(logits * images).flatten(1).sum(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # grad: (n,)
        logits, images = ctx.saved_tensors
        per_image = grad.view((-1,) + (1,) * (logits.dim() - 1))
        grad_logits = (torch.sigmoid(logits) - images) * per_image
        grad_images = -logits * per_image if ctx.needs_input_grad[1] else None
        return grad_logits, grad_images


def bernoulli_nll(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image, shape (n,), for logits and images of the same shape (n, ...);
    equal to `F.binary_cross_entropy_with_logits(..., reduction="none")` summed per image."""
    return _BernoulliNLL.apply(logits, images)


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
