"""The train step: the sweep's variants in one process, each tracked as a child run of the sweep.

One process for the whole sweep, not one per variant: a training process pays about 6 s of
start-up (importing torch and mlflow, opening the MLflow store) against a few seconds of fitting
per variant, so per-variant processes spent more time starting than training
(benchmarks/README.md).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from vaeops.checkpoints import save_model
from vaeops.config import Params
from vaeops.data.splits import load_split
from vaeops.models import Autoencoder, build_model
from vaeops.models.autoencoder import parameter_count
from vaeops.outputs import HISTORY_FILE, TRAIN_FILE, write_history, write_json
from vaeops.training import FitResult, fit, load_checkpoint, resolve_device, seed_everything
from vaeops.variants import Variant


def checkpoint_path(params: Params, variant: Variant) -> Path:
    """Resume state keyed by everything that defines the run, so a changed config starts fresh."""
    defining = params.model_dump_json(include={"model", "train", "prepare"}) + variant.name
    digest = hashlib.sha256(defining.encode()).hexdigest()[:12]
    return params.paths.checkpoints / f"{variant.name}-{digest}.pt"


def train_summary(variant: Variant, result: FitResult, model: Autoencoder, run_id: str) -> dict:
    return {
        "variant": variant.name,
        "kind": variant.kind,
        "activation": variant.activation,
        "seed": variant.seed,
        "run_id": run_id,
        "diverged": result.diverged,
        "failure_reason": result.reason,
        "epochs": len(result.history),
        "parameters": parameter_count(model),
        "train_seconds": result.seconds,
        **{key: value for key, value in result.final.items() if key != "epoch"},
    }


def train_variant(
    params: Params,
    variant: Variant,
    parent_run_id: str | None = None,
    keep_checkpoint: bool = False,
) -> dict:
    """Train one variant, track it as a child run of the sweep, and write its outputs folder.

    A diverged variant still writes its outputs (marked diverged) and ends its run FAILED, so the
    rest of the sweep goes on; any other error also marks the run FAILED and is re-raised.
    The resume checkpoint is deleted once the variant is done, unless `keep_checkpoint`: then a
    later call finds every epoch done and only rewrites the outputs.
    """
    from vaeops import tracking

    started = time.perf_counter()
    out_dir = variant.train_dir(params)
    device = resolve_device(params.train.device)
    train_split = load_split(params.paths.splits, "train", device)
    val_split = load_split(params.paths.splits, "val", device)
    seed_everything(variant.seed)
    spec = variant.model_spec(params.model, tuple(train_split.images.shape[1:]))
    model = build_model(spec).to(device)

    resume_from = checkpoint_path(params, variant)
    resumed = load_checkpoint(resume_from)
    tracking.configure_tracking()
    parent = parent_run_id or tracking.sweep_parent_run(params)
    run = tracking.start_variant_run(params, variant, parent, resumed and resumed["run_id"])
    try:
        result = fit(
            model,
            train_split.images,
            params.train,
            variant.seed,
            val_images=val_split.images,
            checkpoint_path=resume_from,
            on_epoch=tracking.log_epoch,
            checkpoint_extra={"run_id": run.info.run_id},
        )
        if not model.is_variational:
            model.fit_code_distribution(train_split.images)
        model = model.cpu()
        save_model(model, out_dir)
        write_history(out_dir / HISTORY_FILE, result.history)
        summary = train_summary(variant, result, model, run.info.run_id)
        summary["compute_seconds"] = time.perf_counter() - started
        write_json(out_dir / TRAIN_FILE, summary)
        if result.diverged:
            tracking.mark_failed(f"diverged at {result.reason}")
        else:
            # the final train/ and val/ values are already the last points of the epoch curves
            tracking.log_final_metrics({"train_seconds": summary["train_seconds"]})
            tracking.end_run()
    except BaseException as error:
        tracking.mark_failed(f"{type(error).__name__}: {error}")
        raise
    if not keep_checkpoint:
        resume_from.unlink(missing_ok=True)
    return summary


def train_sweep(params: Params, variants: list[Variant]) -> list[dict]:
    """Train `variants` one after another under the sweep's parent run; their summaries.

    Each finished variant keeps its checkpoint until all are done: DVC clears the stage's outputs
    before rerunning it, so after an interrupt or an error a rerun restores the finished variants
    from their checkpoints in seconds and trains only the rest.
    """
    from vaeops import tracking

    tracking.configure_tracking()
    parent = tracking.sweep_parent_run(params)
    summaries = [
        train_variant(params, variant, parent, keep_checkpoint=True) for variant in variants
    ]
    for variant in variants:
        checkpoint_path(params, variant).unlink(missing_ok=True)
    return summaries
