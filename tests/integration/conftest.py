"""Fixtures of the integration tier. Each group is headed by the test module that uses it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

# --- Orchestration (test_orchestration.py): a real Prefect server and a tiny study workspace ---

PREFECT = Path(sys.executable).with_name("prefect")
TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f}s")


def stop_process_group(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the group this fixture started (server or runner and their children), then KILL."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> Iterator[str]:
    """`prefect server start` on a free loopback port, its state in tmp; yields the API URL."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_loopback_port()
    env = os.environ | TELEMETRY_OFF | {"PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("w")
    process = subprocess.Popen(
        [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group, so teardown stops its workers too
    )
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        wait_until_healthy(f"{api_url}/health", process, timeout=120)
        yield api_url
    finally:
        stop_process_group(process)
        log.close()


@pytest.fixture(scope="session")
def prefect_api(prefect_server) -> Iterator[str]:
    """Point this process and every child it starts at the test server.

    Prefect reads its settings from the environment once, at import; threads without a settings
    context (the process pool's message forwarder, for one) use that global copy, so it is
    refreshed after the environment changes, and again after it is restored.
    """
    from prefect.context import refresh_global_settings_context

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_API_URL", prefect_server)
        for key, value in TELEMETRY_OFF.items():
            patch.setenv(key, value)
        refresh_global_settings_context()
        yield prefect_server
    refresh_global_settings_context()


@dataclass(frozen=True)
class StudyWorkspace:
    """A self-contained study: params.yaml, data.dvc, data/ and an sqlite MLflow store."""

    root: Path
    params_path: Path
    tracking_uri: str

    def set_data_version(self, md5: str) -> None:
        """What `dvc add` would record after the data changed (only the md5 matters here)."""
        text = f"outs:\n- md5: {md5}\n  size: 1\n  nfiles: 3\n  hash: md5\n  path: data\n"
        (self.root / "data.dvc").write_text(text)

    def env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_URI": self.tracking_uri}


def tiny_study_params(root: Path) -> dict:
    """2 activations x 1 seed (+ the AE baseline), 1 epoch of a 16-unit MLP with 2 latents."""
    outputs = root / "outputs"
    names = {
        "splits": "splits.npz",
        "variants": "variants",
        "evaluation": "evaluation",
        "evaluation_metrics": "evaluation.json",
        "summary": "summary",
        "generated": "generated",
        "promotion": "promotion.json",
        "checkpoints": "checkpoints",
    }
    return {
        "paths": {"data": str(root / "data")} | {k: str(outputs / v) for k, v in names.items()},
        "model": {"hidden": [16], "latent": 2},
        "train": {"epochs": 1, "device": "cpu"},
        "sweep": {"activations": ["relu", "tanh"], "seeds": [0]},
        "evaluate": {"iwae_samples": 4},
        "generate": {"n_samples": 16, "n_reconstructions": 8, "interpolation_pairs": 2},
    }


def make_study_workspace(root: Path, data_dir: Path) -> StudyWorkspace:
    shutil.copytree(data_dir, root / "data")
    params_path = root / "params.yaml"
    params_path.write_text(yaml.safe_dump(tiny_study_params(root), sort_keys=False))
    workspace = StudyWorkspace(root, params_path, f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    (root / "mlruns").mkdir()
    workspace.set_data_version("0" * 32 + ".dir")
    return workspace


@pytest.fixture(scope="module")
def study_workspace(tmp_path_factory, mnist_5k_dir, prefect_api) -> Iterator[StudyWorkspace]:
    """A fresh workspace, made the working directory (data.dvc and MLflow's artifacts are
    found relative to it) with MLflow pointed at its store, for the whole module."""
    workspace = make_study_workspace(tmp_path_factory.mktemp("study"), mnist_5k_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workspace.root)
        for key, value in workspace.env().items():
            patch.setenv(key, value)
        yield workspace


@pytest.fixture
def second_study_workspace(tmp_path, mnist_5k_dir, study_workspace, monkeypatch) -> StudyWorkspace:
    """Another fresh workspace with the same params and data, current for one test."""
    workspace = make_study_workspace(tmp_path / "second-study", mnist_5k_dir)
    monkeypatch.chdir(workspace.root)
    for key, value in workspace.env().items():
        monkeypatch.setenv(key, value)
    return workspace


@pytest.fixture
def start_in_background(tmp_path) -> Iterator:
    """`start(args, cwd, env)` -> Popen in its own process group, logging to tmp_path; every
    group started is stopped (its children too) when the test ends."""
    started: list[tuple[subprocess.Popen, object]] = []

    def start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
        log = (tmp_path / f"{Path(args[0]).name}-{len(started)}.log").open("w")
        process = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        started.append((process, log))
        return process

    yield start
    for process, log in started:
        stop_process_group(process)
        log.close()


@pytest.fixture(scope="module")
def studied(study_workspace) -> dict:
    """The study flow run once (local process fan-out) against the Prefect server."""
    from vaeops.orchestration import study

    state = study(params_path=str(study_workspace.params_path), return_state=True)
    return {"state": state, "result": state.result(), "workspace": study_workspace}


# --- end of the orchestration group ------------------------------------------------------------
