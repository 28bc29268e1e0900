"""The fit loop: in-memory batches, seeding, resumable checkpoints and a divergence guard.

The whole training split lives in one tensor; each epoch is a seeded permutation cut into
batches, so there is no DataLoader, no per-sample transform and no worker process to start.
Adam runs as torch's fused kernel (one pass over the parameters per step); on an accelerator the
divergence guard reads the losses every `GUARD_INTERVAL` batches instead of synchronizing the
device each batch. `python -m benchmarks train` measures this loop (benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import math
import pickle
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vaeops.config import TrainConfig
from vaeops.models import Autoencoder
from vaeops.objectives import LossTerms, loss_terms

EpochCallback = Callable[[int, dict[str, float]], None]
# Batches between reads of the loss on an accelerator: each read waits for the device to drain its
# queue of kernels. On CPU a read is free and every batch is checked before its update.
GUARD_INTERVAL = 32
# Devices where torch.optim.Adam has a fused kernel; elsewhere it runs its default for-each path.
FUSED_ADAM_DEVICES = ("cpu", "cuda")


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    diverged: bool = False
    reason: str | None = None
    seconds: float = 0.0

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


class Diverged(Exception):
    """Raised inside the loop when the loss is non-finite or explodes."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but no GPU is visible; use 'auto' or 'cpu'")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed torch's generators. The ops used here are deterministic on CPU and CUDA, so we skip
    `torch.use_deterministic_algorithms`, whose first call costs seconds of imports."""
    torch.manual_seed(seed)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_loss(loss: float, max_loss: float) -> None:
    if not math.isfinite(loss):
        raise Diverged(f"non-finite loss ({loss})")
    if loss > max_loss:
        raise Diverged(f"loss {loss:.4g} exceeded train.max_loss={max_loss:g}")


def check_finite(terms: LossTerms, max_loss: float) -> None:
    check_loss(terms.total.item(), max_loss)


def check_pending(losses: list[torch.Tensor], max_loss: float) -> None:
    """Check batch losses kept on the device, in order, with one read; empties `losses`."""
    if losses:
        values = torch.stack(losses).tolist()
        losses.clear()
        for loss in values:
            check_loss(loss, max_loss)


def make_optimizer(model: Autoencoder, learning_rate: float) -> torch.optim.Adam:
    """Adam, as torch's fused kernel where torch has one for the parameters' device: one kernel
    per step instead of about ten element-wise kernels per parameter tensor."""
    parameters = list(model.parameters())
    fused = parameters[0].device.type in FUSED_ADAM_DEVICES
    return torch.optim.Adam(parameters, lr=learning_rate, fused=fused)


def terms_as_metrics(sums: torch.Tensor, count: int, variational: bool) -> dict[str, float]:
    """Summed (loss, reconstruction, kl) over `count` images -> per-image metrics.

    `loss` is what was minimised (reconstruction + beta * kl); `neg_elbo` is the beta = 1 bound,
    reported for the VAE only (the AE has no ELBO).
    """
    loss, reconstruction, kl = (sums / count).tolist()
    metrics = {"loss": loss, "reconstruction": reconstruction}
    if variational:
        metrics |= {"kl": kl, "neg_elbo": reconstruction + kl}
    return metrics


@torch.no_grad()
def mean_loss_terms(
    model: Autoencoder, images: torch.Tensor, beta: float, batch_size: int = 1000
) -> dict[str, float]:
    """Single-sample loss terms on `images`, in nats per image (see `terms_as_metrics`)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, device=images.device)
    for batch in images.split(batch_size):
        terms = loss_terms(model(batch), batch, beta)
        sums += torch.stack(list(terms)) * len(batch)
    model.train(was_training)
    return terms_as_metrics(sums, len(images), model.is_variational)


def train_one_epoch(
    model: Autoencoder,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator,
) -> dict[str, float]:
    model.train()
    device = images.device
    order = torch.randperm(len(images), generator=generator).to(device)
    sums = torch.zeros(3, device=device)
    # Per-layer gradient norms over training show whether gradients vanish in the first layers
    # (Glorot & Bengio 2010); summed on the device and read once per epoch.
    layers = model.weight_layers()
    grad_norm_sums = torch.zeros(len(layers), device=device)
    batches = 0
    pending: list[torch.Tensor] = []  # batch losses not yet read (accelerators only)
    for batch_number, batch_index in enumerate(order.split(config.batch_size), start=1):
        batch = images.index_select(0, batch_index)  # (b, C, H, W), same rows as images[index]
        with autocast(device, config.precision):
            output = model(batch)
        terms = loss_terms(output, batch, config.beta)
        if device.type == "cpu":
            check_finite(terms, config.max_loss)
        else:
            pending.append(terms.total.detach())
            if batch_number % GUARD_INTERVAL == 0:
                check_pending(pending, config.max_loss)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        grad_norm_sums += torch.stack([weight.grad.norm() for _, weight in layers])
        batches += 1
        optimizer.step()
        sums += torch.stack([term.detach() for term in terms]) * len(batch)
    check_pending(pending, config.max_loss)
    metrics = terms_as_metrics(sums, len(images), model.is_variational)
    mean_norms = (grad_norm_sums / batches).tolist()
    return metrics | {
        f"grad_norm/{name}": norm for (name, _), norm in zip(layers, mean_norms, strict=True)
    }


# What torch.load raises on a truncated or foreign file: a broken zip (RuntimeError), an empty
# file (EOFError), bytes that are no pickle (UnpicklingError) or a pickle missing its records.
CHECKPOINT_READ_ERRORS = (RuntimeError, EOFError, pickle.UnpicklingError, KeyError)
# The records `fit` resumes from; a file without them is not a checkpoint of this loop.
CHECKPOINT_KEYS = frozenset({"model", "optimizer", "torch_rng", "batch_rng", "history"})


class CorruptCheckpointWarning(UserWarning):
    """A checkpoint could not be read and was set aside; the variant trains from scratch."""


def save_checkpoint(path: Path, model, optimizer, generator, history, extra: dict) -> None:
    """Everything needed to resume after the last finished epoch, loadable with weights_only."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "batch_rng": generator.get_state(),
        "history": history,
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    temporary.replace(path)  # atomic: an interrupt never leaves half a checkpoint


def load_checkpoint(path: Path | None) -> dict | None:
    """The resume state at `path`, or None where there is none or it is unreadable.

    An unreadable checkpoint (truncated, overwritten, not a checkpoint) is renamed
    `<name>.corrupt` with one warning naming it, so the variant trains from scratch and the sweep
    goes on; the renamed file is kept for inspection and never read again.
    """
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CHECKPOINT_READ_ERRORS as error:
        first_line = next(iter(str(error).splitlines()), "")[:200]
        return set_aside(path, f"{type(error).__name__}: {first_line}")
    if not isinstance(state, dict):
        return set_aside(path, f"holds a {type(state).__name__}, not a checkpoint")
    if missing := sorted(CHECKPOINT_KEYS - state.keys()):
        return set_aside(path, f"missing {', '.join(missing)}")
    return state


def set_aside(path: Path, why: str) -> None:
    """Rename an unreadable checkpoint to `<name>.corrupt` and say so; None (nothing to resume)."""
    corrupt = path.with_name(f"{path.name}.corrupt")
    path.replace(corrupt)
    warnings.warn(
        f"checkpoint {path} is unreadable ({why}); moved to {corrupt}, training from scratch",
        CorruptCheckpointWarning,
        stacklevel=3,
    )
    return None


def fit(
    model: Autoencoder,
    train_images: torch.Tensor,
    config: TrainConfig,
    seed: int,
    val_images: torch.Tensor | None = None,
    checkpoint_path: Path | None = None,
    on_epoch: EpochCallback | None = None,
    checkpoint_extra: dict | None = None,
) -> FitResult:
    """Train with Adam for `config.epochs`, resuming from `checkpoint_path` if it holds a run.

    Per-epoch metrics are namespaced (`train/neg_elbo`, `val/neg_elbo`, ...) and passed to
    `on_epoch`; a non-finite or exploding loss ends the fit with `diverged=True` instead of raising.
    """
    optimizer = make_optimizer(model, config.learning_rate)
    generator = torch.Generator().manual_seed(seed)
    result = FitResult()
    resumed = load_checkpoint(checkpoint_path)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        torch.set_rng_state(resumed["torch_rng"])
        generator.set_state(resumed["batch_rng"])
        result.history = list(resumed["history"])
    # Seconds of the epochs a checkpoint already holds, so a resumed fit reports its whole time.
    earlier_seconds = float(resumed.get("seconds", 0.0)) if resumed is not None else 0.0

    started = time.perf_counter()
    for epoch in range(len(result.history), config.epochs):
        try:
            train_terms = train_one_epoch(model, optimizer, train_images, config, generator)
        except Diverged as error:
            result.diverged, result.reason = True, f"epoch {epoch + 1}: {error}"
            break
        metrics = {"epoch": epoch + 1, **{f"train/{k}": v for k, v in train_terms.items()}}
        if val_images is not None:
            val_terms = mean_loss_terms(model, val_images, config.beta)
            metrics |= {f"val/{k}": v for k, v in val_terms.items()}
        result.history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch + 1, metrics)
        if checkpoint_path is not None:
            elapsed = {"seconds": earlier_seconds + time.perf_counter() - started}
            save_checkpoint(
                checkpoint_path,
                model,
                optimizer,
                generator,
                result.history,
                (checkpoint_extra or {}) | elapsed,
            )
    result.seconds = earlier_seconds + time.perf_counter() - started
    return result
