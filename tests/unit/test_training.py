"""The fit loop: per-epoch history, seeded reproducibility, exact resume, divergence guard."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vaeops.config import TrainConfig
from vaeops.models import build_model
from vaeops.objectives import loss_terms
from vaeops.training import (
    CorruptCheckpointWarning,
    Diverged,
    check_pending,
    fit,
    load_checkpoint,
    make_optimizer,
    mean_loss_terms,
    seed_everything,
)

CONFIG = TrainConfig(epochs=2, batch_size=64, learning_rate=1e-3)


def run(spec, images, seed: int, config: TrainConfig = CONFIG, **kwargs):
    """What the train step does: seed, build the model, fit."""
    seed_everything(seed)
    model = build_model(spec)
    return model, fit(model, images[:200], config, seed=seed, val_images=images[200:], **kwargs)


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_given_two_epochs_when_fit_then_history_has_one_namespaced_row_per_epoch(
    tiny_spec, tiny_images, kind
):
    model, result = run(dataclasses.replace(tiny_spec, kind=kind), tiny_images, seed=0)

    assert not result.diverged and result.reason is None
    assert [row["epoch"] for row in result.history] == [1, 2]
    terms = ["loss", "reconstruction"] + (["kl", "neg_elbo"] if kind == "vae" else [])
    expected = {"epoch"} | {f"{split}/{term}" for split in ("train", "val") for term in terms}
    expected |= {f"train/grad_norm/{name}" for name, _ in model.weight_layers()}
    for row in result.history:
        assert set(row) == expected
        assert all(value == value for value in row.values())  # no NaN
    assert result.final == result.history[-1]
    assert result.history[1]["train/loss"] < result.history[0]["train/loss"]


def test_given_a_vae_history_when_read_then_neg_elbo_is_reconstruction_plus_kl(
    tiny_spec, tiny_images
):
    _, result = run(tiny_spec, tiny_images, seed=0)

    for row in result.history:
        for split in ("train", "val"):
            assert row[f"{split}/neg_elbo"] == pytest.approx(
                row[f"{split}/reconstruction"] + row[f"{split}/kl"]
            )


def test_given_no_validation_images_when_fit_then_history_has_only_train_keys(
    tiny_spec, tiny_images
):
    seed_everything(0)
    result = fit(build_model(tiny_spec), tiny_images, CONFIG, seed=0)

    assert all(not key.startswith("val/") for row in result.history for key in row)


def test_given_the_same_seed_when_fit_twice_then_metrics_and_weights_are_identical(
    tiny_spec, tiny_images
):
    first_model, first = run(tiny_spec, tiny_images, seed=0)
    second_model, second = run(tiny_spec, tiny_images, seed=0)
    _, other = run(tiny_spec, tiny_images, seed=1)

    assert first.history == second.history
    for (name, a), (_, b) in zip(
        first_model.state_dict().items(), second_model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert other.history != first.history
    assert other.history[-1]["train/loss"] != first.history[-1]["train/loss"]


def test_given_a_checkpoint_after_epoch_one_when_resumed_then_history_matches_an_uninterrupted_run(
    tiny_spec, tiny_images, tmp_path
):
    uninterrupted_model, uninterrupted = run(tiny_spec, tiny_images, seed=0)

    checkpoint = tmp_path / "checkpoints" / "variant.pt"
    _, interrupted = run(
        tiny_spec,
        tiny_images,
        seed=0,
        config=CONFIG.model_copy(update={"epochs": 1}),
        checkpoint_path=checkpoint,
    )
    assert len(interrupted.history) == 1
    assert load_checkpoint(checkpoint)["history"] == interrupted.history
    torch.manual_seed(12345)  # a new process: whatever the RNG holds now must not matter
    resumed_model, resumed = run(tiny_spec, tiny_images, seed=0, checkpoint_path=checkpoint)

    assert resumed.history == uninterrupted.history
    for (name, a), (_, b) in zip(
        uninterrupted_model.state_dict().items(), resumed_model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_given_a_finished_checkpoint_when_fit_again_then_no_epoch_runs(
    tiny_spec, tiny_images, tmp_path
):
    checkpoint = tmp_path / "variant.pt"
    _, first = run(tiny_spec, tiny_images, seed=0, checkpoint_path=checkpoint)
    epochs_seen = []

    _, again = run(
        tiny_spec,
        tiny_images,
        seed=0,
        checkpoint_path=checkpoint,
        on_epoch=lambda epoch, metrics: epochs_seen.append(epoch),
    )

    assert again.history == first.history
    assert epochs_seen == []


def test_given_an_epoch_callback_when_fit_then_it_sees_every_epochs_metrics(tiny_spec, tiny_images):
    seen = []

    _, result = run(
        tiny_spec,
        tiny_images,
        seed=0,
        on_epoch=lambda epoch, metrics: seen.append((epoch, metrics)),
    )

    assert seen == [(1, result.history[0]), (2, result.history[1])]


def test_given_a_tiny_max_loss_when_fit_then_it_stops_diverged_without_raising(
    tiny_spec, tiny_images
):
    config = CONFIG.model_copy(update={"max_loss": 1e-3})

    _, result = run(tiny_spec, tiny_images, seed=0, config=config)

    assert result.diverged
    assert "epoch 1" in result.reason and "max_loss" in result.reason
    assert result.history == []
    assert result.final == {}


def test_given_non_finite_weights_when_fit_then_it_stops_diverged_with_the_reason(
    tiny_spec, tiny_images
):
    seed_everything(0)
    model = build_model(tiny_spec)
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))

    result = fit(model, tiny_images, CONFIG, seed=0)

    assert result.diverged
    assert "non-finite" in result.reason


def test_given_train_mode_when_mean_loss_terms_computed_then_dropout_is_off_and_mode_is_kept(
    tiny_spec, tiny_images
):
    seed_everything(0)
    model = build_model(dataclasses.replace(tiny_spec, kind="ae", dropout=0.5)).train()

    torch.manual_seed(0)
    first = mean_loss_terms(model, tiny_images, beta=1.0)
    torch.manual_seed(1)
    again = mean_loss_terms(model, tiny_images, beta=1.0, batch_size=7)

    assert model.training
    assert first == pytest.approx(again)  # the AE without dropout is deterministic


def test_given_a_cpu_model_when_the_optimizer_is_made_then_it_is_torchs_fused_adam(tiny_spec):
    optimizer = make_optimizer(build_model(tiny_spec), learning_rate=1e-3)

    assert type(optimizer) is torch.optim.Adam
    assert optimizer.defaults["fused"] and optimizer.defaults["lr"] == 1e-3


def test_given_pending_losses_when_checked_then_the_first_bad_batch_is_reported():
    losses = [torch.tensor(200.0), torch.tensor(float("nan")), torch.tensor(1e9)]
    with pytest.raises(Diverged, match=r"non-finite loss \(nan\)"):
        check_pending(losses, max_loss=1e5)
    assert losses == []
    with pytest.raises(Diverged, match=r"exceeded train\.max_loss=100000"):
        check_pending([torch.tensor(5.0), torch.tensor(2e5)], max_loss=1e5)
    check_pending([torch.tensor(5.0)], max_loss=1e5)  # nothing raised


def test_given_one_batch_per_epoch_when_fit_then_grad_norms_are_that_batchs_gradient_norms(
    tiny_spec, tiny_images
):
    """Epoch 1 of a one-batch epoch records the norms of the gradient at the initial weights."""
    spec = dataclasses.replace(tiny_spec, kind="ae")  # deterministic forward: no sampled z
    seed_everything(0)
    reference = build_model(spec)
    initial = {key: value.clone() for key, value in reference.state_dict().items()}
    config = TrainConfig(epochs=1, batch_size=200, learning_rate=1e-3)
    _, result = run(spec, tiny_images, seed=0, config=config)

    reference.load_state_dict(initial)
    batch = tiny_images[:200][torch.randperm(200, generator=torch.Generator().manual_seed(0))]
    loss_terms(reference(batch), batch, config.beta).total.backward()
    layers = reference.weight_layers()
    assert next(name for name, _ in layers).startswith("encoder")  # input layer first
    for name, weight in layers:
        recorded = result.history[0][f"train/grad_norm/{name}"]
        assert recorded == pytest.approx(float(weight.grad.norm()), rel=1e-4)


def test_given_a_truncated_checkpoint_when_fit_then_it_is_set_aside_and_training_starts_afresh(
    tiny_spec, tiny_images, tmp_path
):
    checkpoint = tmp_path / "variant.pt"
    one_epoch = TrainConfig(epochs=1, batch_size=64)
    run(tiny_spec, tiny_images, seed=0, config=one_epoch, checkpoint_path=checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # cut mid-write by a crash or a full disk
    _, uninterrupted = run(tiny_spec, tiny_images, seed=0)

    with pytest.warns(CorruptCheckpointWarning, match="variant.pt is unreadable"):
        _, result = run(tiny_spec, tiny_images, seed=0, checkpoint_path=checkpoint)

    assert (tmp_path / "variant.pt.corrupt").is_file()
    assert result.history == uninterrupted.history  # all epochs, from scratch
