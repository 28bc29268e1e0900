"""The train step: every variant of the sweep, each a child run of the study in MLflow.

Incremental: a variant's run stores its outputs folder, keyed by the variant's identity
(`vaeops.identity`), so a variant already trained with the same settings, data and code is
restored from its run instead of trained again. Adding an activation or a seed to the sweep
trains only the new variants; changing a shared setting (data, prepare, model, train) or the
train step's code changes every identity and trains them all.

One process for the whole sweep, not one per variant: a process pays seconds of start-up
(importing torch and mlflow, opening the store) against a few seconds of fitting per variant.
"""

from __future__ import annotations

from pathlib import Path

from vaeops import tracking
from vaeops.checkpoints import WEIGHTS_FILE, save_model
from vaeops.config import Params
from vaeops.data.splits import check_batch_fits, load_split
from vaeops.data.versioning import verify_data
from vaeops.identity import file_sha256, study_key, variant_identity
from vaeops.models import Autoencoder, build_model
from vaeops.models.autoencoder import parameter_count
from vaeops.outputs import HISTORY_FILE, TRAIN_FILE, read_json, write_history, write_json
from vaeops.training import FitResult, fit, load_checkpoint, resolve_device, seed_everything
from vaeops.variants import Variant

ENTRY_POINT = "vaeops train"


def checkpoint_path(params: Params, identity: str) -> Path:
    """Resume state keyed by the variant's identity, so a changed config starts afresh."""
    return params.paths.checkpoints / f"{identity[:16]}.pt"


def train_summary(variant: Variant, identity: str, result: FitResult, model: Autoencoder) -> dict:
    """The variant's train.json: what was trained and how it ended (no timings: DVC tracks it,
    and the same computation must give the same bytes)."""
    return {
        "variant": variant.name,
        "kind": variant.kind,
        "activation": variant.activation,
        "seed": variant.seed,
        "identity": identity,
        "diverged": result.diverged,
        "failure_reason": result.reason,
        "epochs": len(result.history),
        "parameters": parameter_count(model),
        **{key: value for key, value in result.final.items() if key != "epoch"},
    }


def fit_variant(params: Params, variant: Variant, identity: str, study_run_id: str) -> dict:
    """Train one variant in its own MLflow run, write its outputs folder and store it there.

    A diverged variant still writes and stores its outputs (marked diverged) and ends its run
    FAILED, so the rest of the sweep goes on; any other error also marks the run FAILED and is
    re-raised. An interrupted fit resumes from its last finished epoch, in the same run.
    """
    out_dir = variant.train_dir(params)
    device = resolve_device(params.train.device)
    train_split = load_split(params.paths.splits, "train", device)
    check_batch_fits("train.batch_size", params.train.batch_size, "train", len(train_split.labels))
    val_split = load_split(params.paths.splits, "val", device)
    seed_everything(variant.seed)
    spec = variant.model_spec(params.model, tuple(train_split.images.shape[1:]))
    model = build_model(spec).to(device)
    resume_from = checkpoint_path(params, identity)
    resumed = load_checkpoint(resume_from)
    run = tracking.start_variant_run(
        params, variant, identity, study_run_id, resumed and resumed.get("run_id")
    )
    try:
        if resumed is None:
            tracking.log_datasets(
                params,
                {
                    "train": train_split.images.flatten(1).cpu().numpy(),
                    "validation": val_split.images.flatten(1).cpu().numpy(),
                },
            )
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
        save_model(model.cpu(), out_dir)
        write_history(out_dir / HISTORY_FILE, result.history)
        summary = train_summary(variant, identity, result, model)
        write_json(out_dir / TRAIN_FILE, summary)
        tracking.log_final_metrics({"train_seconds": result.seconds})
        tracking.store_variant(out_dir, file_sha256(out_dir / WEIGHTS_FILE))
        if result.diverged:
            tracking.mark_failed(f"diverged at {result.reason}")
        else:
            tracking.end_run()
    except BaseException as error:
        tracking.mark_failed(f"{type(error).__name__}: {error}")
        raise
    resume_from.unlink(missing_ok=True)
    return summary


def train_variant(
    params: Params, variant: Variant, study_run_id: str, stored: dict | None = None
) -> dict:
    """The variant's outputs folder: restored from the store if this identity was trained
    before, else trained now. Returns its train.json and whether it was restored.

    `stored`: the store's index (tracking.stored_variants), when the caller has it already.
    """
    identity = variant_identity(params, variant)
    if stored is None:
        stored = tracking.stored_variants(params)
    if identity not in stored:
        return fit_variant(params, variant, identity, study_run_id) | {"restored": False}
    tracking.restore_variant(stored[identity].info.run_id, variant.train_dir(params))
    return read_json(variant.train_dir(params) / TRAIN_FILE) | {"restored": True}


def open_study(params: Params) -> str:
    """Check the data against its .dvc file, then find or start the study run; its id."""
    verify_data(params.paths.data, params.paths.data_dvc, params.root)
    tracking.configure_tracking(params.root)
    return tracking.study_run(params, study_key(params), ENTRY_POINT)


def train_sweep(params: Params, variants: list[Variant]) -> list[dict]:
    """Train (or restore) `variants` one after another under the study run; their summaries."""
    study_run_id = open_study(params)
    stored = tracking.stored_variants(params)
    summaries = [train_variant(params, variant, study_run_id, stored) for variant in variants]
    tracking.close_study_run(study_run_id)
    return summaries
