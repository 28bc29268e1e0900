"""Evaluation metrics for one trained model. All likelihood figures are nats per image.

- negative ELBO and its reconstruction / KL terms (single-sample estimate),
- importance-weighted NLL: the IWAE bound with k samples (Burda et al. 2015, eq. 8), which
  tightens towards -log p(x) as k grows and is never above the negative ELBO in expectation,
- active latent units: Cov_x(E_q[z_i]) > 0.01 (Burda et al. 2015, section 5.2),
- dead hidden units: units whose output hardly varies over the data (saturated or zero),
- per-layer gradient norms of the negative ELBO (the vanishing-gradient claim).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vaeops.models import Autoencoder
from vaeops.models.activations import ACTIVATIONS
from vaeops.objectives import bernoulli_nll, loss_terms
from vaeops.training import mean_loss_terms

LOG_2PI = math.log(2 * math.pi)
# Decoded images held in memory at once by the IWAE estimate: samples x images <= this.
IWAE_DECODES_PER_CHUNK = 32_768


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


@torch.no_grad()
def iwae_log_likelihood(model: Autoencoder, images: torch.Tensor, samples: int) -> torch.Tensor:
    """log p(x) >= log (1/k) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x); returns shape (n,).

    Batched over samples and images: each chunk decodes (k * chunk) codes in one call.
    """
    model.eval()
    chunk = max(1, IWAE_DECODES_PER_CHUNK // samples)
    log_likelihoods = []
    for batch in images.split(chunk):
        mu, logvar = model.encode(batch)  # (b, latent) each
        std = torch.exp(0.5 * logvar)
        eps = torch.randn(samples, *mu.shape, device=mu.device)  # (k, b, latent)
        z = mu + std * eps
        logits = model.decode(z.flatten(0, 1))  # (k * b, C, H, W)
        targets = batch.expand(samples, *batch.shape).flatten(0, 1)
        log_px_given_z = -bernoulli_nll(logits, targets).view(samples, -1)  # (k, b)
        # log q(z|x) for z = mu + std * eps is a Gaussian density evaluated at eps.
        log_qz = -0.5 * (eps.pow(2) + LOG_2PI + logvar).sum(-1)  # (k, b)
        log_weights = log_px_given_z + standard_normal_log_prob(z) - log_qz
        log_likelihoods.append(torch.logsumexp(log_weights, dim=0) - math.log(samples))
    return torch.cat(log_likelihoods)


@torch.no_grad()
def posterior_means(model: Autoencoder, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    model.eval()
    return torch.cat([model.encode(batch)[0] for batch in images.split(batch_size)])


def active_units(
    model: Autoencoder, images: torch.Tensor, threshold: float, batch_size: int
) -> int:
    """Latent dimensions whose posterior mean varies across the data more than `threshold`."""
    variance = posterior_means(model, images, batch_size).var(dim=0)
    return int((variance > threshold).sum())


def activation_modules(model: nn.Module) -> list[nn.Module]:
    activation_types = tuple({type(factory()) for factory in ACTIVATIONS.values()})
    return [module for module in model.modules() if isinstance(module, activation_types)]


@torch.no_grad()
def dead_unit_fraction(
    model: Autoencoder, images: torch.Tensor, threshold: float, batch_size: int
) -> float:
    """Share of hidden units (activation outputs) whose std over `images` is below threshold."""
    model.eval()
    outputs: dict[int, list[torch.Tensor]] = {}
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, key=index: outputs.setdefault(key, []).append(out.flatten(1))
        )
        for index, module in enumerate(activation_modules(model))
    ]
    try:
        for batch in images.split(batch_size):
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    stds = [torch.cat(chunks).std(dim=0) for chunks in outputs.values()]
    dead = sum(int((std < threshold).sum()) for std in stds)
    total = sum(std.numel() for std in stds)
    return dead / total if total else 0.0


def gradient_norms(
    model: Autoencoder, images: torch.Tensor, beta: float, batch_size: int
) -> dict[str, float]:
    """L2 norm of d(mean negative ELBO)/d(weight) per layer, from input layer to output layer."""
    model.eval()  # no dropout: the figure describes the trained network, not a noisy draw
    model.zero_grad(set_to_none=True)
    for batch in images.split(batch_size):
        terms = loss_terms(model(batch), batch, beta)
        (terms.total * len(batch) / len(images)).backward()
    norms = {
        f"grad_norm/{name.removesuffix('.weight')}": float(parameter.grad.norm())
        for name, parameter in model.named_parameters()
        if name.endswith("weight") and parameter.ndim >= 2 and parameter.grad is not None
    }
    model.zero_grad(set_to_none=True)
    layers = list(norms.values())
    # Vanishing gradients show as a first (input) layer receiving far less signal than the last.
    norms["grad_norm/first_over_last"] = layers[0] / layers[-1] if layers[-1] > 0 else float("inf")
    return norms


def split_metrics(
    model: Autoencoder,
    images: torch.Tensor,
    iwae_samples: int,
    beta: float,
    batch_size: int,
    active_threshold: float,
) -> dict[str, float | None]:
    """Likelihood metrics on one split; the VAE-only ones are None for the AE."""
    terms = mean_loss_terms(model, images, beta, batch_size)
    metrics: dict[str, float | None] = {"reconstruction": terms["reconstruction"]}
    if model.is_variational:
        metrics |= {
            "neg_elbo": terms["neg_elbo"],
            "kl": terms["kl"],
            "iwae_nll": float(-iwae_log_likelihood(model, images, iwae_samples).mean()),
        }
    else:
        metrics |= {"neg_elbo": None, "kl": None, "iwae_nll": None}
    metrics["active_units"] = active_units(model, images, active_threshold, batch_size)
    return metrics
