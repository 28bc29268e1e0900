"""The objective: Bernoulli reconstruction NLL, Gaussian KL, and their beta-weighted sum."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from vaeops.models import ForwardOutput
from vaeops.objectives import bernoulli_nll, gaussian_kl, loss_terms, softplus


def test_given_random_gaussians_when_kl_computed_then_it_matches_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    logvar = torch.randn(6, 4, generator=generator, dtype=torch.float64)

    kl = gaussian_kl(mu, logvar)

    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)
    assert kl.shape == (6,)
    torch.testing.assert_close(kl, expected)


def test_given_the_standard_normal_when_kl_computed_then_it_is_zero():
    kl = gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5))

    assert torch.equal(kl, torch.zeros(3))


def test_given_logits_and_targets_when_nll_computed_then_it_is_the_hand_computed_bce():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 4, 4, generator=generator, dtype=torch.float64)
    images = torch.rand(3, 1, 4, 4, generator=generator, dtype=torch.float64)

    nll = bernoulli_nll(logits, images)

    p = torch.sigmoid(logits)
    expected = -(images * p.log() + (1 - images) * (1 - p).log()).flatten(1).sum(1)
    assert nll.shape == (3,)
    torch.testing.assert_close(nll, expected)


def test_given_saturated_logits_when_nll_computed_then_it_is_finite_and_exact():
    logits = torch.tensor([[100.0, -100.0, 100.0, -100.0]])
    images = torch.tensor([[1.0, 0.0, 0.0, 1.0]])  # two right with certainty, two wrong

    nll = bernoulli_nll(logits, images)

    assert torch.isfinite(nll).all()
    torch.testing.assert_close(nll, torch.tensor([200.0]))


def test_softplus_matches_torch_from_saturated_negative_to_saturated_positive():
    logits = torch.cat([torch.linspace(-100, 100, 2001), torch.tensor([0.0, -1e-6, 1e-6])])

    torch.testing.assert_close(softplus(logits), F.softplus(logits), atol=1e-7, rtol=1e-6)


def test_nll_gradients_equal_those_of_torch_bce_with_logits():
    generator = torch.Generator().manual_seed(0)
    logits = (4 * torch.randn(5, 1, 6, 6, generator=generator)).requires_grad_()
    images = torch.rand(5, 1, 6, 6, generator=generator).requires_grad_()
    weights = torch.rand(5, generator=generator)  # a per-image upstream gradient

    (bernoulli_nll(logits, images) * weights).sum().backward()
    ours = logits.grad, images.grad
    logits.grad = images.grad = None
    reference = F.binary_cross_entropy_with_logits(logits, images, reduction="none")
    (reference.flatten(1).sum(1) * weights).sum().backward()

    torch.testing.assert_close(ours[0], logits.grad)
    torch.testing.assert_close(ours[1], images.grad)


def fixed_output(latent: int = 3, variational: bool = True) -> tuple[ForwardOutput, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 1, 5, 5, generator=generator)
    mu = torch.randn(4, latent, generator=generator)
    logvar = torch.randn(4, latent, generator=generator) if variational else None
    images = torch.rand(4, 1, 5, 5, generator=generator)
    return ForwardOutput(logits, mu, mu, logvar), images


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 4.0])
def test_given_a_beta_when_loss_computed_then_only_the_kl_term_is_scaled(beta):
    output, images = fixed_output()

    terms = loss_terms(output, images, beta=beta)

    reconstruction = bernoulli_nll(output.logits, images).mean()
    kl = gaussian_kl(output.mu, output.logvar).mean()
    torch.testing.assert_close(terms.reconstruction, reconstruction)
    torch.testing.assert_close(terms.kl, kl)
    torch.testing.assert_close(terms.total, reconstruction + beta * kl)
    assert kl > 0


@pytest.mark.parametrize("beta", [0.0, 1.0, 4.0])
def test_given_an_ae_output_when_loss_computed_then_kl_is_zero_and_total_is_reconstruction(beta):
    output, images = fixed_output(variational=False)

    terms = loss_terms(output, images, beta=beta)

    assert float(terms.kl) == 0.0
    torch.testing.assert_close(terms.total, bernoulli_nll(output.logits, images).mean())
