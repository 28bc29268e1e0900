"""The only module that knows the MLflow run layout and tags.

Layout: one experiment per study (`tracking.experiment`); in it one *study* run (role `sweep`) per
set of shared settings (data, split, model, training, code) and one *child* run per variant. A
variant's run is also where its trained weights and evaluations are stored: the train and
evaluate steps look a variant up by its identity (`vaeops.identity`) and reuse what is there, so
adding an activation to the sweep trains only the new variants, and they join the same study run.

The default store is `sqlite:///<root>/mlruns/mlflow.db` with artifacts under `<root>/mlruns/`,
where root is the project root (or the parent repository's root inside a queued DVC
experiment); MLFLOW_TRACKING_URI overrides it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import yaml
from mlflow.entities import Metric, Param, Run
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import (
    MLFLOW_GIT_COMMIT,
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
)

from vaeops.config import Params
from vaeops.errors import VaeopsError
from vaeops.project import store_root
from vaeops.variants import Variant

TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
# How many times a tracking server is asked for /health before a command gives up; the waits
# between tries double from 1 s (4 tries: 1 + 2 + 4 = 7 s). MLflow's own HTTP retries would
# instead hold every command for minutes on a server that is down.
PROBE_TRIES_ENV = "VAEOPS_TRACKING_PROBE_TRIES"
DEFAULT_PROBE_TRIES = 4
PROBE_TIMEOUT_SECONDS = 2.0
# Opens an experiment on its runs table instead of the GenAI overview (MLflow 3 UI).
UI_VIEW_QUERY = "?workflowType=machine_learning"
NOTE = "mlflow.note.content"  # the run's description in the MLflow UI


class Tag:
    """Every tag key the project writes, on runs and on registered model versions."""

    ROLE = "vaeops.role"  # "sweep" (the study run) or "variant"
    STUDY_KEY = "vaeops.study_key"
    IDENTITY = "vaeops.identity"  # the variant's identity (see vaeops.identity)
    STORED = "vaeops.stored"  # "true" once the variant's outputs are stored in its run
    VARIANT = "vaeops.variant"
    ACTIVATION = "vaeops.activation"
    SEED = "vaeops.seed"
    KIND = "vaeops.kind"
    SWEEP = "vaeops.sweep"  # the study run's id
    DATA_VERSION = "vaeops.data_version"  # the md5 in data.dvc
    GIT_COMMIT = "vaeops.git_commit"
    WEIGHTS_DIGEST = "vaeops.weights_sha256"
    FAILURE_REASON = "vaeops.failure_reason"
    PROMOTED_OVER = "vaeops.promoted_over"  # + ".<version>": promoted over that champion
    OWNER = "vaeops.owner"  # host:pid:start-time of the process that holds the run open
    DVC_EXPERIMENT = "vaeops.dvc_experiment"
    DVC_BASELINE = "vaeops.dvc_baseline_rev"
    MODEL_URI = "vaeops.model_uri"
    MODEL_NAME = "vaeops.model_name"
    MODEL_VERSION = "vaeops.model_version"


STORED_ARTIFACTS = "variant"  # the train step's outputs folder, inside the variant's run
EVALUATIONS_ARTIFACTS = "evaluation"  # one subfolder per evaluation key


class TrackingError(VaeopsError):
    """The tracking store cannot be used as configured."""


# Where the store is -------------------------------------------------------------------------


def default_store(root: Path) -> Path:
    return store_root(root) / "mlruns"


def default_tracking_uri(root: Path) -> str:
    return f"sqlite:///{default_store(root)}/mlflow.db"


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(root)


def uses_default_store(root: Path) -> bool:
    # Compared by value: mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI.
    return tracking_uri(root) == default_tracking_uri(root)


def configure_tracking(root: Path) -> str:
    """Point MLflow at the project's store (creating `mlruns/` for the default sqlite store)."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    uri = tracking_uri(root)
    if uses_default_store(root):
        default_store(root).mkdir(parents=True, exist_ok=True)
    if uri.startswith(("http://", "https://")):
        probe_server(uri)
        check_credentials(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def probe_tries() -> int:
    value = os.environ.get(PROBE_TRIES_ENV, str(DEFAULT_PROBE_TRIES))
    if not value.isdigit() or int(value) < 1:
        raise TrackingError(f"{PROBE_TRIES_ENV}={value!r} is not a count; set it to 1 or more")
    return int(value)


def answers(health_url: str) -> bool:
    try:
        with urllib.request.urlopen(health_url, timeout=PROBE_TIMEOUT_SECONDS) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):  # refused, reset, timed out, an HTTP error status
        return False


def probe_server(uri: str) -> None:
    """Ask the tracking server's /health a few times, waiting 1, 2, 4... s between tries; a
    TrackingError when it never answers."""
    tries = probe_tries()
    started = time.monotonic()
    for attempt in range(tries):
        if answers(f"{uri.rstrip('/')}/health"):
            return
        if attempt < tries - 1:
            time.sleep(2**attempt)
    raise TrackingError(
        f"tracking server {uri} did not answer ({tries} tries over "
        f"{time.monotonic() - started:.0f} s): start it, or unset MLFLOW_TRACKING_URI to use "
        "the local store"
    )


def check_credentials(uri: str) -> None:
    """One authenticated read, so that missing or wrong credentials of a server running MLflow's
    basic-auth app give one line here rather than a traceback from the first real call."""
    request = urllib.request.Request(
        f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1"
    )
    username = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if username is not None:
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_SECONDS).close()
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            raise TrackingError(
                f"tracking server {uri} refused the request (HTTP {error.code}, not "
                "authenticated or not permitted): set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD to an account of that server"
            ) from None
        raise


def experiment_id(name: str, root: Path) -> str:
    """The experiment's id, created on first use; in the default store its artifacts go under
    `<root>/mlruns/` whatever the current folder is."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = default_store(root).as_uri() if uses_default_store(root) else None
    return mlflow.create_experiment(name, artifact_location=location)


def experiment_ui_link(experiment: str, base_url: str = "http://127.0.0.1:5000") -> str:
    """A link that opens the experiment on its training runs (not the GenAI overview)."""
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return f"{base_url}/#/experiments{UI_VIEW_QUERY}"
    return f"{base_url}/#/experiments/{found.experiment_id}{UI_VIEW_QUERY}"


# Lineage ------------------------------------------------------------------------------------


def data_version(params: Params) -> str:
    """The md5 that the data's .dvc file records, or 'untracked' where there is none."""
    dvc_file = params.paths.data_dvc
    if not dvc_file.is_file():
        return "untracked"
    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or [{}]
    return str(outs[0].get("md5", "untracked"))


def git_commit(folder: Path) -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip()


def lineage_tags(params: Params, entry_point: str) -> dict[str, str]:
    """Data version, commit, the entry point as MLflow's own source tags (the UI's Source
    column), and the DVC experiment that ran it, if any."""
    root = params.root
    commit = git_commit(root)
    tags = {
        Tag.DATA_VERSION: data_version(params),
        Tag.GIT_COMMIT: commit,
        MLFLOW_GIT_COMMIT: commit,
        MLFLOW_SOURCE_NAME: entry_point,
        MLFLOW_SOURCE_TYPE: "LOCAL",
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags[Tag.DVC_EXPERIMENT] = os.environ["DVC_EXP_NAME"]
        tags[Tag.DVC_BASELINE] = os.environ.get("DVC_EXP_BASELINE_REV", "")
    return tags


def flatten(mapping: dict, prefix: str = "") -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            items += flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


# Runs left RUNNING by a process that died -----------------------------------------------------
#
# A run is RUNNING while a process works in it; a process killed (SIGKILL, a lost machine) never
# ends it. Each run is tagged with its owner, `host:pid:start`, and every start of a step closes
# the RUNNING runs of its experiment whose owner ran on this host and is gone (KILLED, with the
# reason). The Prefect fan-out and `dvc queue` run several vaeops processes at once, so a run whose
# owner is alive is never touched; nor is a run owned on another host (whether that process lives
# cannot be told from here) or one without an owner tag (written before the tag existed).


def process_start(pid: int) -> str:
    """When process `pid` started (clock ticks since boot), so a reused pid is not taken for the
    owner; "" where /proc is not there (not Linux) or the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return ""
    state, start = fields[0], fields[19]  # stat fields 3 and 22 (after "pid (comm)")
    return "" if state == "Z" else start  # a zombie has exited, only its parent has not reaped it


def this_process() -> str:
    """The owner tag of runs this process opens: host, pid and the pid's start time."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{process_start(pid)}"


def is_gone(owner: str) -> bool:
    """True only when `owner` ran on this host and that process no longer exists."""
    host, _, rest = owner.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return process_start(int(pid)) != start


def close_abandoned_runs(client: MlflowClient, experiment: str) -> list[str]:
    """End as KILLED, with the reason, the experiment's RUNNING runs whose owner on this host is
    gone; their ids. An interrupted variant's checkpoint still resumes its run (`reopen_run`)."""
    closed = []
    for run in client.search_runs(
        [experiment], filter_string="attributes.status = 'RUNNING'", max_results=1000
    ):
        owner = run.data.tags.get(Tag.OWNER, "")
        if not owner or not is_gone(owner):
            continue
        reason = f"process {owner} ended without closing the run (killed or crashed)"
        client.set_tag(run.info.run_id, Tag.FAILURE_REASON, reason)
        client.set_tag(run.info.run_id, NOTE, f"Killed: {reason}")
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    if closed:
        print(
            f"closed {len(closed)} run(s) left RUNNING by a dead process: {', '.join(closed)}",
            file=sys.stderr,
        )
    return closed


def reopen_run(client: MlflowClient, run: Run) -> None:
    """Mark an existing run RUNNING and owned by this process; the reason of an earlier kill
    goes (a diverged run's reason stays: it ended FAILED, not KILLED)."""
    client.update_run(run.info.run_id, status="RUNNING")
    client.set_tag(run.info.run_id, Tag.OWNER, this_process())
    if run.info.status == "KILLED":
        for key in (Tag.FAILURE_REASON, NOTE):
            if key in run.data.tags:
                client.delete_tag(run.info.run_id, key)


# The study run ------------------------------------------------------------------------------


def study_run(params: Params, key: str, entry_point: str) -> str:
    """Find or start the study run of these shared settings; its run id. It stays RUNNING
    while a step works on it (`close_study_run` ends it), so it spans the whole pipeline.
    Runs of the experiment left RUNNING by a dead process are closed first."""
    client = MlflowClient()
    experiment = experiment_id(params.tracking.experiment, params.root)
    close_abandoned_runs(client, experiment)
    found = client.search_runs(
        [experiment], filter_string=f"tags.`{Tag.STUDY_KEY}` = '{key}'", max_results=1
    )
    if found:
        reopen_run(client, found[0])
        return found[0].info.run_id
    run = client.create_run(
        experiment,
        run_name=f"sweep-{key[:8]}",
        tags={
            Tag.STUDY_KEY: key,
            Tag.ROLE: "sweep",
            Tag.OWNER: this_process(),
            **lineage_tags(params, entry_point),
        },
    )
    shared = params.model_dump(mode="json", include={"prepare", "model", "train"})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in flatten(shared)])
    return run.info.run_id


def close_study_run(run_id: str) -> None:
    MlflowClient().set_terminated(run_id, "FINISHED")


# Variant runs: tracking and the store of trained variants ------------------------------------


def stored_variants(params: Params) -> dict[str, Run]:
    """Every variant run of the study's experiment whose outputs are stored, by identity: one
    paged search, not one per variant (a tag search costs tens of milliseconds)."""
    client = MlflowClient()
    experiment = experiment_id(params.tracking.experiment, params.root)
    stored: dict[str, Run] = {}
    token = None
    while True:
        page = client.search_runs(
            [experiment],
            filter_string=f"tags.`{Tag.STORED}` = 'true'",
            max_results=1000,
            page_token=token,
        )
        for run in page:
            stored.setdefault(run.data.tags[Tag.IDENTITY], run)
        token = page.token
        if not token:
            return stored


def stored_run(stored: dict[str, Run], identity: str) -> Run:
    """The run that stores the variant of `identity`; a clear error where there is none."""
    if identity not in stored:
        raise TrackingError(
            f"no stored run of variant {identity[:12]} in {mlflow.get_tracking_uri()}; "
            "run the train step (dvc repro) against this tracking store first"
        )
    return stored[identity]


def start_variant_run(
    params: Params,
    variant: Variant,
    identity: str,
    study_run_id: str,
    resume_run_id: str | None = None,
) -> mlflow.ActiveRun:
    """Start (or resume, after an interrupt) the child run of one variant."""
    if resume_run_id is not None:
        reopen_run(MlflowClient(), MlflowClient().get_run(resume_run_id))
        return mlflow.start_run(run_id=resume_run_id)
    run = mlflow.start_run(
        experiment_id=experiment_id(params.tracking.experiment, params.root),
        run_name=variant.name,
        tags={
            MLFLOW_PARENT_RUN_ID: study_run_id,
            Tag.ROLE: "variant",
            Tag.IDENTITY: identity,
            Tag.VARIANT: variant.name,
            Tag.ACTIVATION: variant.activation,
            Tag.SEED: str(variant.seed),
            Tag.KIND: variant.kind,
            Tag.SWEEP: study_run_id,
            Tag.OWNER: this_process(),
            **lineage_tags(params, "vaeops train"),
        },
    )
    model = params.model.model_dump(mode="json")
    train = params.train.model_dump(mode="json")
    mlflow.log_params(
        {f"model.{k}": v for k, v in model.items()}
        | {f"train.{k}": v for k, v in train.items()}
        | {"kind": variant.kind, "activation": variant.activation, "seed": variant.seed}
    )
    return run


def dataset(params: Params, images: np.ndarray, split: str):
    """An MLflow dataset named after the source and split (`mnist-5k/train`), its digest the
    md5 that data.dvc records. The split is in the name because MLflow records a dataset (name,
    digest) once per run, whatever the context of a second input."""
    with warnings.catch_warnings():
        # MLflow 3.17 registers its local-file source class twice and warns that a path is
        # ambiguous between the two identical interpretations.
        warnings.simplefilter("ignore", UserWarning)
        return mlflow.data.from_numpy(
            images,
            source=str(params.paths.data),
            name=f"{params.data.dataset}/{split}",
            digest=data_version(params)[:36],
        )


def log_datasets(params: Params, splits: dict[str, np.ndarray]) -> None:
    """Record on the active run which data it saw, one input per split context
    (train / validation / test): the MLflow UI's Datasets column."""
    for context, images in splits.items():
        mlflow.log_input(dataset(params, images, context), context=context)


def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
    """One batched, synchronous call per epoch (all of the epoch's metrics together)."""
    values = {key: value for key, value in metrics.items() if key != "epoch"}
    mlflow.log_metrics(values, step=epoch)


def log_final_metrics(metrics: dict[str, float | None]) -> None:
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})


def store_variant(folder: Path, weights_digest: str | None) -> None:
    """Keep the variant's outputs folder in its (active) run and mark it reusable."""
    mlflow.log_artifacts(str(folder), artifact_path=STORED_ARTIFACTS)
    if weights_digest is not None:
        mlflow.set_tag(Tag.WEIGHTS_DIGEST, weights_digest)
    mlflow.set_tag(Tag.STORED, "true")


def download_folder(run_id: str, artifact_path: str, folder: Path) -> None:
    """Make `folder` a copy of one of the run's artifact folders."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".download-") as staging:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=staging
        )
        if folder.exists():
            shutil.rmtree(folder)
        Path(local).replace(folder)


def restore_variant(run_id: str, folder: Path) -> None:
    """Write a stored variant's outputs folder from its run."""
    download_folder(run_id, STORED_ARTIFACTS, folder)


def mark_failed(reason: str) -> None:
    """End the active run as FAILED with a human-readable reason (tag and note)."""
    mlflow.set_tags({Tag.FAILURE_REASON: reason, NOTE: f"Failed: {reason}"})
    mlflow.end_run(status="FAILED")


def end_run() -> None:
    mlflow.end_run(status="FINISHED")


@contextlib.contextmanager
def reopened(run_id: str) -> Iterator[mlflow.ActiveRun]:
    """The finished run `run_id`, active again (and owned by this process) to add records; it
    ends with the status it had."""
    client = MlflowClient()
    status = client.get_run(run_id).info.status
    client.set_tag(run_id, Tag.OWNER, this_process())
    with mlflow.start_run(run_id=run_id) as active:
        yield active
    client.set_terminated(run_id, status)


def log_artifacts_to_run(run_id: str, paths: list[Path], folder: str) -> None:
    client = MlflowClient()
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path=folder)


# Evaluations, stored in the variant's run ----------------------------------------------------


def evaluation_artifacts(key: str) -> str:
    return f"{EVALUATIONS_ARTIFACTS}/{key}"


def has_evaluation(run_id: str, key: str) -> bool:
    return bool(MlflowClient().list_artifacts(run_id, evaluation_artifacts(key)))


def restore_evaluation(run_id: str, key: str, folder: Path) -> None:
    download_folder(run_id, evaluation_artifacts(key), folder)


def record_evaluation(
    params: Params,
    run_id: str,
    key: str,
    metrics: dict,
    folder: Path,
    step: int,
    splits: dict[str, np.ndarray],
) -> None:
    """Attach an evaluation to its variant's run: metrics, the data it used, and its outputs
    folder (stored under its key, so the same evaluation is never computed twice).

    Metrics are logged at `step` = the last epoch, so where a key also has a per-epoch curve
    (val/neg_elbo) the evaluation is that curve's final point rather than a stray point at 0.
    """
    client = MlflowClient()
    now = int(time.time() * 1000)
    numeric = {
        name: float(value)
        for name, value in metrics.items()
        if "/" in name and isinstance(value, int | float) and not isinstance(value, bool)
    }
    client.log_batch(
        run_id, metrics=[Metric(name, value, now, step) for name, value in numeric.items()]
    )
    with reopened(run_id):
        log_datasets(params, splits)
        mlflow.log_artifacts(str(folder), artifact_path=evaluation_artifacts(key))
