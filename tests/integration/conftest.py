"""Fixtures of the integration tier. Each group is headed by the test module that uses it."""

from __future__ import annotations

import contextlib
import json
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
            raise RuntimeError(f"{Path(process.args[0]).name} exited with {process.returncode}")
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


@contextlib.contextmanager
def background_server(
    command: list[str], env: dict[str, str], log_path: Path, health_url: str
) -> Iterator[subprocess.Popen]:
    """Start a server in its own process group (so teardown stops its workers too), logging to
    `log_path`; wait until `health_url` answers, and stop the group afterwards."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_until_healthy(health_url, process, timeout=120)
            yield process
        finally:
            stop_process_group(process)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> Iterator[str]:
    """`prefect server start` on a free loopback port, its state in tmp; yields the API URL."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_loopback_port()
    env = os.environ | TELEMETRY_OFF | {"PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    api_url = f"http://127.0.0.1:{port}/api"
    command = [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with background_server(command, env, home / "server.log", f"{api_url}/health"):
        yield api_url


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


REPO = Path(__file__).resolve().parents[2]
VAEOPS = Path(sys.executable).with_name("vaeops")
# What a clone holds that the pipeline needs (data/ comes from `vaeops data fetch`).
PROJECT_FILES = ("src", ".dvc", "dvc.yaml", ".dvcignore", ".gitignore", "pyproject.toml")


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def make_dvc_project(root: Path, sections: dict) -> Path:
    """A fresh git + DVC project in `root` as a clone would be: the repository's pipeline and
    code, its params.yaml with `sections` merged in, the default dataset fetched (`dvc add`ed),
    all committed. Returns the params file."""
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source, root / name, ignore=shutil.ignore_patterns("tmp", "cache", "__pycache__")
            )
        else:
            shutil.copy(source, root / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in sections.items():
        params[section] |= values
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(root, "init", "-q")
    subprocess.run([str(VAEOPS), "data", "fetch"], cwd=root, check=True, capture_output=True)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "a study")
    return root / "params.yaml"


@pytest.fixture(scope="session")
def new_dvc_project():
    """`new_dvc_project(root, sections)`: see make_dvc_project."""
    return make_dvc_project


@dataclass(frozen=True)
class StudyWorkspace:
    """A study project (git + DVC, tiny params, the 5k digits) with its own sqlite MLflow store."""

    root: Path
    params_path: Path
    tracking_uri: str

    def env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_URI": self.tracking_uri}

    def fetch_new_data(self, images, labels) -> None:
        """New digits as a user brings them: IDX files fetched into data/ (`dvc add` rewrites
        data.dvc) and data.dvc committed."""
        from vaeops.data.idx import write_idx

        folder = self.root.parent / f"{self.root.name}-new-digits"
        folder.mkdir()
        write_idx(folder / "images-idx3-ubyte", images)
        write_idx(folder / "labels-idx1-ubyte", labels)
        fetch = [str(VAEOPS), "data", "fetch", "--dataset", f"idx:{folder}"]
        subprocess.run(fetch, cwd=self.root, check=True, capture_output=True)
        git(self.root, "commit", "-qam", "data: new digits")


def tiny_study_params() -> dict:
    """2 activations x 1 seed (+ the AE baseline), 1 epoch of a 16-unit MLP with 2 latents."""
    return {
        "model": {"hidden": [16], "latent": 2},
        "train": {"epochs": 1, "device": "cpu"},
        "sweep": {"activations": ["relu", "tanh"], "seeds": [0]},
        "evaluate": {"iwae_samples": 4},
        "generate": {"n_samples": 16, "n_reconstructions": 8, "interpolation_pairs": 2},
        "classifier": {"epochs": 1},
        "sample_quality": {"n_samples": 100},
        "claims": {"beta_activations": ["relu"], "betas": [2.0], "dropouts": [0.3], "latents": [4]},
    }


def make_study_workspace(root: Path) -> StudyWorkspace:
    root.mkdir(parents=True, exist_ok=True)
    params_path = make_dvc_project(root, tiny_study_params())
    return StudyWorkspace(root, params_path, f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")


@pytest.fixture(scope="module")
def study_workspace(tmp_path_factory, prefect_api) -> Iterator[StudyWorkspace]:
    """A fresh study project, made the working directory, with MLflow pointed at its store,
    for the whole module."""
    workspace = make_study_workspace(tmp_path_factory.mktemp("study"))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workspace.root)
        for key, value in workspace.env().items():
            patch.setenv(key, value)
        yield workspace


@pytest.fixture
def second_study_workspace(tmp_path, study_workspace, monkeypatch) -> StudyWorkspace:
    """Another fresh study project with the same params and data, current for one test."""
    workspace = make_study_workspace(tmp_path / "second-study")
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
    summaries = (study_workspace.root / "outputs" / "variants").glob("*/train.json")
    trained = {path.parent.name: json.loads(path.read_text()) for path in summaries}
    return {
        "state": state,
        "result": state.result(),
        "workspace": study_workspace,
        "train_summaries": trained,  # as this study left them, before later tests change data
    }


# --- end of the orchestration group ------------------------------------------------------------


# --- Tracking and registry (test_tracking.py, test_registry.py, test_postgres_store.py) --------

MLFLOW = Path(sys.executable).with_name("mlflow")


@contextlib.contextmanager
def running_mlflow_server(backend_store_uri: str, folder: Path) -> Iterator[str]:
    """`mlflow server` on a free loopback port, proxying artifacts to `folder/artifacts` and
    logging to `folder/server.log`; yields its URL and stops its process group afterwards."""
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(MLFLOW), "server",
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", str(folder / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with background_server(
        command, os.environ | TELEMETRY_OFF, folder / "server.log", f"{url}/health"
    ):
        yield url


@pytest.fixture(scope="session")
def start_mlflow_server():
    """`with start_mlflow_server(backend_store_uri, folder) as url:` a server of that store."""
    return running_mlflow_server


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """A real MLflow tracking + registry server (sqlite backend, proxied artifacts)."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    with running_mlflow_server(f"sqlite:///{folder / 'mlflow.db'}", folder) as url:
        yield url


def point_tracking_at(uri: str, patch: pytest.MonkeyPatch) -> None:
    """Make `uri` the store of this process (MLflow's explicit setting outlives environment
    changes, so it is set too) and of every subprocess a test starts."""
    import mlflow

    patch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def run_steps(params) -> None:
    """train (every variant of the sweep) -> evaluate -> summarize, in this process."""
    from vaeops.steps.evaluate import evaluate_sweep
    from vaeops.steps.summarize import summarize
    from vaeops.steps.train import train_sweep
    from vaeops.variants import sweep_variants

    variants = sweep_variants(params)
    train_sweep(params, variants)
    evaluate_sweep(params, variants)
    summarize(params)


@pytest.fixture(scope="session")
def track_with():
    """`track_with(uri, monkeypatch)`: point this process and its subprocesses at a store."""
    return point_tracking_at


@pytest.fixture(scope="session")
def make_study(mnist_5k_dir, params_writer):
    """`make_study(folder, **changes)`: a study in `folder` (the tiny params with `changes`, a
    copy of the fetched digits in folder/data, the split file prepared); its loaded params."""
    from vaeops.config import load_params
    from vaeops.steps.prepare import prepare

    def make(folder: Path, **changes: dict):
        params = load_params(params_writer(folder, **changes))
        shutil.copytree(mnist_5k_dir, params.paths.data)
        prepare(params)
        return params

    return make


@pytest.fixture(scope="session")
def run_study():
    """`run_study(params)`: the train, evaluate and summarize steps over the whole sweep."""
    return run_steps


# --- PostgreSQL (127.0.0.1:5432, trust auth; test_postgres_store.py, test_deploy_stack.py) -----

POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}


def admin_connection():
    """An autocommit connection to the machine's PostgreSQL; skips the test where it is absent."""
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 is not installed (dev extra)")
    try:
        connection = psycopg2.connect(connect_timeout=3, **POSTGRES)
    except psycopg2.OperationalError as error:
        pytest.skip(f"PostgreSQL is not reachable at 127.0.0.1:5432 ({error})".strip())
    connection.autocommit = True
    return connection
