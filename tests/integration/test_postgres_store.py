"""The deployment's tracking store: an `mlflow server` on PostgreSQL (as in docker-compose.yml),
with a sweep trained, promoted and loaded through it. Skips when PostgreSQL is not running."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.integration

POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}


def admin_connection():
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 is not installed (dev extra)")
    try:
        connection = psycopg2.connect(connect_timeout=3, **POSTGRES)
    except psycopg2.OperationalError as error:
        pytest.skip(f"PostgreSQL is not reachable at 127.0.0.1:5432 ({error})".strip())
    connection.autocommit = True
    return connection


@pytest.fixture
def postgres_database():
    """A throwaway database, so runs of the suite never see each other's experiments."""
    name = f"vaeops_{uuid.uuid4().hex[:12]}"
    connection = admin_connection()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.close()


@pytest.fixture
def postgres_mlflow_server(postgres_database, tmp_path):
    from test_registry import free_port, wait_for_health

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [
            str(os.path.join(os.path.dirname(sys.executable), "mlflow")), "server",
            "--backend-store-uri", postgres_database,
            "--artifacts-destination", str(tmp_path / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )  # fmt: skip
    try:
        wait_for_health(url, process, timeout=120)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_sweep_promote_and_load_through_a_postgres_backed_server(
    postgres_mlflow_server, tiny_params_file, tmp_path, monkeypatch
):
    """Given an MLflow server on PostgreSQL, when a tiny sweep is trained and promoted through
    it, then the champion alias resolves and the model loads and predicts from that server."""
    import mlflow
    from test_registry import run_sweep

    from vaeops.registry import promote

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres_mlflow_server)
    raw = yaml.safe_load(tiny_params_file.read_text())
    raw["train"]["epochs"] = 1
    tiny_params_file.write_text(yaml.safe_dump(raw))
    params = run_sweep(tiny_params_file)

    decision = promote(params)

    assert decision["decision"] == "promoted"
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias(params.promote.registered_model, "champion")
    assert champion.version == decision["candidate_version"]
    model = mlflow.pyfunc.load_model(f"models:/{params.promote.registered_model}@champion")
    images = np.random.default_rng(0).random((2, 784), dtype=np.float32)
    assert model.predict(images).shape == (2, 784)
