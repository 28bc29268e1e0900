"""The train step's MLflow records, on a real sqlite store under tmp_path."""

from __future__ import annotations

import pytest
import yaml

pytestmark = pytest.mark.integration


@pytest.fixture
def prepared(tiny_params_file, tmp_path, monkeypatch):
    """Tiny params with the data fetched and split; MLflow pointed at a store in tmp_path."""
    from vaeops.config import load_params
    from vaeops.data.sources import fetch_dataset
    from vaeops.steps.prepare import prepare

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = load_params(tiny_params_file)
    fetch_dataset("mnist-5k", params.paths.data)
    prepare(params)
    return tiny_params_file


def with_train(params_file, **train):
    from vaeops.config import load_params

    raw = yaml.safe_load(params_file.read_text())
    raw["train"] |= train
    params_file.write_text(yaml.safe_dump(raw))
    return load_params(params_file)


def test_diverged_variant_is_recorded_and_its_run_fails_with_the_reason(prepared):
    """Given a loss ceiling no model meets, when a variant trains, then it reports diverged
    without raising and its MLflow run ends FAILED with the reason as a tag."""
    from mlflow.tracking import MlflowClient

    from vaeops.steps.train import train_variant
    from vaeops.variants import Variant

    params = with_train(prepared, max_loss=1e-3)
    summary = train_variant(params, Variant("vae", "exp", 0))
    assert summary["diverged"] is True
    assert "exceeded train.max_loss" in summary["failure_reason"]
    run = MlflowClient().get_run(summary["run_id"])
    assert run.info.status == "FAILED"
    assert "diverged" in run.data.tags["vaeops.failure_reason"]
    assert run.data.tags["vaeops.activation"] == "exp"


def test_variants_of_one_sweep_share_one_parent_run(prepared):
    from mlflow.tracking import MlflowClient

    from vaeops.steps.train import checkpoint_path, train_variant
    from vaeops.training import load_checkpoint
    from vaeops.variants import Variant

    params = with_train(prepared, epochs=1)
    summaries = [train_variant(params, Variant("vae", name, 0)) for name in ("relu", "tanh")]
    client = MlflowClient()
    parents = {client.get_run(s["run_id"]).data.tags["mlflow.parentRunId"] for s in summaries}
    assert len(parents) == 1
    assert client.get_run(parents.pop()).data.tags["vaeops.role"] == "sweep"
    # a finished variant leaves no resume state behind
    assert load_checkpoint(checkpoint_path(params, Variant("vae", "relu", 0))) is None


def test_a_sweep_rerun_restores_finished_variants_from_their_checkpoints(prepared):
    """Given a sweep stopped after one finished variant (its checkpoint kept), when the sweep runs
    again, then that variant comes back from its checkpoint in the same run without another
    epoch, the others train, and no checkpoint is left once the sweep is done."""
    from mlflow.tracking import MlflowClient

    from vaeops.steps.train import checkpoint_path, train_sweep, train_variant
    from vaeops.variants import Variant, sweep_variants

    params = with_train(prepared, epochs=2)
    relu = Variant("vae", "relu", 0)
    first = train_variant(params, relu, keep_checkpoint=True)
    assert checkpoint_path(params, relu).is_file()

    summaries = train_sweep(params, sweep_variants(params))

    assert [summary["variant"] for summary in summaries] == [
        "vae-relu-s0",
        "vae-tanh-s0",
        "ae-relu-s0",
    ]
    restored = summaries[0]
    assert restored["run_id"] == first["run_id"]
    assert restored["val/neg_elbo"] == first["val/neg_elbo"]
    assert 0 < restored["train_seconds"] <= first["train_seconds"]  # the checkpointed fit time
    client = MlflowClient()
    assert [point.step for point in client.get_metric_history(first["run_id"], "train/loss")] == [
        1,
        2,
    ]
    assert client.get_run(first["run_id"]).info.status == "FINISHED"
    assert not any(checkpoint_path(params, variant).exists() for variant in sweep_variants(params))


def test_interrupted_training_resumes_in_the_same_run(prepared, tmp_path):
    """Given `vaeops train` interrupted (SIGINT) after some epochs, when it is run again, then it
    continues from the checkpoint in the same MLflow run and logs every epoch exactly once."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    from vaeops.steps.train import checkpoint_path
    from vaeops.variants import Variant

    params = with_train(prepared, epochs=30)
    command = [
        str(Path(sys.executable).with_name("vaeops")),
        "train",
        "--kind",
        "vae",
        "--activation",
        "relu",
        "--seed",
        "0",
        "--params",
        str(prepared),
    ]
    state = checkpoint_path(params, Variant("vae", "relu", 0))
    # A shell's background job inherits SIGINT ignored, and so would the child: Python then never
    # raises KeyboardInterrupt. Any handler in this process is reset to the default at exec.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    while not state.exists() and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()[-2000:]
    assert b"resumes from the last finished epoch" in stderr

    finished = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    (summary,) = [json.loads(line) for line in finished.stdout.splitlines()]  # one per variant
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])  # the store the subprocesses used
    history = client.get_metric_history(summary["run_id"], "train/loss")
    assert sorted(point.step for point in history) == list(range(1, 31))
    assert (
        len(
            client.search_runs(
                [client.get_experiment_by_name(params.tracking.experiment).experiment_id],
                filter_string="tags.`vaeops.variant` = 'vae-relu-s0'",
            )
        )
        == 1
    )
