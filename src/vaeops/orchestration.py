"""Prefect orchestration: the steps of `dvc.yaml` as tasks, the variants fanned out in parallel.

Where the code lives. The flows and tasks are defined here, inside the installed package, so the
CLI (`vaeops flow`, `vaeops schedule`), Prefect's runner and every Dask worker import them by
module name (`vaeops.orchestration`), from any working directory and in the container image, with
no `sys.path` juggling. `pipelines/flows.py` and `pipelines/deploy.py` are the thin entry files
of the project layout (what a `prefect deploy` entrypoint names): they only re-export the flows.
The one CLI runs them (`vaeops flow`, `vaeops schedule`). Each task calls exactly one library
step; nothing here computes a metric or writes an output.

Fan-out. Variants train in separate *processes*: Prefect's `ProcessPoolTaskRunner` on this
machine, or Dask workers (one thread each) on a cluster. Not threads: MLflow 3.17 keeps its
active-run stack per thread (`ThreadLocalVariable`), so concurrent child runs are tracked
correctly, but torch's default random generator is global to the process. Weight initialisation
and the reparameterisation noise (`randn_like`) draw from it, so variants training in threads of
one process interleave their draws: measured with 2 threads, the VAEs' validation ELBO came out
different from a sequential run (vae-relu-s0 182.21 against 188.11), while the process pool and
the Dask workers reproduce the sequential figures. A pool process is reused for the next
variant, so torch is imported once per worker, not once per variant as with one `vaeops train`
subprocess each. Each worker gets cores / workers torch threads: more oversubscribe the CPU.

Who decides what. DVC decides what is stale; these flows rerun the steps they call (Prefect's
task caching is off), and Prefect adds scheduling, retries and the fan-out.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner

from vaeops import registry, tracking
from vaeops.config import ConfigError, Params, load_params
from vaeops.steps.evaluate import evaluate_sweep
from vaeops.steps.generate import generate_batch
from vaeops.steps.prepare import prepare
from vaeops.steps.promote import promote
from vaeops.steps.summarize import summarize
from vaeops.steps.train import train_variant
from vaeops.variants import Variant, sweep_variants

DEFAULT_CRON = "0 3 * * 1"  # Mondays 03:00 UTC: weekly, outside working hours
DEPLOYMENT_NAME = "weekly-retrain"
LOCAL_CLUSTER = "local"  # `--dask-address local`: start a distributed.LocalCluster for the run
# The model-version tag that registry.version_tags writes: the data the version was trained on.
DATA_VERSION_TAG = "vaeops.data_version"


# Tasks: one library step each ---------------------------------------------------------------


@task(name="prepare", cache_policy=NO_CACHE)
def prepare_task(params: Params) -> dict:
    return prepare(params)


# One retry: train_variant resumes from its last finished epoch, so a worker lost mid-variant
# costs only the unfinished epochs.
@task(name="train", cache_policy=NO_CACHE, retries=1, task_run_name="train-{variant.name}")
def train_task(params: Params, variant: Variant, parent_run_id: str) -> dict:
    return train_variant(params, variant, parent_run_id=parent_run_id)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(params: Params) -> list[dict]:
    return evaluate_sweep(params)


@task(name="summarize", cache_policy=NO_CACHE)
def summarize_task(params: Params) -> dict:
    return summarize(params)


@task(name="promote", cache_policy=NO_CACHE)
def promote_task(params: Params) -> dict:
    return promote(params)


@task(name="generate", cache_policy=NO_CACHE)
def generate_task(params: Params) -> dict:
    model_uri = registry.alias_uri(params.promote.registered_model, registry.CHAMPION)
    return generate_batch(params, model_uri, params.paths.generated)


@task(name="check-data-version", cache_policy=NO_CACHE)
def retrain_decision_task(params: Params) -> tuple[bool, str]:
    return retrain_decision(params)


# Fan-out -----------------------------------------------------------------------------------


def limit_torch_threads(threads: int) -> None:
    """Pool-worker initializer: N workers x all-cores torch threads would oversubscribe the CPU."""
    import torch

    torch.set_num_threads(threads)


def fan_out_runner(
    variants: int, workers: int | None = None, dask_address: str | None = None
) -> TaskRunner:
    """Processes on this machine by default; Dask when a scheduler address (or 'local') is given.

    Dask workers must run one thread each (`dask worker --nthreads 1`) for the reason in the
    module docstring; the LocalCluster started here does.
    """
    # The CLI checks this too; a deployment's parameters reach the flows without it.
    if workers is not None and workers < 1:
        raise ConfigError(f"workers: {workers}; at least 1 (unset: one per core)")
    cores = os.cpu_count() or 1
    count = workers or max(1, min(variants, cores))
    if dask_address is None:
        return ProcessPoolTaskRunner(
            max_workers=count,
            initializer=limit_torch_threads,
            initargs=(max(1, cores // count),),
        )
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfigError(
            "--dask-address needs the dask extra: pip install 'vaeops[dask]'"
        ) from None
    if dask_address == LOCAL_CLUSTER:
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": count,
                "threads_per_worker": 1,
                "processes": True,
                "host": "127.0.0.1",
                "dashboard_address": None,
            },
        )
    return DaskTaskRunner(address=dask_address)


@contextlib.contextmanager
def api_shared_with_workers() -> Iterator[None]:
    """Make the fan-out's workers report to the API server this flow run reports to.

    Without PREFECT_API_URL, Prefect starts a temporary server for this process but hands the
    workers no URL, so each worker process starts a temporary server of its own: about 6 s of CPU
    each, taken from training (the tiny 3-variant study on 2 workers: 13 s more CPU time). Hand
    them this flow run's server. (A Dask cluster on other machines needs PREFECT_API_URL set: the
    temporary server listens on the loopback interface only.)
    """
    from prefect.context import get_run_context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():  # workers inherit it already
        yield
        return
    # A settings change, not os.environ: Prefect's runners hand the current settings to workers.
    with temporary_settings(updates={PREFECT_API_URL: str(get_run_context().client.api_url)}):
        yield


def train_all(
    params: Params,
    parent_run_id: str,
    workers: int | None = None,
    dask_address: str | None = None,
) -> list[dict]:
    """Train every variant of the sweep as mapped tasks; the train summaries in sweep order.

    The runner is chosen per call (not fixed on the flow) so a deployment's parameters can pick
    local processes or a Dask cluster at run time.
    """
    variants = sweep_variants(params)
    runner = fan_out_runner(len(variants), workers, dask_address)
    with api_shared_with_workers(), runner:
        futures = runner.map(
            train_task,
            {
                "params": unmapped(params),  # a pydantic model iterates its fields: not mapped
                "variant": variants,
                "parent_run_id": unmapped(parent_run_id),
            },
        )
        wait(futures)  # every variant finishes (or fails) before the first failure is raised
        return [future.result() for future in futures]


# Flows ---------------------------------------------------------------------------------------


@flow(name="vae-study")
def study(
    params_path: str = "params.yaml",
    workers: int | None = None,
    dask_address: str | None = None,
) -> dict:
    """prepare -> train every variant in parallel -> evaluate -> summarize -> promote -> generate.

    `workers`: parallel variants (default: one per core); `dask_address`: a Dask scheduler
    (tcp://host:8786) or 'local' for a LocalCluster; unset: processes on this machine.
    """
    params = load_params(params_path)
    tracking.configure_tracking()
    # Created once up front so parallel train tasks never race to create the sweep's parent.
    parent_run_id = tracking.sweep_parent_run(params)
    prepare_task(params)
    trained = train_all(params, parent_run_id, workers, dask_address)
    evaluate_task(params)
    summary = summarize_task(params)
    promotion = promote_task(params)
    generated = generate_task(params)
    return {
        "parent_run_id": parent_run_id,
        "variants": [row["variant"] for row in trained],
        "diverged": [row["variant"] for row in trained if row["diverged"]],
        "leaderboard": str(summary["leaderboard"]),
        "best_config": summary["best_config"],
        "promotion": {key: promotion[key] for key in ("decision", "reason", "candidate_variant")},
        "generated": generated,
    }


def aliased_version(client: MlflowClient, name: str, alias: str):
    """The model version an alias points at, or None (no such model or alias)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def retrain_decision(params: Params, dvc_file: Path = Path("data.dvc")) -> tuple[bool, str]:
    """Retrain when there is no @champion or the data changed since it was trained.

    A study on new data whose best does not beat the champion leaves @champion on the old data
    and marks its best @challenger (registry.promote); the challenger's data version counts as
    studied too, or every scheduled run would retrain the same data again.
    """
    tracking.configure_tracking()
    current = tracking.data_version(dvc_file)
    client = MlflowClient()
    name = params.promote.registered_model
    champion = aliased_version(client, name, registry.CHAMPION)
    if champion is None:
        return True, f"{name} has no @{registry.CHAMPION} yet"
    for alias in (registry.CHAMPION, registry.CHALLENGER):
        version = aliased_version(client, name, alias)
        if version is not None and version.tags.get(DATA_VERSION_TAG) == current:
            return False, f"data {current} already studied: {name} v{version.version} (@{alias})"
    trained_on = champion.tags.get(DATA_VERSION_TAG, "unknown")
    return True, (
        f"data changed: {name} v{champion.version} (@{registry.CHAMPION}) was trained on "
        f"{trained_on}, data is now {current}"
    )


@flow(name="vae-retrain")
def retrain(
    params_path: str = "params.yaml",
    workers: int | None = None,
    dask_address: str | None = None,
    force: bool = False,
) -> dict:
    """Run the study only if the data changed since the champion was trained (or `force`).

    The study's promote step then moves @champion only if the new best beats it by the margin.
    """
    logger = get_run_logger()
    needed, reason = retrain_decision_task(load_params(params_path))
    if not (needed or force):
        logger.info("skipping retraining: %s", reason)
        return {"retrained": False, "reason": reason}
    logger.info("retraining: %s", reason if needed else f"forced ({reason})")
    result = study(params_path=params_path, workers=workers, dask_address=dask_address)
    return {"retrained": True, "reason": reason, **result}


# Deployment ----------------------------------------------------------------------------------


def validate_cron(cron: str) -> str:
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron)
    except ValidationError:
        raise ConfigError(
            f"--cron '{cron}': not a cron expression (e.g. '{DEFAULT_CRON}': Mondays 03:00)"
        ) from None
    return cron


def serve_retrain(
    cron: str = DEFAULT_CRON,
    params_path: str = "params.yaml",
    workers: int | None = None,
    dask_address: str | None = None,
    name: str = DEPLOYMENT_NAME,
) -> None:
    """Register the scheduled retrain deployment with the Prefect API and run it; blocks."""
    from prefect.types.entrypoint import EntrypointType

    # Fail now, not at 03:00 on Monday: the params file and the fan-out options are checked here.
    fan_out_runner(len(sweep_variants(load_params(params_path))), workers, dask_address)
    retrain.serve(
        name=name,
        cron=validate_cron(cron),
        parameters={"params_path": params_path, "workers": workers, "dask_address": dask_address},
        tags=["vaeops", "retrain"],
        description="Retrain the VAE activation study when data.dvc changes; promote if better.",
        limit=1,  # two studies at once would write the same outputs/ folder
        # By module name, not file path: the runner loads the flow from any working directory.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
