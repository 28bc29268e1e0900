"""The VAE / AE family: shapes, activations per half, spec round trip, sampling, AE prior."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from vaeops.models import ModelSpec, build_model
from vaeops.models.autoencoder import parameter_count


def spec_for(tiny_spec: ModelSpec, **changes) -> ModelSpec:
    return dataclasses.replace(tiny_spec, **changes)


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_given_a_kind_and_architecture_when_forwarded_then_shapes_match(
    tiny_spec, tiny_images, kind, architecture
):
    torch.manual_seed(0)
    model = build_model(spec_for(tiny_spec, kind=kind, architecture=architecture))
    images = tiny_images[:5]

    output = model(images)

    latent = tiny_spec.latent
    assert output.logits.shape == (5, 1, 28, 28)
    assert output.mu.shape == (5, latent)
    assert output.z.shape == (5, latent)
    assert torch.isfinite(output.logits).all()
    if kind == "vae":
        assert model.is_variational
        assert output.logvar.shape == (5, latent)
        assert not torch.equal(output.z, output.mu)  # reparameterized sample, not the mean
    else:
        assert not model.is_variational
        assert output.logvar is None
        assert torch.equal(output.z, output.mu)


def test_given_vae_and_ae_when_built_then_only_the_head_size_differs(tiny_spec):
    vae = build_model(spec_for(tiny_spec, kind="vae"))
    ae = build_model(spec_for(tiny_spec, kind="ae"))

    assert vae.head.out_features == 2 * tiny_spec.latent
    assert ae.head.out_features == tiny_spec.latent
    hidden = tiny_spec.hidden[-1]
    assert parameter_count(vae) - parameter_count(ae) == tiny_spec.latent * (hidden + 1)


def activation_types(module: nn.Module) -> set[type]:
    return {type(m) for m in module.modules() if isinstance(m, nn.ReLU | nn.Tanh)}


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_given_a_decoder_activation_when_built_then_the_decoder_uses_it(tiny_spec, architecture):
    model = build_model(
        spec_for(tiny_spec, architecture=architecture, activation="relu", decoder_activation="tanh")
    )

    assert activation_types(model.encoder) == {nn.ReLU}
    assert activation_types(model.decoder) == {nn.Tanh}


def test_given_no_decoder_activation_when_built_then_the_decoder_uses_the_encoders(tiny_spec):
    model = build_model(spec_for(tiny_spec, activation="tanh", decoder_activation=None))

    assert activation_types(model.encoder) == {nn.Tanh}
    assert activation_types(model.decoder) == {nn.Tanh}


@pytest.mark.parametrize(("field", "value"), [("kind", "gan"), ("architecture", "rnn")])
def test_given_an_unknown_kind_or_architecture_when_built_then_value_error(tiny_spec, field, value):
    with pytest.raises(ValueError, match=value):
        build_model(spec_for(tiny_spec, **{field: value}))


def test_given_a_spec_when_round_tripped_through_json_then_it_is_equal():
    spec = ModelSpec(
        kind="ae",
        architecture="conv",
        activation="prelu",
        decoder_activation="elu",
        hidden=(32, 16),
        latent=3,
        dropout=0.25,
        image_shape=(1, 28, 28),
    )

    restored = ModelSpec.from_json(spec.to_json())

    assert restored == spec
    assert isinstance(restored.hidden, tuple)
    assert isinstance(restored.image_shape, tuple)


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_given_a_seeded_generator_when_sampling_then_images_are_reproducible_probabilities(
    tiny_spec, kind
):
    torch.manual_seed(0)
    model = build_model(spec_for(tiny_spec, kind=kind))

    first = model.sample(7, generator=torch.Generator().manual_seed(123))
    again = model.sample(7, generator=torch.Generator().manual_seed(123))
    other = model.sample(7, generator=torch.Generator().manual_seed(124))

    assert first.shape == (7, 1, 28, 28)
    assert first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_given_an_ae_when_fitting_its_code_distribution_then_prior_is_codes_mean_and_std(
    tiny_spec, tiny_images
):
    torch.manual_seed(0)
    model = build_model(spec_for(tiny_spec, kind="ae")).eval()
    with torch.no_grad():
        codes = model.encode(tiny_images)[0]

    model.fit_code_distribution(tiny_images, batch_size=64)

    torch.testing.assert_close(model.prior_mean, codes.mean(0))
    torch.testing.assert_close(model.prior_std, codes.std(0))
    assert not torch.allclose(model.prior_mean, torch.zeros(tiny_spec.latent))


def test_given_a_fitted_ae_prior_when_sampling_then_codes_come_from_it(tiny_spec):
    torch.manual_seed(0)
    model = build_model(spec_for(tiny_spec, kind="ae")).eval()
    model.prior_mean.fill_(2.0)
    model.prior_std.fill_(0.0)  # a point mass: every sample decodes the same code

    samples = model.sample(3, generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        expected = torch.sigmoid(model.decode(torch.full((1, tiny_spec.latent), 2.0)))
    torch.testing.assert_close(samples, expected.expand(3, -1, -1, -1))


def test_given_a_conv_spec_with_odd_image_size_when_built_then_value_error(tiny_spec):
    with pytest.raises(ValueError, match="divisible by 4"):
        build_model(spec_for(tiny_spec, architecture="conv", image_shape=(1, 30, 30)))
