"""The registry against a real `mlflow server` process on a loopback port: register, promote,
keep when not better, aliases, pull, safe pyfunc loading without vaeops, and the batch job."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.integration

REPO_SRC = Path(__file__).resolve().parents[2] / "src"
MLFLOW = Path(sys.executable).with_name("mlflow")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_health(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {url} not healthy after {timeout}s")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking + registry server (sqlite backend, proxied artifacts)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            str(MLFLOW),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(root / "server.log", "w"),  # noqa: SIM115 - closed with the process
        env=os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"},
    )
    try:
        wait_for_health(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def run_sweep(params_path: Path):
    """prepare -> train every variant -> evaluate -> summarize, in process."""
    from vaeops.config import load_params
    from vaeops.data.sources import fetch_dataset
    from vaeops.report import summarize
    from vaeops.steps.evaluate import evaluate_sweep
    from vaeops.steps.prepare import prepare
    from vaeops.steps.train import train_variant
    from vaeops.variants import sweep_variants

    params = load_params(params_path)
    if not (params.paths.data / "images-idx3-ubyte").is_file():
        fetch_dataset("mnist-5k", params.paths.data)
    prepare(params)
    for variant in sweep_variants(params):
        train_variant(params, variant)
    evaluate_sweep(params)
    summarize(params)
    return params


@pytest.fixture(scope="module")
def study(mlflow_server, tmp_path_factory):
    """Two sweeps against the server: a weak one (1 epoch) and a stronger one (4 epochs)."""
    from _pytest.monkeypatch import MonkeyPatch

    root = tmp_path_factory.mktemp("study")
    patch = MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    patch.chdir(root)
    outputs = root / "outputs"
    base = {
        "paths": {
            "data": str(root / "data"),
            "splits": str(outputs / "splits.npz"),
            "checkpoints": str(outputs / "checkpoints"),
        },
        "model": {"hidden": [32], "latent": 4},
        "train": {"device": "cpu"},
        "sweep": {"activations": ["relu", "tanh"], "seeds": [0]},
        "evaluate": {"iwae_samples": 16},
    }
    sweeps = {}
    for name, epochs in (("weak", 1), ("strong", 4)):
        raw = json.loads(json.dumps(base))
        raw["train"]["epochs"] = epochs
        for key in ("variants", "evaluation", "summary", "generated"):
            raw["paths"][key] = str(outputs / name / key)
        raw["paths"]["evaluation_metrics"] = str(outputs / name / "evaluation.json")
        raw["paths"]["promotion"] = str(outputs / name / "promotion.json")
        path = root / f"params-{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        sweeps[name] = run_sweep(path)
    yield sweeps
    patch.undo()


def with_margin(params, margin: float):
    return params.model_copy(
        update={"promote": params.promote.model_copy(update={"min_margin": margin})}
    )


def test_promotion_lifecycle(study):
    """Given two sweeps, when promoting in turn, then the first promotes, a better sweep under a
    huge margin becomes challenger only, and with no margin it becomes champion."""
    from mlflow.tracking import MlflowClient

    from vaeops.registry import promote

    client = MlflowClient()
    name = study["weak"].promote.registered_model

    first = promote(study["weak"])
    assert first["decision"] == "promoted" and first["reason"] == "no champion yet"
    weak_champion = client.get_model_version_by_alias(name, "champion")
    assert weak_champion.version == first["candidate_version"]
    # every non-diverged variant of the sweep is a version, tagged with its identity and metrics
    versions = client.search_model_versions(f"name='{name}'")
    assert len(versions) == first["registered_versions"] == 3
    tags = weak_champion.tags
    assert {
        "vaeops.activation",
        "vaeops.seed",
        "vaeops.kind",
        "vaeops.data_version",
        "vaeops.sweep",
        "val/iwae_nll",
        "test/iwae_nll",
    } <= set(tags)
    assert tags["promotion.decision"] == "promoted"

    kept = promote(with_margin(study["strong"], 1e6))
    assert kept["decision"] == "kept"
    assert kept["champion_version"] == weak_champion.version
    # the champion was re-evaluated on the same validation data: its figure is a real number
    assert kept["champion_metric"] == pytest.approx(first["candidate_metric"], rel=1e-4)
    assert client.get_model_version_by_alias(name, "champion").version == weak_champion.version
    assert (
        client.get_model_version_by_alias(name, "challenger").version == kept["candidate_version"]
    )

    promoted = promote(with_margin(study["strong"], 0.0))
    assert promoted["decision"] == "promoted"
    assert promoted["candidate_metric"] < promoted["champion_metric"]
    assert client.get_model_version_by_alias(name, "champion").version == kept["candidate_version"]
    assert (
        client.get_model_version_by_alias(name, "previous-champion").version
        == weak_champion.version
    )
    description = client.get_model_version(name, promoted["candidate_version"]).description
    assert "promoted" in description and "margin 0" in description

    log_lines = Path(study["strong"].paths.promotion).with_name("promotion_log.jsonl")
    decisions = [json.loads(line)["decision"] for line in log_lines.read_text().splitlines()]
    assert decisions == ["kept", "promoted"]


def test_bad_registry_uri_is_one_clear_error(study):
    from vaeops.registry import RegistryError, pull

    with pytest.raises(RegistryError, match="cannot resolve models:/vae-mnist@nope"):
        pull("models:/vae-mnist@nope", Path("pulled"))
    with pytest.raises(RegistryError, match="registered models: vae-mnist"):
        pull("models:/no-such-model/1", Path("pulled"))


LOADER = """
import importlib.util, json, pickle, sys
sys.path = [p for p in sys.path if p.rstrip("/") != {src!r}]
assert importlib.util.find_spec("vaeops") is None, "vaeops must be out of reach"
def forbidden(*args, **kwargs):
    raise RuntimeError("unpickling is forbidden in this test")
pickle.load = pickle.loads = forbidden
import cloudpickle, torch
cloudpickle.load = cloudpickle.loads = forbidden
torch.load = forbidden
import mlflow, numpy as np
model = mlflow.pyfunc.load_model({uri!r})
images = np.load({images!r})
out = {{
    "reconstruct": model.predict(images).shape,
    "encode": model.predict(images, params={{"mode": "encode"}}).shape,
    "sample": model.predict(images[:1], params={{"mode": "sample", "n_samples": 5}}).shape,
    "vaeops_from": sys.modules["vaeops"].__file__,
    "signature_inputs": str(model.metadata.signature.inputs),
}}
print(json.dumps(out))
"""


def test_champion_loads_without_vaeops_and_without_unpickling(study, tmp_path, mlflow_server):
    """Given the champion, when a process without vaeops loads it with pickle forbidden, then
    reconstruct, encode and sample all work and the carried code, not an install, was used."""
    from vaeops.data.splits import load_split

    images = load_split(study["strong"].paths.splits, "test").images[:3].flatten(1).numpy()
    np.save(tmp_path / "images.npy", images)
    script = LOADER.format(
        src=str(REPO_SRC), uri="models:/vae-mnist@champion", images=str(tmp_path / "images.npy")
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=os.environ | {"MLFLOW_TRACKING_URI": mlflow_server, "PYTHONPATH": ""},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["reconstruct"] == [3, 784]
    assert out["encode"] == [3, 4]
    assert out["sample"] == [5, 784]
    assert not out["vaeops_from"].startswith(str(REPO_SRC))
    assert "784" in out["signature_inputs"]


def test_pull_downloads_a_loadable_model(study, tmp_path):
    import mlflow

    from vaeops.registry import pull

    local = pull("models:/vae-mnist@champion", tmp_path / "pulled")
    assert (local / "MLmodel").is_file()
    model = mlflow.pyfunc.load_model(str(local))
    out = model.predict(np.random.default_rng(0).random((2, 784), dtype=np.float32))
    assert out.shape == (2, 784) and out.min() >= 0 and out.max() <= 1


def test_generate_writes_grids_and_arrays_and_logs_the_version(study, tmp_path):
    """Given the champion, when the batch job runs on an .npy input, then grids and arrays have
    the right shapes and ranges, images are not constant, and the run names the version used."""
    from mlflow.tracking import MlflowClient
    from PIL import Image

    from vaeops.data.splits import load_split
    from vaeops.generate import generate_batch

    params = study["strong"]
    digits = (load_split(params.paths.splits, "test").images[:40, 0] * 255).byte().numpy()
    np.save(tmp_path / "digits.npy", digits)
    result = generate_batch(
        params, "models:/vae-mnist@champion", tmp_path / "gen", 12, tmp_path / "digits.npy"
    )
    arrays = np.load(result["arrays"])
    assert arrays["inputs"].shape == (40, 784)
    assert arrays["reconstructions"].shape == (40, 784)
    assert arrays["samples"].shape == (12, 784)
    pairs, steps = params.generate.interpolation_pairs, params.generate.interpolation_steps
    assert arrays["interpolations"].shape == (pairs * steps, 784)
    for key in ("reconstructions", "samples", "interpolations"):
        assert arrays[key].min() >= 0 and arrays[key].max() <= 1
        assert arrays[key].std() > 0.01, f"{key} look constant"
    for key in ("reconstructions", "samples", "interpolations"):
        grid = np.asarray(Image.open(result[key]))
        assert grid.std() > 1
    # 32 inputs above 32 reconstructions, 8 per row of 28 px + 2 px padding
    assert Image.open(result["reconstructions"]).size == (8 * 30 + 2, 8 * 30 + 2)
    run = MlflowClient().get_run(result["run_id"])
    champion = MlflowClient().get_model_version_by_alias("vae-mnist", "champion")
    assert run.data.tags["vaeops.model_version"] == champion.version
    artifacts = {item.path for item in MlflowClient().list_artifacts(result["run_id"])}
    assert {"samples.png", "reconstructions.png", "interpolations.png", "arrays.npz"} <= artifacts
