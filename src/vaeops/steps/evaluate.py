"""The evaluate step: metrics and preview grids of every trained variant, in one process."""

from __future__ import annotations

from pathlib import Path

import torch

from vaeops import tracking
from vaeops.checkpoints import load_model
from vaeops.config import Params
from vaeops.data.splits import load_split
from vaeops.evaluation import dead_unit_fraction, gradient_norms, split_metrics
from vaeops.identity import evaluation_key
from vaeops.models import Autoencoder
from vaeops.outputs import EVAL_FILE, IMAGES_DIR, TRAIN_FILE, read_json, write_json
from vaeops.training import resolve_device
from vaeops.variants import Variant

IMAGES_PER_ROW = 8
# Split names here and the contexts MLflow records them under.
CONTEXTS = (("val", "validation"), ("test", "test"))


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


def compute_evaluation(
    params: Params, trained: dict, model: Autoencoder, splits: dict[str, torch.Tensor]
) -> dict:
    """Validation and test metrics of one trained model (the variant's eval.json)."""
    config = params.evaluate
    metrics: dict = {"variant": trained["variant"], "diverged": False}
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
    return metrics


def evaluate_variant(
    params: Params, variant: Variant, splits: dict[str, torch.Tensor], stored: dict
) -> dict:
    """The variant's evaluation folder (eval.json and preview grids): restored from its run if
    the same evaluation was computed before, else computed now and stored there. `stored`:
    the store's index (tracking.stored_variants)."""
    trained = read_json(variant.train_dir(params) / TRAIN_FILE)
    out_dir = variant.eval_dir(params)
    if trained["diverged"]:
        metrics = {"variant": variant.name, "diverged": True}
        write_json(out_dir / EVAL_FILE, metrics)
        return metrics
    run_id = tracking.stored_run(stored, trained["identity"]).info.run_id
    key = evaluation_key(params, trained["identity"])
    if tracking.has_evaluation(run_id, key):
        tracking.restore_evaluation(run_id, key, out_dir)
        return read_json(out_dir / EVAL_FILE)
    model = load_model(variant.train_dir(params), device=str(splits["val"].device))
    metrics = compute_evaluation(params, trained, model, splits)
    write_json(out_dir / EVAL_FILE, metrics)
    preview_images(model, splits["val"], out_dir / IMAGES_DIR)
    as_arrays = {context: splits[split].flatten(1).cpu().numpy() for split, context in CONTEXTS}
    tracking.record_evaluation(params, run_id, key, metrics, out_dir, trained["epochs"], as_arrays)
    return metrics


def evaluate_sweep(params: Params, variants: list[Variant]) -> list[dict]:
    """Evaluate variants in one process (torch is imported once); their metrics."""
    device = resolve_device(params.train.device)
    splits = {
        name: load_split(params.paths.splits, name, device).images for name in ("val", "test")
    }
    tracking.configure_tracking(params.root)
    stored = tracking.stored_variants(params)
    return [evaluate_variant(params, variant, splits, stored) for variant in variants]
