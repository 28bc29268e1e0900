"""Evaluation metrics: the IWAE bound, active latent units, dead hidden units, gradient norms."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
from torch import nn

from vaeops.config import TrainConfig
from vaeops.evaluation import (
    active_units,
    dead_unit_fraction,
    gradient_norms,
    iwae_log_likelihood,
    split_metrics,
)
from vaeops.models import ModelSpec, build_model
from vaeops.objectives import bernoulli_nll
from vaeops.training import fit, mean_loss_terms

TINY_SPEC = ModelSpec(kind="vae", architecture="mlp", activation="relu", hidden=(16,), latent=4)


@pytest.fixture(scope="module")
def trained_vae(mnist_5k):
    """A tiny VAE trained for a few epochs on 250 real digits, and those digits."""
    images = torch.from_numpy(mnist_5k[0][::20].copy()).unsqueeze(1).float() / 255.0
    torch.manual_seed(0)
    model = build_model(TINY_SPEC)
    result = fit(model, images, TrainConfig(epochs=5, batch_size=50, learning_rate=3e-3), seed=0)
    assert not result.diverged
    return model.eval(), images


def negative_elbo(model, images: torch.Tensor, seed: int) -> float:
    torch.manual_seed(seed)
    return mean_loss_terms(model, images, beta=1.0)["neg_elbo"]


def iwae_nll(model, images: torch.Tensor, samples: int, seed: int) -> float:
    torch.manual_seed(seed)
    return float(-iwae_log_likelihood(model, images, samples).mean())


@pytest.mark.parametrize("samples", [1, 7])
def test_given_a_vae_when_iwae_computed_then_one_finite_value_per_image(
    tiny_spec, tiny_images, samples
):
    torch.manual_seed(0)
    model = build_model(tiny_spec)

    log_likelihood = iwae_log_likelihood(model, tiny_images[:9], samples)

    assert log_likelihood.shape == (9,)
    assert torch.isfinite(log_likelihood).all()
    assert (log_likelihood < 0).all()  # a density of binary-ish images is below 1


def test_given_a_decoder_that_ignores_z_and_a_prior_posterior_then_iwae_is_exact(
    tiny_spec, tiny_images
):
    # q(z|x) = p(z) = N(0, I) and p(x|z) = p(x): every importance weight is exactly p(x).
    torch.manual_seed(0)
    model = build_model(tiny_spec).eval()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.decoder[0][0].weight.zero_()
        logits = model.decode(torch.zeros(6, tiny_spec.latent))  # the same for every z
        exact = -bernoulli_nll(logits, tiny_images[:6])

    for samples in (1, 5, 50):
        torch.testing.assert_close(iwae_log_likelihood(model, tiny_images[:6], samples), exact)
    assert negative_elbo(model, tiny_images[:6], seed=0) == pytest.approx(-float(exact.mean()))


def test_given_one_sample_when_iwae_computed_then_it_estimates_the_negative_elbo(trained_vae):
    model, images = trained_vae
    repeated = images.repeat(20, 1, 1, 1)  # 5,000 single-sample estimates of each

    iwae_one = iwae_nll(model, repeated, samples=1, seed=0)
    elbo = sum(negative_elbo(model, repeated, seed) for seed in (1, 2, 3)) / 3

    # Both estimate E_q[log p(x|z)] - KL; the noise of each mean is about 0.2 nats, while a
    # missing term of the importance weight (log q or log p(z)) shifts it by several nats.
    assert iwae_one == pytest.approx(elbo, abs=1.0)


def test_given_a_trained_vae_when_iwae_uses_50_samples_then_it_is_below_the_negative_elbo(
    trained_vae,
):
    model, images = trained_vae

    iwae = iwae_nll(model, images, samples=50, seed=0)
    elbo = negative_elbo(model, images, seed=0)

    assert iwae <= elbo
    assert iwae > 0


def test_given_more_importance_samples_when_iwae_computed_then_the_bound_does_not_worsen(
    trained_vae,
):
    model, images = trained_vae

    bounds = [iwae_nll(model, images, samples=k, seed=0) for k in (1, 5, 25, 100)]

    tolerance = 0.5  # nats per image; the differences here are several nats at small k
    for fewer, more in itertools.pairwise(bounds):
        assert more <= fewer + tolerance
    assert bounds[-1] < bounds[0] - 1.0


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_given_latent_dims_with_constant_means_when_counting_active_units_then_they_are_excluded(
    tiny_spec, tiny_images, kind
):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_spec, kind=kind, latent=4))
    with torch.no_grad():
        # Rows 0..latent-1 of the head are the posterior means (the codes for the AE).
        model.head.weight[[1, 3]] = 0.0  # dims 1 and 3: the same mean for every image
        model.head.bias[[1, 3]] = 0.5
        model.head.weight[[0, 2]] *= 100.0  # dims 0 and 2: means spread far apart

    counted = {batch: active_units(model, tiny_images, 0.01, batch) for batch in (7, 1000)}

    assert counted == {7: 2, 1000: 2}
    assert active_units(model, tiny_images, threshold=1e9, batch_size=100) == 0


def set_biases(model: nn.Module, linears: list[nn.Linear], value: float) -> None:
    with torch.no_grad():
        for linear in linears:
            linear.bias.fill_(value)


def test_given_relu_units_that_never_fire_when_measured_then_every_unit_is_dead(
    tiny_spec, tiny_images
):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_spec, activation="relu"))
    # The first layer of the encoder and of the decoder: each feeds a ReLU.
    set_biases(model, [model.encoder[1][0], model.decoder[0][0]], -1e4)

    assert dead_unit_fraction(model, tiny_images, threshold=1e-3, batch_size=64) == 1.0


def test_given_an_ae_with_a_dead_first_layer_when_measured_then_the_decoder_is_dead_too(
    tiny_spec, tiny_images
):
    # No encoder signal -> the same code for every image -> constant decoder activations.
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_spec, kind="ae", activation="relu"))
    set_biases(model, [model.encoder[1][0]], -1e4)

    assert dead_unit_fraction(model, tiny_images, threshold=1e-3, batch_size=64) == 1.0


@pytest.mark.parametrize("activation", ["relu", "tanh", "prelu"])
def test_given_a_normal_init_when_measured_then_almost_no_unit_is_dead(
    tiny_spec, tiny_images, activation
):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_spec, activation=activation))

    assert dead_unit_fraction(model, tiny_images, threshold=1e-3, batch_size=64) < 0.05


def weight_matrix_names(model: nn.Module) -> list[str]:
    return [
        name.removesuffix(".weight")
        for name, parameter in model.named_parameters()
        if name.endswith("weight") and parameter.ndim >= 2
    ]


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_given_a_model_when_gradient_norms_computed_then_one_finite_norm_per_weight_matrix(
    tiny_spec, tiny_images, kind, architecture
):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_spec, kind=kind, architecture=architecture))

    norms = gradient_norms(model, tiny_images[:32], beta=1.0, batch_size=16)

    expected = {f"grad_norm/{name}" for name in weight_matrix_names(model)}
    assert set(norms) == expected | {"grad_norm/first_over_last"}
    assert all(math.isfinite(value) and value > 0 for value in norms.values())
    assert all(parameter.grad is None for parameter in model.parameters())


def test_given_an_mlp_vae_when_gradient_norms_computed_then_layers_run_input_to_output(
    tiny_spec, tiny_images
):
    torch.manual_seed(0)
    model = build_model(tiny_spec)

    norms = gradient_norms(model, tiny_images[:32], beta=1.0, batch_size=32)

    # Data flow: encoder hidden layer -> head (mu, logvar) -> decoder hidden -> decoder output.
    layers = ["encoder.1.0", "head", "decoder.0.0", "decoder.1"]
    assert list(norms) == [f"grad_norm/{name}" for name in layers] + ["grad_norm/first_over_last"]
    assert norms["grad_norm/first_over_last"] == pytest.approx(
        norms["grad_norm/encoder.1.0"] / norms["grad_norm/decoder.1"]
    )


def test_given_an_ae_when_gradient_norms_computed_in_batches_then_they_equal_the_full_gradient(
    tiny_spec, tiny_images
):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_spec, kind="ae"))
    images = tiny_images[:40]  # the AE is deterministic: no sampling noise between the two

    batched = gradient_norms(model, images, beta=1.0, batch_size=7)

    reconstruction = bernoulli_nll(model(images).logits, images).mean()
    reconstruction.backward()
    first = model.encoder[1][0].weight.grad.norm()
    assert batched["grad_norm/encoder.1.0"] == pytest.approx(float(first), rel=1e-4)


def test_given_an_ae_when_split_metrics_computed_then_vae_only_metrics_are_none(
    tiny_spec, tiny_images
):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_spec, kind="ae"))

    metrics = split_metrics(model, tiny_images[:20], 4, 1.0, 10, 0.01)

    assert metrics["neg_elbo"] is None and metrics["kl"] is None and metrics["iwae_nll"] is None
    assert metrics["reconstruction"] > 0
    assert 0 <= metrics["active_units"] <= tiny_spec.latent


def test_given_a_vae_when_split_metrics_computed_then_iwae_and_elbo_are_reported(
    trained_vae,
):
    model, images = trained_vae

    torch.manual_seed(0)
    metrics = split_metrics(model, images, 20, 1.0, 100, 0.01)

    assert metrics["neg_elbo"] == pytest.approx(metrics["reconstruction"] + metrics["kl"])
    assert metrics["iwae_nll"] <= metrics["neg_elbo"]
    assert 1 <= metrics["active_units"] <= TINY_SPEC.latent
