"""The registry against a real `mlflow server` process on a loopback port: register, promote,
keep when not better, aliases, pull, safe pyfunc loading without vaeops, the batch job, and the
conv architecture end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

REPO_SRC = Path(__file__).resolve().parents[2] / "src"
NAME = "vae-mnist"  # the registered model of the two MLP sweeps (promote.registered_model)


@pytest.fixture(scope="module")
def study(mlflow_server, tmp_path_factory, make_study, run_study, track_with):
    """Two sweeps against the server: a weak one (1 epoch) and a stronger one (4 epochs), each in
    a folder of its own (the same data and prepare params, so the same split)."""
    root = tmp_path_factory.mktemp("study")
    sweeps = {}
    with pytest.MonkeyPatch.context() as patch:
        track_with(mlflow_server, patch)
        for name, epochs in (("weak", 1), ("strong", 4)):
            sweeps[name] = make_study(
                root / name, train={"epochs": epochs}, evaluate={"iwae_samples": 16}
            )
            run_study(sweeps[name])
        yield sweeps


@pytest.fixture(autouse=True)
def tracked(mlflow_server, monkeypatch, track_with):
    """Every test talks to the module's server, whatever an earlier module pointed MLflow at."""
    track_with(mlflow_server, monkeypatch)


def promote_with_margin(params, margin: float) -> dict:
    from vaeops.steps.promote import promote

    margin_update = {"promote": params.promote.model_copy(update={"min_margin": margin})}
    return promote(params.model_copy(update=margin_update))


def test_promotion_lifecycle(study, tmp_path):
    """Given two sweeps, when promoting in turn, then the first promotes, a better sweep under a
    huge margin becomes challenger only, and with no margin it becomes champion."""
    from mlflow.tracking import MlflowClient

    from vaeops.outputs import read_json
    from vaeops.steps.promote import promote

    client = MlflowClient()

    first = promote(study["weak"])
    assert first["decision"] == "promoted" and first["reason"] == "no champion yet"
    weak_champion = client.get_model_version_by_alias(NAME, "champion")
    assert int(weak_champion.version) == first["candidate"]["version"]
    assert first["champion"] == {
        "version": int(weak_champion.version),
        "value": pytest.approx(first["candidate"]["value"]),
    }
    # every non-diverged variant of the sweep is a version, tagged with its identity and metrics
    versions = client.search_model_versions(f"name='{NAME}'")
    assert len(versions) == first["registered_versions"] == 3
    tags = weak_champion.tags
    assert {
        "vaeops.activation",
        "vaeops.seed",
        "vaeops.kind",
        "vaeops.identity",
        "vaeops.data_version",
        "vaeops.sweep",
        "val/iwae_nll",
        "test/iwae_nll",
    } <= set(tags)
    assert tags["promotion.decision"] == "promoted"
    # the step's versioned metrics file is the decision, without the registry's extras
    written = read_json(study["weak"].paths.metrics / "promotion.json")
    assert written == {key: first[key] for key in written}
    assert set(written) == {"decision", "reason", "metric", "candidate", "champion"}

    kept = promote_with_margin(study["strong"], 1e6)
    assert kept["decision"] == "kept"
    assert kept["champion"]["version"] == int(weak_champion.version)
    # the champion was re-evaluated on the same validation data: its figure is a real number
    assert kept["champion"]["value"] == pytest.approx(first["candidate"]["value"], rel=1e-4)
    assert client.get_model_version_by_alias(NAME, "champion").version == weak_champion.version
    challenger = client.get_model_version_by_alias(NAME, "challenger")
    assert int(challenger.version) == kept["candidate"]["version"]

    promoted = promote_with_margin(study["strong"], 0.0)
    assert promoted["decision"] == "promoted"
    assert promoted["candidate"]["version"] == kept["candidate"]["version"]
    assert (
        int(client.get_model_version_by_alias(NAME, "champion").version)
        == (promoted["candidate"]["version"])
    )
    previous = client.get_model_version_by_alias(NAME, "previous-champion")
    assert previous.version == weak_champion.version
    new_champion = client.get_model_version(NAME, str(promoted["candidate"]["version"]))
    assert float(new_champion.tags["promotion.champion_metric"]) > promoted["candidate"]["value"]
    assert "promoted" in new_champion.description and "margin 0" in new_champion.description

    # the decisions about the strong sweep are logged, in order, on its study run
    log = client.download_artifacts(
        new_champion.tags["vaeops.sweep"], "promotion_log.jsonl", str(tmp_path)
    )
    decisions = [json.loads(line)["decision"] for line in Path(log).read_text().splitlines()]
    assert decisions == ["kept", "promoted"]


def test_given_registered_versions_when_read_then_each_is_its_variants_training_run(study):
    from mlflow.tracking import MlflowClient

    from vaeops.steps.promote import promote
    from vaeops.tracking import Tag, stored_variants

    promote(study["weak"])  # registers the sweep, whatever ran before
    client = MlflowClient()

    versions = client.search_model_versions(f"name='{NAME}'")

    assert versions
    for version in versions:
        identity = version.tags[Tag.IDENTITY]
        run = client.get_run(version.run_id)
        assert run.data.tags[Tag.ROLE] == "variant"
        assert run.data.tags[Tag.IDENTITY] == identity
        assert run.data.tags[Tag.VARIANT] == version.tags[Tag.VARIANT]
        assert stored_variants(study["weak"])[identity].info.run_id == version.run_id


def test_given_an_unchanged_sweep_when_promoted_again_then_nothing_is_registered_or_moved(study):
    from mlflow.tracking import MlflowClient

    from vaeops.steps.promote import promote

    client = MlflowClient()
    promote(study["strong"])
    versions = {v.version for v in client.search_model_versions(f"name='{NAME}'")}
    champion = client.get_model_version_by_alias(NAME, "champion").version

    again = promote(study["strong"])

    assert {v.version for v in client.search_model_versions(f"name='{NAME}'")} == versions
    assert client.get_model_version_by_alias(NAME, "champion").version == champion
    assert again["decision"] == "kept"
    assert again["champion"]["version"] == int(champion)


def test_bad_registry_uri_is_one_clear_error(study, tmp_path):
    from vaeops.registry import RegistryError, pull

    with pytest.raises(RegistryError, match=f"cannot resolve models:/{NAME}@nope"):
        pull(f"models:/{NAME}@nope", tmp_path / "pulled")
    with pytest.raises(RegistryError, match=f"registered models: .*{NAME}"):
        pull("models:/no-such-model/1", tmp_path / "pulled")
    assert not (tmp_path / "pulled").exists()


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
    from vaeops.steps.promote import promote

    promote(study["weak"])  # a champion, whatever ran before
    images = load_split(study["strong"].paths.splits, "test").images[:3].flatten(1).numpy()
    np.save(tmp_path / "images.npy", images)
    script = LOADER.format(
        src=str(REPO_SRC), uri=f"models:/{NAME}@champion", images=str(tmp_path / "images.npy")
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


def test_champion_carries_only_the_modules_its_entry_file_imports(study, tmp_path):
    """Given the champion, when pulled, then its code folder holds the import closure of the
    models-from-code entry file and nothing else: no CLI, steps or tracking."""
    from vaeops.provenance import PACKAGE_DIR, import_closure, module_file
    from vaeops.registry import MODEL_ENTRY, pull
    from vaeops.steps.promote import promote

    promote(study["weak"])  # a champion, whatever ran before
    local = pull(f"models:/{NAME}@champion", tmp_path / "pulled")

    package = local / "code" / "vaeops"
    carried = {path.relative_to(package) for path in package.rglob("*.py")}
    closure = {module_file(name).relative_to(PACKAGE_DIR) for name in import_closure(MODEL_ENTRY)}
    assert carried == closure
    assert {Path("pyfunc_entry.py"), Path("serving.py"), Path("models/autoencoder.py")} <= carried
    assert not {Path("cli.py"), Path("tracking.py"), Path("registry.py")} & carried
    assert not (package / "steps").exists()


def test_pull_downloads_a_loadable_model(study, tmp_path):
    import mlflow

    from vaeops.registry import pull
    from vaeops.steps.promote import promote

    promote(study["weak"])  # a champion, whatever ran before
    local = pull(f"models:/{NAME}@champion", tmp_path / "pulled")
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
    from vaeops.steps.generate import generate_batch
    from vaeops.steps.promote import promote

    params = study["strong"]
    promote(params)  # a champion, whatever ran before
    digits = (load_split(params.paths.splits, "test").images[:40, 0] * 255).byte().numpy()
    np.save(tmp_path / "digits.npy", digits)
    result = generate_batch(
        params, f"models:/{NAME}@champion", tmp_path / "gen", 12, tmp_path / "digits.npy"
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
    champion = MlflowClient().get_model_version_by_alias(NAME, "champion")
    assert run.data.tags["vaeops.model_version"] == champion.version
    artifacts = {item.path for item in MlflowClient().list_artifacts(result["run_id"])}
    assert {"samples.png", "reconstructions.png", "interpolations.png", "arrays.npz"} <= artifacts


def test_given_a_conv_study_when_trained_evaluated_and_promoted_then_the_champion_reconstructs(
    mlflow_server, tmp_path, make_study, run_study
):
    """The conv architecture end to end: train, evaluate, register and promote a tiny conv sweep,
    then load its champion as a consumer does and reconstruct images."""
    import mlflow

    from vaeops.data.splits import load_split
    from vaeops.steps.promote import promote

    params = make_study(
        tmp_path / "conv",
        model={"architecture": "conv", "hidden": [16], "latent": 2},
        train={"epochs": 1},
        sweep={"activations": ["elu"], "seeds": [0]},
        evaluate={"iwae_samples": 4},
        tracking={"experiment": "conv-study"},
        promote={"registered_model": "vae-conv"},
    )
    run_study(params)

    decision = promote(params)

    assert decision["decision"] == "promoted"
    assert decision["candidate"]["variant"] == "vae-elu-s0"  # the AE has no IWAE bound
    assert decision["registered_versions"] == 2  # the VAE and the AE baseline
    model = mlflow.pyfunc.load_model("models:/vae-conv@champion")
    images = load_split(params.paths.splits, "val").images[:5].flatten(1).numpy()
    reconstructions = model.predict(images)
    assert reconstructions.shape == (5, 784)
    assert reconstructions.dtype == np.float32
    assert reconstructions.min() >= 0 and reconstructions.max() <= 1
    assert not np.allclose(reconstructions[0], reconstructions[1])  # depends on the input
    assert model.predict(images, params={"mode": "encode"}).shape == (5, 2)
