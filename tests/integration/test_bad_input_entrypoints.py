"""Bad input through every entry point: the real `vaeops` CLI, a real `dvc repro` and the Prefect
study flow each end with one `error: ...` line (what, where, how to fix), a non-zero exit and no
traceback, and leave the registry's champion where it was.

One small DVC project (the default dataset, tiny params, a split prepared, one tiny model
registered as @champion in its own MLflow store) serves every case; each case breaks one input
and puts it back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
NAME = "vae-mnist"
SECTIONS = {
    "model": {"hidden": [16], "latent": 2},
    "train": {"epochs": 1, "device": "cpu"},
    "sweep": {"activations": ["relu"], "seeds": [0]},
    "claims": {"seeds": [0]},
    "evaluate": {"iwae_samples": 4},
}


def run(project: Path, *command: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"} | (env or {})
    environment.pop("MLFLOW_TRACKING_URI", None)  # the project's own store, mlruns/mlflow.db
    return subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def the_error_line(done: subprocess.CompletedProcess) -> str:
    """The one `error: ` line of a failed command, which printed no traceback."""
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    return errors[0]


def champion_version(project: Path) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    return str(client.get_model_version_by_alias(NAME, "champion").version)


def register_tiny_champion(project: Path) -> None:
    """A 784-16-2 VAE logged and registered as @champion, as the promote step leaves one."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from vaeops.checkpoints import save_model
    from vaeops.models import ModelSpec, build_model
    from vaeops.registry import log_model

    uri = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        spec = ModelSpec(kind="vae", architecture="mlp", activation="relu", hidden=(16,), latent=2)
        save_model(build_model(spec), project / "tiny-model")
        with mlflow.start_run():
            model_uri = log_model(project / "tiny-model", np.zeros((2, 784), np.float32))
        version = mlflow.register_model(model_uri, NAME)
        MlflowClient().set_registered_model_alias(NAME, "champion", version.version)
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


@pytest.fixture(scope="module")
def project(tmp_path_factory, new_dvc_project) -> Path:
    root = tmp_path_factory.mktemp("bad-input")
    new_dvc_project(root, SECTIONS)
    prepared = run(root, "dvc", "repro", "prepare")
    assert prepared.returncode == 0, prepared.stderr
    register_tiny_champion(root)
    return root


@contextmanager
def replaced(path: Path, content: bytes) -> Iterator[None]:
    """`path` holds `content` inside the block and its own bytes again afterwards."""
    original = path.read_bytes()
    path.write_bytes(content)
    try:
        yield
    finally:
        path.write_bytes(original)


@contextmanager
def truncated_images(project: Path) -> Iterator[None]:
    """The pool's image file cut short, and the cut version recorded in data.dvc, as a user
    who fetched a damaged download (and `dvc repro`, which records a changed data/) leaves it."""
    images = project / "data" / "images-idx3-ubyte"
    recorded = (project / "data.dvc").read_bytes()
    with replaced(images, images.read_bytes()[:100_000]):
        assert run(project, "dvc", "add", "data").returncode == 0
        yield
    (project / "data.dvc").write_bytes(recorded)


def test_given_a_truncated_image_file_when_dvc_repro_then_one_error_line_from_prepare(project):
    splits = (project / "outputs" / "splits.npz").read_bytes()

    with truncated_images(project):
        done = run(project, "dvc", "repro", "prepare")

    line = the_error_line(done)
    assert line.startswith(f"error: {project / 'data' / 'images-idx3-ubyte'}: truncated")
    assert "dvc checkout data.dvc" in line
    assert champion_version(project) == "1"
    run(project, "dvc", "checkout", "outputs/splits.npz")  # DVC removed it before the stage ran
    assert (project / "outputs" / "splits.npz").read_bytes() == splits


def test_given_a_truncated_image_file_when_the_study_flow_runs_then_one_error_line(
    project, prefect_server
):
    with truncated_images(project):
        done = run(project, "vaeops", "flow", "study", env={"PREFECT_API_URL": prefect_server})

    line = the_error_line(done)
    assert line.startswith("error: dvc repro prepare in ")
    assert "images-idx3-ubyte: truncated" in line
    assert champion_version(project) == "1"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"train": {"epochs": 0}}, "train.epochs: Input should be greater than or equal to 1"),
        ({"train": {"epochs": 1, "batch_size": 4001}}, "train.batch_size: 4001 is larger than "
                                                       "the train split (4000 images)"),
    ],
    ids=["epochs-0", "batch-over-split"],
)  # fmt: skip
def test_given_a_bad_params_value_when_dvc_repro_then_one_error_line_naming_the_key(
    project, change, says
):
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    for section, values in change.items():
        params[section] = params[section] | values

    with replaced(params_path, yaml.safe_dump(params, sort_keys=False).encode()):
        done = run(project, "dvc", "repro", "prepare")

    assert says in the_error_line(done)
    run(project, "dvc", "checkout", "outputs/splits.npz")


@pytest.fixture
def digits_32(project) -> Path:
    path = project / "digits-32.npy"
    np.save(path, np.zeros((2, 32, 32), np.uint8))
    return path


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--model-uri", f"models:/{NAME}@nope"], f"cannot resolve models:/{NAME}@nope"),
        (["--input", "digits-32.npy"], "an array of shape (2, 32, 32); the model takes"),
    ],
    ids=["alias", "wrong-size"],
)
def test_given_a_model_or_input_that_does_not_resolve_when_generating_then_one_error_line(
    project, digits_32, args, says
):
    out = project / "generated-bad"

    done = run(project, "vaeops", "generate", "--out", str(out), *args)

    assert says in the_error_line(done)
    assert not out.exists()
    assert champion_version(project) == "1"


def test_given_an_alias_that_does_not_resolve_when_pulling_then_one_error_line_and_no_folder(
    project,
):
    out = project / "pulled-bad"

    done = run(project, "vaeops", "pull", f"models:/{NAME}@nope", "--out", str(out))

    assert f"cannot resolve models:/{NAME}@nope" in the_error_line(done)
    assert not out.exists()
    assert champion_version(project) == "1"


@pytest.fixture
def in_project(project, monkeypatch) -> Iterator[Path]:
    """The project as the working directory of this process, its own store the tracking store
    (reset afterwards: the CLI sets MLflow's process-wide URI)."""
    import mlflow

    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # main() sets it if unset
    yield project
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def main_in_process(monkeypatch, capsys, *args: str) -> str:
    """`vaeops ARGS` through the console entry point in this process (the same code as the
    subprocess, without its start-up); its one error line."""
    from vaeops import cli

    monkeypatch.setattr(sys, "argv", ["vaeops", *args])
    with pytest.raises(SystemExit) as caught:
        cli.main()
    captured = capsys.readouterr()
    done = subprocess.CompletedProcess(args, caught.value.code, captured.out, captured.err)
    return the_error_line(done)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["generate", "--model-uri", f"models:/{NAME}/99"], "version=99) not found"),
        (["generate", "--model-uri", f"models:/{NAME}"], "names no version or alias"),
        (["generate", "--model-uri", "runs:/0123abcd/model"], "Run with id=0123abcd not found"),
        (["generate", "--model-uri", "models:/m-0123abcd"], "Logged model with ID 'm-0123abcd'"),
        (["generate", "--model-uri", "no-such-model-folder"], "no such model folder"),
        (["generate", "--model-uri", "s3:/x"], "not a model URI; use models:/NAME@ALIAS"),
        (["generate", "--input", "params.yaml"], "params.yaml: not an unsigned-byte IDX file"),
        (["generate", "--input", "absent.npy"], "absent.npy: no such file or folder"),
        (["pull", "runs:/0123abcd/model", "--out", "p"], "is not a registry URI; use models:/"),
        (["pull", f"models:/{NAME}/99", "--out", "p"], "version=99) not found"),
    ],
    ids=["version", "no-version", "run", "logged-model", "folder", "scheme", "not-images",
         "no-input", "pull-run", "pull-version"],
)  # fmt: skip
def test_given_any_form_of_uri_or_input_that_does_not_resolve_then_one_error_line_exit_2(
    in_project, monkeypatch, capsys, args, says
):
    line = main_in_process(
        monkeypatch, capsys, *args, *(["--out", "gen-bad"] if args[0] == "generate" else [])
    )

    assert says in line
    assert not (in_project / "gen-bad").exists() and not (in_project / "p").exists()
    assert champion_version(in_project) == "1"


def test_given_a_corrupt_pulled_model_when_generating_then_one_error_line_naming_the_file(
    in_project, monkeypatch, capsys
):
    from vaeops.registry import pull
    from vaeops.tracking import configure_tracking

    configure_tracking(in_project)
    pulled = pull(f"models:/{NAME}@champion", in_project / "pulled")
    weights = pulled / "artifacts" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])

    line = main_in_process(
        monkeypatch, capsys, "generate", "--model-uri", str(pulled), "--out", "gen-bad"
    )

    assert line.startswith(f"error: {weights}: not readable safetensors")
    assert not (in_project / "gen-bad").exists()
    shutil.rmtree(pulled)


def test_given_good_input_when_generating_then_the_checks_let_it_through(
    in_project, monkeypatch, capsys
):
    """The other side of every check above: a registered model and real digits pass."""
    from vaeops import cli
    from vaeops.data.splits import load_split

    digits = (load_split(in_project / "outputs" / "splits.npz", "test").images[:4, 0] * 255).byte()
    np.save(in_project / "digits.npy", digits.numpy())
    monkeypatch.setattr(sys, "argv", ["vaeops", "generate", "--input", "digits.npy",
                                      "--out", "gen-ok", "--n-samples", "4"])  # fmt: skip

    with pytest.raises(SystemExit) as caught:
        cli.main()

    assert caught.value.code == 0, capsys.readouterr().err
    arrays = np.load(in_project / "gen-ok" / "arrays.npz")
    assert arrays["inputs"].shape == (4, 784) and arrays["samples"].shape == (4, 784)
    assert champion_version(in_project) == "1"
    shutil.rmtree(in_project / "gen-ok")
