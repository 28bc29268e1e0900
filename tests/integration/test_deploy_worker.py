"""The retrain deployment as docker-compose.yml runs it: a Prefect server whose API needs an auth
string, `vaeops schedule` deploying the cron retrain to a `process` work pool, and a real
`prefect worker` polling that pool and running the flow in the project. Fixtures:
tests/integration/conftest.py."""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    PREFECT,
    TELEMETRY_OFF,
    VAEOPS,
    background_server,
    free_loopback_port,
)

pytestmark = pytest.mark.integration

POOL = "vaeops-test"
DEPLOYMENT = "vae-retrain/weekly-retrain"
# Read from the environment as the compose file passes it; a test value, never a real secret.
AUTH_STRING = "vaeops:worker-test-auth"
DATA_MD5 = "0123456789abcdef0123456789abcdef.dir"


@pytest.fixture(scope="module")
def authenticated_prefect_server(tmp_path_factory) -> Iterator[str]:
    """`prefect server start` with PREFECT_SERVER_API_AUTH_STRING set; yields the API URL."""
    home = tmp_path_factory.mktemp("prefect-auth-home")
    port = free_loopback_port()
    env = os.environ | TELEMETRY_OFF | {"PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false"}
    env |= {"PREFECT_SERVER_API_AUTH_STRING": AUTH_STRING}
    for key in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING"):
        env.pop(key, None)
    api_url = f"http://127.0.0.1:{port}/api"
    command = [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    # /api/health answers without credentials (probes), every other route needs them.
    with background_server(command, env, home / "server.log", f"{api_url}/health"):
        yield api_url


def client_env(api_url: str, auth: str | None, tracking_uri: str) -> dict[str, str]:
    env = os.environ | TELEMETRY_OFF | {"PREFECT_API_URL": api_url}
    env |= {"MLFLOW_TRACKING_URI": tracking_uri}
    env.pop("PREFECT_API_AUTH_STRING", None)
    return env | ({"PREFECT_API_AUTH_STRING": auth} if auth else {})


def api_status(url: str, auth: str | None) -> int:
    """The HTTP status of a POST to the API's work-pool listing, with or without basic auth."""
    request = urllib.request.Request(f"{url}/work_pools/filter", data=b"{}", method="POST")
    request.add_header("Content-Type", "application/json")
    if auth:
        request.add_header("Authorization", f"Basic {base64.b64encode(auth.encode()).decode()}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def champion_on_current_data(project: Path, tracking_uri: str) -> None:
    """A registered champion tagged with the data version of `project`'s data.dvc, as a finished
    study leaves it, so the scheduled retrain decides 'already studied' in seconds."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.create_registered_model("vae-mnist")
    version = client.create_model_version(
        "vae-mnist", source=str(project / "model"), tags={"vaeops.data_version": DATA_MD5}
    )
    client.set_registered_model_alias("vae-mnist", "champion", version.version)


@contextlib.contextmanager
def authenticated_client(api_url: str) -> Iterator:
    """A Prefect client of this process that sends the auth string."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    settings = {PREFECT_API_URL: api_url, PREFECT_API_AUTH_STRING: AUTH_STRING}
    with temporary_settings(updates=settings), get_client(sync_client=True) as client:
        yield client


def run_logs(client, flow_run_id) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs]


def test_a_worker_polling_the_pool_runs_the_scheduled_retrain_with_the_auth_string(
    authenticated_prefect_server, tmp_path, params_writer
):
    api = authenticated_prefect_server
    # Given a study project whose data the registered champion was trained on
    project = tmp_path / "study"
    params_path = params_writer(project)
    (project / "data.dvc").write_text(f"outs:\n- md5: {DATA_MD5}\n  path: data\n")
    tracking_uri = f"sqlite:///{project / 'mlruns.db'}"
    champion_on_current_data(project, tracking_uri)

    # Then the API refuses requests without the auth string or with a wrong one
    assert api_status(api, None) == 401
    assert api_status(api, "vaeops:wrong") == 401
    assert api_status(api, AUTH_STRING) == 200
    refused = subprocess.run(
        [str(VAEOPS), "schedule", "--params", str(params_path), "--pool", POOL],
        env=client_env(api, None, tracking_uri),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: ") and "PREFECT_API_AUTH_STRING" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1

    # When `vaeops schedule` deploys the retrain with the auth string
    env = client_env(api, AUTH_STRING, tracking_uri)
    scheduled = subprocess.run(
        [str(VAEOPS), "schedule", "--params", str(params_path), "--pool", POOL],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert scheduled.returncode == 0, scheduled.stderr
    assert f"prefect worker start --pool {POOL}" in scheduled.stdout

    # And a run is triggered now, and a worker polls the pool once, from another folder
    from prefect.deployments import run_deployment

    with authenticated_client(api):
        triggered = run_deployment(DEPLOYMENT, timeout=0)
    worker = [str(PREFECT), "worker", "start", "--pool", POOL, "--run-once"]
    subprocess.run(worker, env=env, cwd=tmp_path, check=True, capture_output=True, timeout=240)

    # Then the deployment is on the pool with the weekly cron, and the worker ran the flow run
    # to completion in the project, which found the champion's data already studied
    with authenticated_client(api) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        flow_run = client.read_flow_run(triggered.id)
        messages = run_logs(client, triggered.id)
    assert deployment.work_pool_name == POOL
    assert [item.schedule.cron for item in deployment.schedules] == ["0 3 * * 1"]
    assert deployment.parameters["params_path"] == str(params_path)
    assert flow_run.state.is_completed(), flow_run.state
    assert any(f"data {DATA_MD5} already studied" in message for message in messages), messages


def test_a_bad_cron_is_refused_in_one_line_before_anything_is_deployed(tmp_path, params_writer):
    params_path = params_writer(tmp_path / "study")
    # No API is reachable at this URL: the cron is checked before Prefect is asked anything
    env = client_env("http://127.0.0.1:9/api", AUTH_STRING, f"sqlite:///{tmp_path / 'm.db'}")
    command = [str(VAEOPS), "schedule", "--cron", "every monday", "--params", str(params_path)]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr == (
        "error: --cron 'every monday': not a cron expression (e.g. '0 3 * * 1': Mondays 03:00)\n"
    )
