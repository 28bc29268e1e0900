"""Prefect orchestration: the steps of `dvc.yaml` as tasks, the variants fanned out in parallel.

Where the code lives. The flows and tasks are defined here, inside the installed package, so the
CLI (`vaeops flow`, `vaeops schedule`), Prefect's workers and every Dask worker import them by
module name (`vaeops.orchestration`), from any working directory and in the container image, with
no `sys.path` juggling. `pipelines/flows.py` and `pipelines/deploy.py` are the thin entry files
of the project layout (what a `prefect deploy` entrypoint names): they only re-export the flows.
The one CLI runs them once (`vaeops flow`) or deploys the scheduled retrain to a work pool that a
`prefect worker` polls (`vaeops schedule`). Each task calls exactly one library step; nothing
here computes a metric or writes an output.

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

Who decides what. The study flow runs the pipeline through DVC, so `dvc.lock` stays true and
`dvc status` is clean after a flow run: `dvc repro prepare`, then the variants fan out as Prefect
tasks that train each one into the tracking store (`steps.train.train_variant`), then `dvc
repro` runs the whole pipeline, whose train stage restores every variant from the store in
seconds and whose later stages run as they would for a user. DVC decides what is stale; Prefect
adds scheduling, retries and the fan-out (its task caching is off); MLflow keeps what was
trained.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from mlflow.tracking import MlflowClient
from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner

from vaeops import registry, tracking
from vaeops.config import ConfigError, Params, load_params
from vaeops.data.versioning import verify_data
from vaeops.errors import VaeopsError
from vaeops.project import find_tool, tool_path
from vaeops.steps.train import open_study, train_variant
from vaeops.variants import Variant, sweep_variants

DEFAULT_CRON = "0 3 * * 1"  # Mondays 03:00 UTC: weekly, outside working hours
DEPLOYMENT_NAME = "weekly-retrain"
WORK_POOL = "vaeops"  # the `process` work pool the retrain worker polls
# By module name, not file path: the worker imports the installed package from any folder.
RETRAIN_ENTRYPOINT = "vaeops.orchestration.retrain"
LOCAL_CLUSTER = "local"  # `--dask-address local`: start a distributed.LocalCluster for the run


class DeploymentError(VaeopsError):
    """The Prefect API refused to create the work pool or the deployment."""


class PipelineError(VaeopsError):
    """`dvc repro` failed inside a flow; the message is the failing stage's own error line."""


def reproduce(root: Path, *targets: str) -> str:
    """`dvc repro [targets]` in the project, as a user runs it; its output. The stage commands
    (`vaeops ...`) and dvc are found beside this Python, whatever PATH the flow runner has."""
    env = os.environ | {"PATH": tool_path()}
    done = subprocess.run(
        [find_tool("dvc"), "repro", *targets], cwd=root, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        reasons = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        detail = reasons[-1] if reasons else done.stderr.strip().splitlines()[-1]
        raise PipelineError(f"dvc repro {' '.join(targets)} in {root} failed: {detail}")
    return done.stdout


# Tasks: one library call each ---------------------------------------------------------------


@task(name="check-data", cache_policy=NO_CACHE)
def check_data_task(params: Params) -> None:
    verify_data(params.paths.data, params.paths.data_dvc, params.root)


@task(name="dvc-repro", cache_policy=NO_CACHE, task_run_name="dvc-repro-{stages}")
def reproduce_task(params: Params, stages: str = "all") -> str:
    return reproduce(params.root, *([] if stages == "all" else stages.split(",")))


@task(name="publish-report", cache_policy=NO_CACHE)
def publish_report_artifacts(params: Params) -> None:
    """The leaderboard and the claims' verdicts as artifacts of this flow run."""
    from vaeops.report import publish_prefect_artifacts  # matplotlib: imported only when used

    publish_prefect_artifacts(params)


@task(name="open-study", cache_policy=NO_CACHE)
def open_study_task(params: Params) -> str:
    return open_study(params)


# One retry: train_variant resumes from its last finished epoch, so a worker lost mid-variant
# costs only the unfinished epochs.
@task(name="train", cache_policy=NO_CACHE, retries=1, task_run_name="train-{variant.name}")
def train_task(params: Params, variant: Variant, study_run_id: str) -> dict:
    return train_variant(params, variant, study_run_id)


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
    study_run_id: str,
    workers: int | None = None,
    dask_address: str | None = None,
) -> list[dict]:
    """Train (or restore) every variant of the sweep as mapped tasks; their summaries in sweep
    order.

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
                "study_run_id": unmapped(study_run_id),
            },
        )
        wait(futures)  # every variant finishes (or fails) before the first failure is raised
        return [future.result() for future in futures]


# Flows ---------------------------------------------------------------------------------------


@flow(name="vae-study")
def study(
    params_path: str | None = None,
    workers: int | None = None,
    dask_address: str | None = None,
) -> dict:
    """The pipeline through DVC with the variants fanned out: check data -> `dvc repro prepare`
    -> train every variant in parallel -> `dvc repro` (restores them, then evaluate ->
    summarize -> promote -> generate). Afterwards `dvc status` is clean.

    `params_path`: default the project's params.yaml; `workers`: parallel variants (default: one
    per core); `dask_address`: a Dask scheduler (tcp://host:8786) or 'local' for a LocalCluster;
    unset: processes on this machine.
    """
    params = load_params(params_path)
    check_data_task(params)
    reproduce_task(params, "prepare")
    study_run_id = open_study_task(params)
    trained = train_all(params, study_run_id, workers, dask_address)
    reproduce_task(params)
    # The report stage ran inside `dvc repro`, a subprocess; its artifacts belong to this flow run.
    publish_report_artifacts(params)
    headline = json.loads((params.paths.metrics / "study.json").read_text())
    promotion = json.loads((params.paths.metrics / "promotion.json").read_text())
    return {
        "study_run_id": study_run_id,
        "variants": [row["variant"] for row in trained],
        "trained": [row["variant"] for row in trained if not row["restored"]],
        "diverged": [row["variant"] for row in trained if row["diverged"]],
        "best": headline["best"],
        "promotion": promotion,
    }


def retrain_decision(params: Params) -> tuple[bool, str]:
    """Retrain when there is no @champion or the data changed since it was trained.

    A study on new data whose best does not beat the champion leaves @champion on the old data
    and marks its best @challenger (the promote step); the challenger's data version counts as
    studied too, or every scheduled run would retrain the same data again.
    """
    tracking.configure_tracking(params.root)
    current = tracking.data_version(params)
    client = MlflowClient()
    name = params.promote.registered_model
    champion = registry.aliased_version(client, name, registry.CHAMPION)
    if champion is None:
        return True, f"{name} has no @{registry.CHAMPION} yet"
    for alias in (registry.CHAMPION, registry.CHALLENGER):
        version = registry.aliased_version(client, name, alias)
        if version is not None and version.tags.get(tracking.Tag.DATA_VERSION) == current:
            return False, f"data {current} already studied: {name} v{version.version} (@{alias})"
    trained_on = champion.tags.get(tracking.Tag.DATA_VERSION, "unknown")
    return True, (
        f"data changed: {name} v{champion.version} (@{registry.CHAMPION}) was trained on "
        f"{trained_on}, data is now {current}"
    )


@flow(name="vae-retrain")
def retrain(
    params_path: str | None = None,
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


def ensure_process_pool(pool: str) -> None:
    """Create the `process` work pool that the worker polls, unless it exists (then leave it:
    an operator may have tuned its base job template or concurrency)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, PrefectHTTPStatusError

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except PrefectHTTPStatusError as error:
            if error.response.status_code != 401:
                raise
            raise DeploymentError(
                f"the Prefect API at {client.api_url} refused the credentials: set "
                "PREFECT_API_AUTH_STRING to the server's PREFECT_SERVER_API_AUTH_STRING"
            ) from None


def deploy_retrain(
    cron: str = DEFAULT_CRON,
    params_path: str | None = None,
    workers: int | None = None,
    dask_address: str | None = None,
    name: str = DEPLOYMENT_NAME,
    pool: str = WORK_POOL,
) -> str:
    """Create or update the scheduled retrain deployment on the `process` work pool `pool`; its
    id. A worker (`prefect worker start --pool POOL`) runs its flow runs in the project root.

    No image is built: the source is the project folder on the worker's file system (the
    deployment's pull step changes into it), and the flow is imported by module name from the
    installed package, so the worker needs vaeops installed and the project checked out at the
    same path, as the compose file's worker has.
    """
    params = load_params(params_path)
    # Fail now, not at 03:00 on Monday: the params file and the fan-out options are checked here.
    fan_out_runner(len(sweep_variants(params)), workers, dask_address)
    validate_cron(cron)
    ensure_process_pool(pool)
    deployable = retrain.from_source(source=str(params.root), entrypoint=RETRAIN_ENTRYPOINT)
    deployment_id = deployable.deploy(
        name=name,
        work_pool_name=pool,
        cron=cron,
        parameters={"params_path": params_path, "workers": workers, "dask_address": dask_address},
        tags=["vaeops", "retrain"],
        description="Retrain the VAE activation study when data.dvc changes; promote if better.",
        concurrency_limit=1,  # two studies at once would write the same outputs/ folder
        print_next_steps=False,  # the CLI prints them, with the pool's name
    )
    return str(deployment_id)
