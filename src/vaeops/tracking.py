"""The only module that knows the MLflow run layout and tags.

Layout: one experiment per study (`tracking.experiment`); in it one *parent* run per sweep and one
*child* run per variant. A sweep is identified by a key derived from the data version and the
params that define the variants, so every stage of one `dvc repro` (separate processes) finds the
same parent.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import mlflow
import yaml
from mlflow.tracking import MlflowClient

from vaeops.config import Params
from vaeops.variants import Variant

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
TAG_PREFIX = "vaeops."
SWEEP_KEY_TAG = "vaeops.sweep_key"
PARENT_RUN_TAG = "mlflow.parentRunId"
RUN_FAILURE_TAG = "vaeops.failure_reason"
TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def configure_tracking() -> str:
    """Point MLflow at the project's store (creating `mlruns/` for the default sqlite store)."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    uri = tracking_uri()
    if uri == DEFAULT_TRACKING_URI:
        Path("mlruns").mkdir(exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def data_version(dvc_file: Path = Path("data.dvc")) -> str:
    """The md5 that `data.dvc` records for `data/`, or 'untracked' outside a DVC project."""
    if not dvc_file.is_file():
        return "untracked"
    outs = yaml.safe_load(dvc_file.read_text()).get("outs", [])
    return str(outs[0].get("md5", "untracked")) if outs else "untracked"


def git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip()


def sweep_key(params: Params, data: str) -> str:
    """Same data and same variant-defining params -> same sweep (and the same parent run)."""
    defining = {
        "data": data,
        **params.model_dump(mode="json", include={"prepare", "model", "train", "sweep"}),
    }
    return hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:16]


def experiment_id(name: str) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(name)


def sweep_parent_run(params: Params) -> str:
    """Find or create the parent run of the current sweep; returns its run id."""
    data = data_version()
    key = sweep_key(params, data)
    client = MlflowClient()
    experiment = experiment_id(params.tracking.experiment)
    found = client.search_runs(
        [experiment], filter_string=f"tags.`{SWEEP_KEY_TAG}` = '{key}'", max_results=1
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment,
        run_name=f"sweep-{key[:8]}",
        tags={
            SWEEP_KEY_TAG: key,
            "vaeops.role": "sweep",
            "vaeops.data_version": data,
            "vaeops.git_commit": git_commit(),
        },
    )
    client.log_batch(
        run.info.run_id,
        params=[
            mlflow.entities.Param(key, str(value))
            for key, value in flatten(params.model_dump(mode="json", include={"sweep", "train"}))
        ],
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def flatten(mapping: dict, prefix: str = "") -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            items += flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def variant_tags(variant: Variant, parent_run_id: str) -> dict[str, str]:
    return {
        PARENT_RUN_TAG: parent_run_id,
        "vaeops.role": "variant",
        "vaeops.variant": variant.name,
        "vaeops.activation": variant.activation,
        "vaeops.seed": str(variant.seed),
        "vaeops.kind": variant.kind,
        "vaeops.sweep": parent_run_id,
        "vaeops.data_version": data_version(),
        "vaeops.git_commit": git_commit(),
    }


def start_variant_run(
    params: Params, variant: Variant, parent_run_id: str, resume_run_id: str | None = None
) -> mlflow.ActiveRun:
    """Start (or resume, after an interrupt) the child run of one variant."""
    if resume_run_id is not None:
        return mlflow.start_run(run_id=resume_run_id)
    run = mlflow.start_run(
        experiment_id=experiment_id(params.tracking.experiment),
        run_name=variant.name,
        tags=variant_tags(variant, parent_run_id),
    )
    model = params.model.model_dump(mode="json")
    train = params.train.model_dump(mode="json")
    mlflow.log_params(
        {f"model.{k}": v for k, v in model.items()}
        | {f"train.{k}": v for k, v in train.items()}
        | {"kind": variant.kind, "activation": variant.activation, "seed": variant.seed}
    )
    return run


def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
    """One batched call per epoch (all of the epoch's metrics together).

    Synchronous on purpose: one call per epoch costs milliseconds on the sqlite store and tens of
    milliseconds on a server, while MLflow's asynchronous queue polls with a 1 s timeout and so
    adds up to a second to every run's end, more than a whole sweep's per-epoch calls cost.
    """
    values = {key: value for key, value in metrics.items() if key != "epoch"}
    mlflow.log_metrics(values, step=epoch)


def log_final_metrics(metrics: dict[str, float | None]) -> None:
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})


def mark_failed(reason: str) -> None:
    """End the active run as FAILED with a human-readable reason (tag and note)."""
    mlflow.set_tags({RUN_FAILURE_TAG: reason, "mlflow.note.content": f"Failed: {reason}"})
    mlflow.end_run(status="FAILED")


def log_artifacts(paths: list[Path], folder: str) -> None:
    for path in paths:
        mlflow.log_artifact(str(path), artifact_path=folder)


def end_run() -> None:
    mlflow.end_run(status="FINISHED")


def log_artifacts_to_run(run_id: str, paths: list[Path], folder: str) -> None:
    client = MlflowClient()
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path=folder)


def record_evaluation(run_id: str, metrics: dict, images_dir: Path, step: int) -> None:
    """Attach a variant's evaluation metrics and preview grids to its (finished) child run.

    Logged at `step` = the last epoch, so where a key also has a per-epoch curve (val/neg_elbo)
    the evaluation is that curve's final point rather than a stray point at step 0.
    """
    client = MlflowClient()
    now = int(time.time() * 1000)
    numeric = {
        key: float(value)
        for key, value in metrics.items()
        if "/" in key and isinstance(value, int | float) and not isinstance(value, bool)
    }
    client.log_batch(
        run_id,
        metrics=[mlflow.entities.Metric(key, value, now, step) for key, value in numeric.items()],
    )
    if images_dir.is_dir():
        client.log_artifacts(run_id, str(images_dir), artifact_path="images")
