"""The train and evaluate steps' MLflow records on a real sqlite store under tmp: runs and their
lineage, the store of trained variants (incremental sweeps), and resuming an interrupted fit."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def sqlite_store(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"


def experiment_runs(params) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    return client.search_runs([experiment.experiment_id], max_results=1000)


def stored_run(params, summary: dict):
    """The MLflow run that holds a trained variant (found by its identity, as the steps do)."""
    from vaeops.tracking import stored_variants

    run = stored_variants(params).get(summary["identity"])
    assert run is not None, f"{summary['variant']} is not stored"
    return run


def versioned_with_git_and_dvc(folder: Path) -> str:
    """Make `folder` a git repository with one commit and `dvc add` its data/; the commit."""

    def run(*args: str) -> str:
        done = subprocess.run(args, cwd=folder, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    run("git", "init", "-q")
    run(str(BIN / "dvc"), "init", "-q")
    run(str(BIN / "dvc"), "add", "-q", "data")
    run(
        "git",
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "s",
    )
    return run("git", "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, make_study, track_with):
    """The tiny study (1 epoch), versioned by git and DVC, trained and evaluated once against
    its own sqlite store, which stays current for the module."""
    from vaeops.steps.evaluate import evaluate_sweep
    from vaeops.steps.train import train_sweep
    from vaeops.variants import sweep_variants

    folder = tmp_path_factory.mktemp("tracked-study")
    with pytest.MonkeyPatch.context() as patch:
        track_with(sqlite_store(folder), patch)
        params = make_study(folder, train={"epochs": 1})
        commit = versioned_with_git_and_dvc(folder)
        summaries = train_sweep(params, sweep_variants(params))
        evaluations = evaluate_sweep(params, sweep_variants(params))
        yield {
            "params": params,
            "summaries": summaries,
            "evaluations": evaluations,
            "commit": commit,
        }


@pytest.fixture
def fresh_study(tmp_path, make_study, track_with, monkeypatch):
    """A prepared tiny study (no data.dvc) with an empty sqlite store of its own, for one test."""
    track_with(sqlite_store(tmp_path), monkeypatch)
    return make_study(tmp_path)


def test_given_a_sweep_when_trained_then_each_variant_is_a_stored_child_of_one_study_run(
    trained,
):
    from mlflow.tracking import MlflowClient

    from vaeops.steps.train import checkpoint_path
    from vaeops.tracking import Tag

    params, summaries = trained["params"], trained["summaries"]
    assert [s["variant"] for s in summaries] == ["vae-relu-s0", "vae-tanh-s0", "ae-relu-s0"]
    assert not any(s["restored"] for s in summaries)
    runs = [stored_run(params, summary) for summary in summaries]
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert [run.data.tags[Tag.VARIANT] for run in runs] == [s["variant"] for s in summaries]
    parents = {run.data.tags["mlflow.parentRunId"] for run in runs}
    assert len(parents) == 1
    study = MlflowClient().get_run(parents.pop())
    assert study.data.tags[Tag.ROLE] == "sweep"
    assert study.info.status == "FINISHED"  # closed when the step ended
    # train.json holds no run id or timing (the same computation gives the same bytes) ...
    assert not {"run_id", "train_seconds", "seconds"} & set(summaries[0])
    # ... the run has the timing, and a finished variant leaves no resume state behind
    assert all(run.data.metrics["train_seconds"] > 0 for run in runs)
    assert not any(checkpoint_path(params, s["identity"]).exists() for s in summaries)


def test_given_a_trained_sweep_when_trained_again_then_every_variant_is_restored_unchanged(
    trained,
):
    """Given every variant stored, when the same sweep trains again, then each is restored from
    its run: the same weights to the byte, and no new MLflow run."""
    from vaeops.checkpoints import WEIGHTS_FILE
    from vaeops.steps.train import train_sweep
    from vaeops.variants import sweep_variants

    params = trained["params"]
    variants = sweep_variants(params)
    weights = {v.name: (v.train_dir(params) / WEIGHTS_FILE).read_bytes() for v in variants}
    runs_before = {run.info.run_id for run in experiment_runs(params)}

    again = train_sweep(params, variants)

    assert [summary["restored"] for summary in again] == [True] * len(variants)
    for variant in variants:
        assert (variant.train_dir(params) / WEIGHTS_FILE).read_bytes() == weights[variant.name]
    assert {run.info.run_id for run in experiment_runs(params)} == runs_before
    assert [s["identity"] for s in again] == [s["identity"] for s in trained["summaries"]]


def test_given_a_trained_sweep_when_an_activation_is_added_then_only_it_trains_in_the_same_study(
    trained,
):
    from vaeops.config import load_params
    from vaeops.steps.train import train_sweep
    from vaeops.variants import Variant, sweep_variants

    params = trained["params"]
    path = params.root / "params.yaml"
    original = path.read_text()
    raw = yaml.safe_load(original)
    raw["sweep"]["activations"] = ["relu", "tanh", "gelu"]
    path.write_text(yaml.safe_dump(raw))
    try:
        widened = load_params(path)
        summaries = {s["variant"]: s for s in train_sweep(widened, sweep_variants(widened))}
    finally:
        path.write_text(original)

    assert {name for name, s in summaries.items() if not s["restored"]} == {"vae-gelu-s0"}
    new = stored_run(widened, summaries[Variant("vae", "gelu", 0).name])
    old = stored_run(params, trained["summaries"][0])
    assert new.data.tags["mlflow.parentRunId"] == old.data.tags["mlflow.parentRunId"]


def last_epoch(train_dir: Path) -> dict[str, float]:
    with (train_dir / "history.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: float(value) for key, value in rows[-1].items()}


def test_given_a_trained_variant_when_evaluated_then_its_deterministic_metric_matches_training(
    trained,
):
    """The analytic KL of a VAE and the reconstruction of the AE depend on the weights alone: the
    evaluate step, on the stored model, must find what training recorded after its last epoch
    (up to summation order: the two steps use different batch sizes)."""
    from vaeops.outputs import EVAL_FILE, TRAIN_FILE, read_json
    from vaeops.variants import sweep_variants

    params = trained["params"]
    for variant in sweep_variants(params):
        metric = "val/kl" if variant.kind == "vae" else "val/reconstruction"
        history = last_epoch(variant.train_dir(params))
        summary = read_json(variant.train_dir(params) / TRAIN_FILE)
        evaluation = read_json(variant.eval_dir(params) / EVAL_FILE)

        assert summary[metric] == pytest.approx(history[metric], rel=1e-12), variant.name
        assert evaluation[metric] == pytest.approx(history[metric], rel=1e-5), variant.name
        assert history[metric] > 0


def test_given_a_trained_sweep_when_its_runs_are_read_then_they_carry_source_and_commit(trained):
    from mlflow.tracking import MlflowClient

    from vaeops.tracking import Tag

    variant_run = stored_run(trained["params"], trained["summaries"][0])
    study_run = MlflowClient().get_run(variant_run.data.tags["mlflow.parentRunId"])

    for run in (variant_run, study_run):
        assert run.data.tags["mlflow.source.name"] == "vaeops train"
        assert run.data.tags["mlflow.source.git.commit"] == trained["commit"]
        assert run.data.tags[Tag.GIT_COMMIT] == trained["commit"]


def test_given_a_trained_variant_when_its_inputs_are_read_then_they_name_the_versioned_data(
    trained,
):
    params = trained["params"]
    (out,) = yaml.safe_load(params.paths.data_dvc.read_text())["outs"]
    run = stored_run(params, trained["summaries"][0])

    inputs = {
        tag.value: item.dataset
        for item in run.inputs.dataset_inputs
        for tag in item.tags
        if tag.key == "mlflow.data.context"
    }
    # train and validation from the fit, validation and test from the evaluation
    assert set(inputs) == {"train", "validation", "test"}
    for context, dataset in inputs.items():
        assert dataset.name == f"{params.data.dataset}/{context}"
        assert dataset.digest == out["md5"]
    assert run.data.tags["vaeops.data_version"] == out["md5"]


def test_given_a_diverging_variant_when_trained_then_it_is_stored_diverged_in_a_failed_run(
    fresh_study,
):
    """Given a loss ceiling no model meets, when a variant trains, then it reports diverged
    without raising and its MLflow run ends FAILED with the reason as a tag."""
    from vaeops.steps.train import train_sweep
    from vaeops.variants import Variant

    params = fresh_study.model_copy(
        update={"train": fresh_study.train.model_copy(update={"max_loss": 1e-3})}
    )

    (summary,) = train_sweep(params, [Variant("vae", "exp", 0)])

    assert summary["diverged"] is True
    assert "exceeded train.max_loss" in summary["failure_reason"]
    run = stored_run(params, summary)
    assert run.info.status == "FAILED"
    assert "diverged" in run.data.tags["vaeops.failure_reason"]
    assert run.data.tags["vaeops.activation"] == "exp"


def test_given_interrupted_training_when_run_again_then_it_resumes_in_the_same_run(fresh_study):
    """Given `vaeops train` interrupted (SIGINT) after some epochs, when it is run again, then it
    continues from the checkpoint in the same MLflow run and logs every epoch exactly once."""
    from mlflow.tracking import MlflowClient

    from vaeops.config import load_params
    from vaeops.identity import variant_identity
    from vaeops.steps.train import checkpoint_path
    from vaeops.variants import Variant

    path = fresh_study.root / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["train"]["epochs"] = 8
    path.write_text(yaml.safe_dump(raw))
    params = load_params(path)
    relu = Variant("vae", "relu", 0)
    command = [str(BIN / "vaeops"), "train", "--kind", "vae", "--activation", "relu"]
    command += ["--seed", "0", "--params", str(path)]
    state = checkpoint_path(params, variant_identity(params, relu))
    # A shell's background job inherits SIGINT ignored, and so would the child: Python then never
    # raises KeyboardInterrupt. Any handler in this process is reset to the default at exec.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            command, cwd=params.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    while not state.exists() and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()[-2000:]
    assert b"resumes from the last finished epoch" in stderr

    finished = subprocess.run(command, cwd=params.root, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    (summary,) = [json.loads(line) for line in finished.stdout.splitlines() if line[:1] == "{"]
    assert summary["restored"] is False and summary["epochs"] == 8
    runs = [run for run in experiment_runs(params) if run.data.tags.get("vaeops.role") == "variant"]
    assert len(runs) == 1
    history = MlflowClient().get_metric_history(runs[0].info.run_id, "train/loss")
    assert sorted(point.step for point in history) == list(range(1, 9))
    assert stored_run(params, summary).info.run_id == runs[0].info.run_id
    assert not state.exists()
