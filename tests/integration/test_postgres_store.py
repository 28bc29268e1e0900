"""The deployment's tracking store: an `mlflow server` on PostgreSQL (as in docker-compose.yml),
with a sweep trained, promoted and loaded through it. Skips when PostgreSQL is not running."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from tests.integration.conftest import admin_connection

pytestmark = pytest.mark.integration


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
def postgres_mlflow_server(postgres_database, tmp_path, start_mlflow_server):
    with start_mlflow_server(postgres_database, tmp_path) as url:
        yield url


def test_sweep_promote_and_load_through_a_postgres_backed_server(
    postgres_mlflow_server, tmp_path, make_study, run_study, track_with, monkeypatch
):
    """Given an MLflow server on PostgreSQL, when a tiny sweep is trained and promoted through
    it, then the champion alias resolves and the model loads and predicts from that server."""
    import mlflow

    from vaeops.steps.promote import promote

    track_with(postgres_mlflow_server, monkeypatch)
    params = make_study(tmp_path / "study", train={"epochs": 1})
    run_study(params)

    decision = promote(params)

    assert decision["decision"] == "promoted"
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias(params.promote.registered_model, "champion")
    assert int(champion.version) == decision["candidate"]["version"]
    assert champion.tags["vaeops.variant"] == decision["candidate"]["variant"]
    model = mlflow.pyfunc.load_model(f"models:/{params.promote.registered_model}@champion")
    images = np.random.default_rng(0).random((2, 784), dtype=np.float32)
    reconstructions = model.predict(images)
    assert reconstructions.shape == (2, 784)
    assert reconstructions.min() >= 0 and reconstructions.max() <= 1
