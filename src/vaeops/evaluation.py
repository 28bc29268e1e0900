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
from vaeops.objectives import loss_terms, softplus
from vaeops.training import mean_loss_terms

LOG_2PI = math.log(2 * math.pi)
# Codes whose noise is drawn at once by the IWAE estimate: samples x images <= this. It fixes the
# random draws (one randn call per chunk), so it stays as it is for results to stay comparable.
IWAE_DECODES_PER_CHUNK = 32_768
# Codes decoded per call on CPU: small enough that the (rows, pixels) logits and the likelihood's
# temporaries stay in cache; on an accelerator the whole chunk is one call.
IWAE_ROWS_PER_BLOCK_CPU = 4_096


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def bernoulli_log_likelihood(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """log p(x|z) for logits (k, b, ...) of images (b, ...); returns (k, b).

    The negated `bernoulli_nll` in the form sum_p x_p * l_p - softplus(l_p) (BCE with logits is
    softplus(l) - x * l): the images broadcast over the k samples instead of being copied k times.
    """
    flat = logits.flatten(2)  # (k, b, pixels)
    return (flat * images.flatten(1)).sum(-1) - softplus(flat).sum(-1)


def importance_log_weights(
    model: Autoencoder, images: torch.Tensor, mu, logvar, eps: torch.Tensor
) -> torch.Tensor:
    """log p(x, z) - log q(z|x) for z = mu + std * eps, eps (s, b, latent); returns (s, b)."""
    z = mu + torch.exp(0.5 * logvar) * eps
    logits = model.decode(z.flatten(0, 1))  # (s * b, C, H, W)
    log_px_given_z = bernoulli_log_likelihood(logits.unflatten(0, eps.shape[:2]), images)
    # log q(z|x) for z = mu + std * eps is a Gaussian density evaluated at eps.
    log_qz = -0.5 * (eps.pow(2) + LOG_2PI + logvar).sum(-1)
    return log_px_given_z + standard_normal_log_prob(z) - log_qz


@torch.no_grad()
def iwae_log_likelihood(model: Autoencoder, images: torch.Tensor, samples: int) -> torch.Tensor:
    """log p(x) >= log (1/k) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x); returns shape (n,).

    Batched over samples and images: the noise of each chunk is drawn in one call and decoded in
    blocks of about `IWAE_ROWS_PER_BLOCK_CPU` codes (the whole chunk on an accelerator).
    """
    model.eval()
    chunk = max(1, IWAE_DECODES_PER_CHUNK // samples)
    log_likelihoods = []
    for batch in images.split(chunk):
        mu, logvar = model.encode(batch)  # (b, latent) each
        eps = torch.randn(samples, *mu.shape, device=mu.device)  # (k, b, latent)
        rows = IWAE_ROWS_PER_BLOCK_CPU if batch.device.type == "cpu" else IWAE_DECODES_PER_CHUNK
        blocks = eps.split(max(1, rows // len(batch)))  # (s, b, latent) each, s <= k
        log_weights = torch.cat(
            [importance_log_weights(model, batch, mu, logvar, block) for block in blocks]
        )  # (k, b)
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
        f"grad_norm/{name}": float(weight.grad.norm())
        for name, weight in model.weight_layers()
        if weight.grad is not None
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
