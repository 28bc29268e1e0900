"""Faults during training, against real processes: a `vaeops train` killed with SIGKILL
mid-epoch, the run it leaves RUNNING, and a corrupt checkpoint."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.faults

VAEOPS = Path(sys.executable).with_name("vaeops")
EPOCHS = 8  # long enough that a kill lands between the first checkpoint and the last epoch
RELU = ["--kind", "vae", "--activation", "relu", "--seed", "0"]


def sqlite_store(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"


@pytest.fixture
def study_in(tmp_path, make_study, track_with, monkeypatch):
    """`study_in(name)`: a prepared tiny study (EPOCHS epochs) in tmp_path/name with its own
    sqlite store, made current for this process and its subprocesses; its params."""

    def make(name: str):
        folder = tmp_path / name
        track_with(sqlite_store(folder), monkeypatch)
        return make_study(folder, train={"epochs": EPOCHS})

    return make


def train_relu(params) -> subprocess.CompletedProcess:
    command = [str(VAEOPS), "train", *RELU, "--params", str(params.root / "params.yaml")]
    return subprocess.run(command, cwd=params.root, capture_output=True, text=True, timeout=600)


def summary_of(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-2000:]
    (summary,) = [json.loads(line) for line in done.stdout.splitlines() if line[:1] == "{"]
    return summary


def kill_after_first_checkpoint(params, checkpoint: Path) -> None:
    """Start `vaeops train` of the relu variant and SIGKILL it once its first epoch is saved."""
    command = [str(VAEOPS), "train", *RELU, "--params", str(params.root / "params.yaml")]
    process = subprocess.Popen(
        command, cwd=params.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while not checkpoint.exists() and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait(60) == -signal.SIGKILL  # killed, not finished before the signal


def variant_runs(params) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    return [run for run in runs if run.data.tags.get("vaeops.role") == "variant"]


def running_run_owned_by(params, owner: str) -> str:
    """A RUNNING run in the study's experiment, tagged as opened by `owner`; its id."""
    from mlflow.tracking import MlflowClient

    from vaeops.tracking import Tag, experiment_id

    experiment = experiment_id(params.tracking.experiment, params.root)
    run = MlflowClient().create_run(experiment, tags={Tag.OWNER: owner})
    return run.info.run_id


def test_given_training_killed_mid_epoch_when_rerun_then_it_resumes_to_the_uninterrupted_result(
    study_in,
):
    """SIGKILL after the first checkpoint: the next start closes the dead run KILLED (and only
    it: runs of live processes and of other hosts stay RUNNING), the rerun resumes it from the
    checkpoint, and the weights and every figure are bit-equal to an uninterrupted training."""
    from mlflow.tracking import MlflowClient

    from vaeops.checkpoints import WEIGHTS_FILE
    from vaeops.identity import file_sha256, study_key, variant_identity
    from vaeops.steps.train import checkpoint_path
    from vaeops.tracking import process_start, study_run
    from vaeops.variants import Variant

    relu = Variant("vae", "relu", 0)

    uninterrupted = study_in("uninterrupted")
    reference = summary_of(train_relu(uninterrupted))

    params = study_in("killed")
    checkpoint = checkpoint_path(params, variant_identity(params, relu))
    kill_after_first_checkpoint(params, checkpoint)
    (killed,) = variant_runs(params)
    assert killed.info.status == "RUNNING"
    with subprocess.Popen(["sleep", "60"]) as alive:
        live_owner = f"{socket.gethostname()}:{alive.pid}:{process_start(alive.pid)}"
        live_run = running_run_owned_by(params, live_owner)
        remote_run = running_run_owned_by(params, "another-host:4242:1")
        study_run(params, study_key(params), "a test")  # what every step does first
        alive.kill()

    client = MlflowClient()
    closed = client.get_run(killed.info.run_id)
    assert closed.info.status == "KILLED"
    assert "ended without closing the run" in closed.data.tags["vaeops.failure_reason"]
    assert client.get_run(live_run).info.status == "RUNNING"
    assert client.get_run(remote_run).info.status == "RUNNING"

    resumed = summary_of(train_relu(params))
    (run,) = variant_runs(params)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert "vaeops.failure_reason" not in run.data.tags
    assert resumed["epochs"] == EPOCHS and not checkpoint.exists()
    assert resumed == reference  # every figure of train.json, bit for bit
    assert file_sha256(relu.train_dir(params) / WEIGHTS_FILE) == file_sha256(
        relu.train_dir(uninterrupted) / WEIGHTS_FILE
    )


def test_given_a_corrupt_checkpoint_when_the_sweep_trains_then_it_is_set_aside_and_retrained(
    study_in,
):
    """A truncated checkpoint of one variant: one warning naming it, the file moved to
    `<name>.corrupt`, that variant trained from scratch, and the sweep goes on."""
    from vaeops.identity import variant_identity
    from vaeops.steps.train import checkpoint_path
    from vaeops.variants import Variant

    params = study_in("corrupt")
    checkpoint = checkpoint_path(params, variant_identity(params, Variant("vae", "relu", 0)))
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"PK\x03\x04 half of a zip file")

    command = [str(VAEOPS), "train", "--params", str(params.root / "params.yaml")]
    done = subprocess.run(command, cwd=params.root, capture_output=True, text=True, timeout=600)

    summaries = [json.loads(line) for line in done.stdout.splitlines() if line[:1] == "{"]
    assert done.returncode == 0, done.stderr[-2000:]
    warnings = [line for line in done.stderr.splitlines() if "CorruptCheckpointWarning" in line]
    assert len(warnings) == 1 and str(checkpoint) in warnings[0], done.stderr[-2000:]
    assert checkpoint.with_name(checkpoint.name + ".corrupt").read_bytes().startswith(b"PK")
    assert not checkpoint.exists()
    assert len(summaries) == 3 and all(s["epochs"] == EPOCHS for s in summaries), summaries
    assert os.listdir(checkpoint.parent) == [checkpoint.name + ".corrupt"]
