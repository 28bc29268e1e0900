"""The evaluate step: metrics and preview grids of every trained variant, in one process."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from vaeops.checkpoints import load_model
from vaeops.config import Params
from vaeops.data.splits import load_split
from vaeops.evaluation import dead_unit_fraction, gradient_norms, split_metrics
from vaeops.models import Autoencoder
from vaeops.outputs import EVAL_FILE, IMAGES_DIR, TRAIN_FILE, read_json, write_json
from vaeops.training import resolve_device
from vaeops.variants import Variant, sweep_variants

IMAGES_PER_ROW = 8


@torch.no_grad()
def preview_images(model: Autoencoder, images: torch.Tensor, directory: Path) -> list[Path]:
    """A reconstructions grid (inputs above outputs) and a prior-samples grid of one variant."""
    # Imported here: torchvision costs seconds to import and the train processes never need it.
    from vaeops.images import comparison_rows, save_grid

    inputs = images[: 4 * IMAGES_PER_ROW]
    reconstructions = torch.sigmoid(model(inputs).logits)
    samples = model.sample(8 * IMAGES_PER_ROW, torch.Generator().manual_seed(0))
    return [
        save_grid(
            comparison_rows(inputs, reconstructions, IMAGES_PER_ROW).cpu(),
            directory / "reconstructions.png",
            IMAGES_PER_ROW,
        ),
        save_grid(samples.cpu(), directory / "samples.png", IMAGES_PER_ROW),
    ]


def seeded_split_metrics(params: Params, model: Autoencoder, images: torch.Tensor) -> dict:
    """`split_metrics` with the evaluate params and seed: every model, candidate or champion,
    is scored with the same importance samples."""
    config = params.evaluate
    torch.manual_seed(config.seed)
    return split_metrics(
        model,
        images,
        config.iwae_samples,
        params.train.beta,
        config.batch_size,
        config.active_unit_threshold,
    )


def evaluate_variant(params: Params, variant: Variant, splits: dict[str, torch.Tensor]) -> dict:
    """Validation and test metrics and preview grids of one trained variant (its eval.json)."""
    started = time.perf_counter()
    trained = read_json(variant.train_dir(params) / TRAIN_FILE)
    out_dir = variant.eval_dir(params)
    config = params.evaluate
    metrics: dict = {"variant": variant.name, "diverged": trained["diverged"]}
    if trained["diverged"]:
        write_json(out_dir / EVAL_FILE, metrics)
        return metrics
    model = load_model(variant.train_dir(params), device=str(splits["val"].device))
    for split, images in splits.items():
        values = seeded_split_metrics(params, model, images)
        metrics |= {f"{split}/{key}": value for key, value in values.items()}
    val_images = splits["val"]
    metrics["val/dead_unit_fraction"] = dead_unit_fraction(
        model, val_images, config.dead_unit_threshold, config.batch_size
    )
    norms = gradient_norms(model, val_images, params.train.beta, config.batch_size)
    metrics |= {f"val/{key}": value for key, value in norms.items()}
    metrics["parameters"] = trained["parameters"]
    metrics["train_seconds"] = trained["train_seconds"]
    preview_images(model, val_images, out_dir / IMAGES_DIR)
    metrics["compute_seconds"] = time.perf_counter() - started
    write_json(out_dir / EVAL_FILE, metrics)
    return metrics


KEY_METRICS = (
    "val/iwae_nll",
    "val/neg_elbo",
    "val/reconstruction",
    "val/active_units",
    "test/iwae_nll",
    "test/neg_elbo",
    "test/reconstruction",
)


def evaluate_sweep(params: Params, variants: list[Variant] | None = None) -> list[dict]:
    """Evaluate variants in one process (torch is imported once), attach metrics and grids to
    their MLflow runs, and write the key metrics of all of them to `paths.evaluation_metrics`."""
    from vaeops import tracking

    device = resolve_device(params.train.device)
    splits = {
        name: load_split(params.paths.splits, name, device).images for name in ("val", "test")
    }
    tracking.configure_tracking()
    results = []
    for variant in variants or sweep_variants(params):
        metrics = evaluate_variant(params, variant, splits)
        trained = read_json(variant.train_dir(params) / TRAIN_FILE)
        tracking.record_evaluation(
            trained["run_id"], metrics, variant.eval_dir(params) / IMAGES_DIR, trained["epochs"]
        )
        results.append(metrics)
    summary = {
        row["variant"]: {key: row.get(key) for key in ("diverged", *KEY_METRICS)} for row in results
    }
    write_json(params.paths.evaluation_metrics, summary)
    return results
