"""The Prefect flows against a real `prefect server` on a loopback port: the study flow with its
process fan-out, the data-driven retrain, the Dask fan-out on a LocalCluster; the fan-out without
a server, bad input through the flows, the entry files in pipelines/. The scheduled deployment and
its worker: test_deploy_worker.py. Fixtures: tests/integration/conftest.py."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
VAEOPS = Path(sys.executable).with_name("vaeops")
VARIANTS = ["vae-relu-s0", "vae-tanh-s0", "ae-relu-s0"]


def claim_points(root: Path) -> list[str]:
    """The tiny study's claim-sweep points (tests/integration/conftest.py), trained by `dvc
    repro`: beta for relu, dropout and latent size for the best config."""
    best = json.loads((root / "metrics" / "study.json").read_text())["best"]["config"]
    return ["vae-relu-s0-beta2", f"{best}-s0-dropout0.3", f"{best}-s0-latent4"]


DASK_MISSING = "the dask extra is not installed: pip install -e '.[dask]'"


def flow_run_with_task_runs(flow_run_id) -> tuple:
    """The flow run as the server recorded it, and its task runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return flow_run, task_runs


def sweep_runs(experiment: str = "vae-activation-study") -> tuple[list, list]:
    """(parent runs, child runs) of the study's MLflow experiment."""
    import mlflow

    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    parents = [run for run in runs if run.data.tags.get("vaeops.role") == "sweep"]
    children = [run for run in runs if run.data.tags.get("vaeops.role") == "variant"]
    return parents, children


def test_study_flow_trains_every_variant_under_one_parent_run(studied):
    # Given the study flow ran once on the tiny params against the Prefect server (fixture)
    state, result, workspace = studied["state"], studied["result"], studied["workspace"]

    # Then the flow run completed on the server, with one train task run per variant and the
    # pipeline reproduced through DVC around them
    assert state.is_completed()
    flow_run, task_runs = flow_run_with_task_runs(state.state_details.flow_run_id)
    assert flow_run.state.is_completed()
    names = sorted(run.name for run in task_runs)
    assert [name for name in names if name.startswith("train-")] == sorted(
        f"train-{name}" for name in VARIANTS
    )
    assert {"dvc-repro-prepare", "dvc-repro-all"} <= set(names)
    assert any(name.startswith("publish-report") for name in names)  # the report's artifacts
    assert all(run.state.is_completed() for run in task_runs)
    assert sorted(result["trained"]) == sorted(VARIANTS)

    # And DVC agrees: dvc.lock records the run, nothing is stale
    assert dvc_status(workspace.root) == {}

    # And the leaderboard lists every variant
    with (workspace.root / "outputs" / "summary" / "leaderboard.csv").open() as handle:
        assert sorted(row["variant"] for row in csv.DictReader(handle)) == sorted(VARIANTS)
    assert sorted(result["variants"]) == sorted(VARIANTS)

    # And MLflow holds one parent run with one child per variant and per claim-sweep point
    parents, children = sweep_runs()
    assert [run.info.run_id for run in parents] == [result["study_run_id"]]
    expected = VARIANTS + claim_points(workspace.root)
    assert sorted(run.info.run_name for run in children) == sorted(expected)
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {result["study_run_id"]}
    assert all(run.info.status == "FINISHED" for run in children)

    # And the best variant was promoted and the batch job ran on it
    assert result["promotion"]["decision"] == "promoted"
    assert (workspace.root / "outputs" / "generated" / "samples.png").is_file()


def dvc_status(root: Path) -> dict:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dvc")), "status", "--json"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def run_flow_cli(name: str, workspace) -> dict:
    """`vaeops flow NAME` in a fresh process, as a user or a scheduler runs it; its JSON result."""
    done = subprocess.run(
        [str(VAEOPS), "flow", name, "--params", str(workspace.params_path)],
        cwd=workspace.root,
        env=os.environ | workspace.env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.splitlines()
    start = len(lines) - 1 - lines[::-1].index("{")  # the result is the last JSON object printed
    return json.loads("\n".join(lines[start:]))


def test_retrain_skips_unchanged_data_and_runs_on_new_data(studied, mnist_5k):
    from mlflow.tracking import MlflowClient

    from vaeops.orchestration import retrain

    workspace = studied["workspace"]
    champion = MlflowClient().get_model_version_by_alias("vae-mnist", "champion")
    recorded = yaml.safe_load((workspace.root / "data.dvc").read_text())["outs"][0]["md5"]

    # Given the champion was trained on the data version in data.dvc
    assert champion.tags["vaeops.data_version"] == recorded
    # When the retrain flow runs, Then it skips
    skipped = retrain(params_path=str(workspace.params_path))
    assert skipped["retrained"] is False
    assert "already studied" in skipped["reason"]

    # Given new digits, fetched and committed: the 5k digits mirrored left to right
    images, labels = mnist_5k
    workspace.fetch_new_data(images[:, :, ::-1].copy(), labels)
    # When `vaeops flow retrain` runs, Then it runs the study on them: every variant anew
    ran = run_flow_cli("retrain", workspace)
    assert ran["retrained"] is True
    assert "data changed" in ran["reason"]
    assert ran["study_run_id"] != studied["result"]["study_run_id"]
    assert sorted(ran["trained"]) == sorted(VARIANTS)
    assert len(sweep_runs()[0]) == 2
    # And the champion moved only if the challenger beat it by the margin
    promotion = ran["promotion"]
    assert promotion["decision"] in {"promoted", "kept"}
    now = MlflowClient().get_model_version_by_alias("vae-mnist", "champion")
    assert (now.version != champion.version) == (promotion["decision"] == "promoted")
    assert dvc_status(workspace.root) == {}

    # When it runs again on that data, Then it skips: it was studied
    again = retrain(params_path=str(workspace.params_path))
    assert again["retrained"] is False
    assert "already studied" in again["reason"]


def test_dask_fan_out_on_a_local_cluster_matches_the_process_fan_out(
    studied, second_study_workspace
):
    LocalCluster = pytest.importorskip("distributed", reason=DASK_MISSING).LocalCluster
    pytest.importorskip("prefect_dask", reason=DASK_MISSING)
    from prefect import flow

    from vaeops.config import load_params
    from vaeops.orchestration import train_all
    from vaeops.steps.prepare import prepare
    from vaeops.steps.train import open_study

    # Given a second workspace with the same params and data as the studied one, current
    # before the cluster starts: its worker processes inherit the directory and environment
    params = load_params(second_study_workspace.params_path)

    @flow(name="dask-fan-out")
    def fan_out(address: str) -> list[dict]:
        prepare(params)
        return train_all(params, open_study(params), dask_address=address)

    # When the variants train on a LocalCluster of 2 single-threaded worker processes
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        rows = fan_out(cluster.scheduler_address)

    # Then every variant trained, to the metrics of the local process fan-out
    local = studied["train_summaries"]
    assert sorted(row["variant"] for row in rows) == sorted(VARIANTS)
    for row in rows:
        expected = local[row["variant"]]
        assert row["epochs"] == expected["epochs"]
        assert row["val/loss"] == pytest.approx(expected["val/loss"], rel=1e-5)
        assert row["train/loss"] == pytest.approx(expected["train/loss"], rel=1e-5)


def test_fan_out_runner_picks_processes_a_dask_address_or_a_local_cluster():
    from prefect.task_runners import ProcessPoolTaskRunner

    DaskTaskRunner = pytest.importorskip("prefect_dask", reason=DASK_MISSING).DaskTaskRunner

    from vaeops.orchestration import fan_out_runner

    assert isinstance(fan_out_runner(3, workers=2), ProcessPoolTaskRunner)
    remote = fan_out_runner(3, dask_address="tcp://127.0.0.1:8786")
    assert isinstance(remote, DaskTaskRunner)
    assert remote.address == "tcp://127.0.0.1:8786"
    local = fan_out_runner(3, workers=2, dask_address="local")
    assert local.cluster_kwargs["n_workers"] == 2
    assert local.cluster_kwargs["threads_per_worker"] == 1  # torch's RNG is per process


WORKERS_SCRIPT = """
import json

from prefect import flow, task
from prefect.context import get_run_context
from prefect.futures import wait

from vaeops.orchestration import api_shared_with_workers, fan_out_runner


@task(task_run_name="reporting-to-{index}")
def reporting_to(index: int) -> str:
    return str(get_run_context().client.api_url)


@flow
def fan_out() -> dict:
    runner = fan_out_runner(2, workers=2)
    with api_shared_with_workers(), runner:  # as train_all enters them
        futures = runner.map(reporting_to, {"index": [0, 1]})
        wait(futures)
    client = get_run_context().client
    return {
        "flow": str(client.api_url),
        "workers": [future.result() for future in futures],
        "task_runs": [run.name for run in client.read_task_runs()],
    }


if __name__ == "__main__":  # spawned workers import this file too
    print(json.dumps(fan_out()))
"""


def test_without_an_api_url_the_workers_report_to_the_flow_runs_temporary_server(tmp_path):
    # Given no PREFECT_API_URL (a user's `vaeops flow study`), and a fresh Prefect home
    script = tmp_path / "fan_out.py"
    script.write_text(WORKERS_SCRIPT)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }

    # When a flow fans out over the process pool as train_all does
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]

    # Then the workers ran their tasks against the flow run's temporary server, the only one
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["workers"] == [result["flow"]] * 2
    assert done.stderr.count("Starting temporary server") == 1
    assert sorted(result["task_runs"]) == ["reporting-to-0", "reporting-to-1"]


@pytest.mark.parametrize("name", ["study", "retrain"])
def test_a_bad_params_file_fails_each_flow_with_the_clis_one_line_error(
    name, prefect_api, tmp_path
):
    from vaeops import orchestration
    from vaeops.config import ConfigError

    # Given a params file with a misspelt key
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  epoch: 3\n")

    # When the flow runs with it directly, as a deployment's runner calls it
    with pytest.raises(ConfigError) as caught:
        getattr(orchestration, name)(params_path=str(bad))

    # Then it raises vaeops' ConfigError, whose message is what `vaeops flow` prints
    cli = subprocess.run(
        [str(VAEOPS), "flow", name, "--params", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 2
    assert cli.stderr == f"error: {caught.value}\n"
    assert "epoch" in str(caught.value) and "\n" not in str(caught.value)


def test_fan_out_runner_refuses_fewer_than_one_worker():
    from vaeops.config import ConfigError
    from vaeops.orchestration import fan_out_runner

    with pytest.raises(ConfigError, match="at least 1"):
        fan_out_runner(3, workers=0)


@pytest.mark.parametrize(
    "entrypoint",
    ["pipelines/flows.py:study", "pipelines/flows.py:retrain", "pipelines/deploy.py:retrain"],
)
def test_a_deployment_entrypoint_in_pipelines_loads_the_librarys_flow(entrypoint):
    from prefect.flows import load_flow_from_entrypoint

    from vaeops import orchestration

    loaded = load_flow_from_entrypoint(str(REPO_ROOT / entrypoint))
    assert loaded is getattr(orchestration, entrypoint.rpartition(":")[2])
