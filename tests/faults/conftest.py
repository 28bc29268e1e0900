"""Fixtures of the fault-injection tier: the integration tier's real components (imported from
tests/integration/conftest.py, not copied) and an `mlflow server` that a test can kill and start
again on the same port, so every client's URI stays valid across the outage."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.conftest import (  # noqa: F401  (fixtures, found by pytest by name)
    MLFLOW,
    TELEMETRY_OFF,
    free_loopback_port,
    make_study,
    run_study,
    track_with,
    wait_until_healthy,
)

# A client of a server that is down fails at once instead of retrying for minutes.
NO_HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@dataclass
class KillableMlflowServer:
    """`mlflow server` of a sqlite store under `folder`, on a fixed loopback port."""

    folder: Path
    port: int = field(default_factory=free_loopback_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            str(MLFLOW), "server",
            "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination", str(self.folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        log = (self.folder / "server.log").open("a")
        self.process = subprocess.Popen(
            command,
            env=os.environ | TELEMETRY_OFF,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_until_healthy(f"{self.url}/health", self.process, timeout=120)

    def kill(self) -> None:
        """SIGKILL the server's whole process group (gunicorn/uvicorn workers included)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


@pytest.fixture(scope="module")
def killable_mlflow_server(tmp_path_factory) -> Iterator[KillableMlflowServer]:
    """One per module; a test that kills it starts it again before it ends."""
    server = KillableMlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    try:
        yield server
    finally:
        server.kill()
