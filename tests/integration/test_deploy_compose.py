"""docker-compose.yml as `docker-compose config` resolves it with the documented example env: it
validates, refuses to start without secrets, pins every image, gives every long-running service a
health check, and wires the authenticated services as the test_deploy_*.py tests run them.
(No Docker engine runs here; CI installs Debian's docker-compose, see .ci/run.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_COMPOSE = shutil.which("docker-compose")
EXAMPLE_ENV = REPO_ROOT / ".env.example"

needs_compose = pytest.mark.skipif(
    DOCKER_COMPOSE is None,
    reason="docker-compose is not installed (Debian: apt-get install -y docker-compose)",
)


def compose_config(env_file: Path) -> subprocess.CompletedProcess:
    # Only PATH from this environment, so a secret set here cannot mask a missing one.
    return subprocess.run(
        [DOCKER_COMPOSE, "--env-file", str(env_file), "config"],
        cwd=REPO_ROOT,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def services() -> dict:
    """The services of the compose file resolved with the example env."""
    result = compose_config(EXAMPLE_ENV)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def command_line(service: dict) -> str:
    """The service's command (and entrypoint) as one string."""
    parts = [*(service.get("entrypoint") or []), *(service.get("command") or [])]
    return " ".join(parts)


@needs_compose
def test_without_secrets_compose_refuses_the_file_and_names_the_missing_variable(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = compose_config(empty)
    assert refused.returncode != 0
    assert "in .env (see .env.example)" in refused.stderr


@needs_compose
def test_every_image_is_pinned_and_every_long_running_service_is_health_checked(services):
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {name: service["image"] for name, service in services.items()}
    # Pinned: a tag that names a version (no :latest, no bare name)
    unpinned = {name: image for name, image in images.items() if not pinned(image)}
    assert unpinned == {}
    assert images["mlflow"] == f"vaeops:{version}"
    one_shot = {name for name, service in services.items() if service.get("restart") == "no"}
    assert one_shot == {"postgres-init", "prefect-deploy"}
    unchecked = [
        name for name in services if name not in one_shot and "healthcheck" not in services[name]
    ]
    assert unchecked == []


def pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and tag != "latest" and any(character.isdigit() for character in tag)


@needs_compose
def test_the_servers_require_credentials_and_the_clients_send_them_from_the_env(services):
    mlflow = services["mlflow"]
    assert "--app-name basic-auth" in command_line(mlflow)
    assert mlflow["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"] == "change-me-mlflow-password"
    prefect = services["prefect-server"]["environment"]
    auth_string = prefect["PREFECT_SERVER_API_AUTH_STRING"]
    for name in ("prefect-deploy", "prefect-worker", "dask-worker", "model-server"):
        env = services[name]["environment"]
        assert env["MLFLOW_TRACKING_PASSWORD"] == "change-me-mlflow-password", name
        assert env["PREFECT_API_AUTH_STRING"] == auth_string, name
    # No credential is spelled out in the file itself: each comes from ${VAR:?}
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    secrets = [line.partition("=")[2] for line in EXAMPLE_ENV.read_text().splitlines()]
    secrets = [value for value in secrets if "change-me" in value]
    assert len(secrets) == 5
    assert [value for value in secrets if value in text] == []


@needs_compose
def test_the_worker_polls_the_pool_the_deployment_targets_and_the_champion_is_served(services):
    deploy = command_line(services["prefect-deploy"])
    worker = command_line(services["prefect-worker"])
    assert deploy.startswith("vaeops schedule --pool vaeops")
    assert worker.startswith("prefect worker start --pool vaeops")
    serve = command_line(services["model-server"])
    assert "mlflow models serve -m models:/vae-mnist@champion --env-manager local" in serve
    assert "s3://" in services["mlflow"]["environment"]["ARTIFACTS_DESTINATION"]
    assert "weed server" in command_line(services["s3"])
