"""A real `dvc repro` of the whole pipeline on a tiny params file in a temporary git repo, and the
researcher's loop around it: edit -> `dvc repro` / `dvc exp run` -> compare.

The tests share one project and run in file order; each leaves it committed and up to date.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
TINY = {
    "model": {"hidden": [32], "latent": 4},
    "train": {"epochs": 2, "device": "cpu"},
    "sweep": {"activations": ["relu", "tanh"], "seeds": [0]},
    "evaluate": {"iwae_samples": 8},
    "generate": {"n_samples": 16, "interpolation_pairs": 2},
    "classifier": {"epochs": 1},
    "sample_quality": {"n_samples": 100},
    "claims": {"beta_activations": ["relu"], "betas": [2.0], "dropouts": [0.3], "latents": [2]},
}
VARIANTS = {"vae-relu-s0", "vae-tanh-s0", "ae-relu-s0"}
CLAIM_POINTS = {"vae-relu-s0-beta2", "vae-relu-s0-dropout0.3", "vae-relu-s0-latent2"}
STAGES = {
    "prepare",
    "train",
    "evaluate",
    "summarize",
    "claim_sweeps",
    "classifier",
    "sample_quality",
    "promote",
    "generate",
    "report",
}
VERDICTS = {"supported", "not supported", "inconclusive"}


def environment(project: Path) -> dict[str, str]:
    # the project copy's own code, whatever the venv's editable install points at
    env = os.environ | {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(project / "src"),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run(command: list[str], cwd: Path, project: Path | None = None, check: bool = True):
    result = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env=environment(project or cwd),
    )
    if check:
        assert result.returncode == 0, (
            f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def commit(project: Path, message: str) -> None:
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], project)


def edit_params(project: Path, section: str, **values) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[section] |= values
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stages_run(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def stale_stages(project: Path) -> set[str]:
    status = json.loads(run(["dvc", "status", "--json"], project).stdout)
    return {name.removeprefix("dvc.yaml:") for name in status}


def mlflow_client(project: Path):
    from mlflow.tracking import MlflowClient

    # The registry URI too: an earlier test's configure_tracking set MLflow's process-wide one.
    store = f"sqlite:///{project / 'mlruns/mlflow.db'}"
    return MlflowClient(store, registry_uri=store)


def study_runs(project: Path) -> list:
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("vae-activation-study")
    return client.search_runs([experiment.experiment_id])


def registered_versions(project: Path) -> list:
    return mlflow_client(project).search_model_versions("name='vae-mnist'")


@pytest.fixture(scope="module")
def project(tmp_path_factory, new_dvc_project) -> Path:
    """A fresh clone-like project (tiny params, the 5k digits), reproduced once and committed."""
    root = tmp_path_factory.mktemp("project")
    new_dvc_project(root, TINY)
    run(["dvc", "repro"], root)
    commit(root, "study")
    return root


def test_repro_writes_a_leaderboard_of_every_variant(project):
    with (project / "outputs/summary/leaderboard.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["variant"] for row in rows} == VARIANTS
    for row in rows:
        assert float(row["val/reconstruction"]) > 0
        if row["kind"] == "vae":
            assert float(row["val/iwae_nll"]) <= float(row["val/neg_elbo"]) + 1.0
    study = json.loads((project / "metrics/study.json").read_text())
    assert study["best"]["config"] in {"vae-relu", "vae-tanh"}
    assert set(study["per_config"]) == {"vae-relu", "vae-tanh"}
    promotion = json.loads((project / "metrics/promotion.json").read_text())
    assert promotion["decision"] == "promoted"
    assert promotion["champion"]["version"] == promotion["candidate"]["version"]
    for image in ("reconstructions.png", "samples.png", "interpolations.png"):
        assert (project / "outputs/generated" / image).stat().st_size > 0


def test_a_fresh_clone_reproduces_byte_identical_files_and_its_own_champion(project, tmp_path):
    # Given a clone of the committed study (dvc.lock, metrics and plots in git; no store)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path, project)
    run(["vaeops", "data", "fetch"], clone)
    # When it reproduces, Then promote runs (its registry is empty) and so does the batch job
    assert {"train", "promote", "generate"} <= stages_run(run(["dvc", "repro"], clone).stdout)
    champion = mlflow_client(clone).get_model_version_by_alias("vae-mnist", "champion")
    assert (
        champion.tags["vaeops.variant"]
        == json.loads((clone / "metrics/promotion.json").read_text())["candidate"]["variant"]
    )
    # And every file git and DVC track came out byte-identical: no timestamps, no timings
    assert run(["git", "status", "--porcelain"], clone).stdout == ""


def test_lock_metrics_and_plots_are_versioned_by_git_and_hold_no_timings(project):
    tracked = set(run(["git", "ls-files"], project).stdout.split())
    assert {
        "dvc.lock",
        "metrics/study.json",
        "metrics/promotion.json",
        "metrics/variants.json",
    } <= (tracked)
    assert {"plots/comparison.csv", "plots/learning_curves.csv"} <= tracked
    for path in [*(project / "metrics").iterdir(), *(project / "outputs/variants").rglob("*.json")]:
        assert "seconds" not in path.read_text(), path


def test_metrics_and_plots_show_the_study(project):
    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    files = next(iter(metrics.values()))["data"]
    assert set(files) == {
        "metrics/study.json",
        "metrics/promotion.json",
        "metrics/classifier.json",
        "metrics/claims.json",
    }
    assert files["metrics/study.json"]["data"]["variants"] == 3
    claims = files["metrics/claims.json"]["data"]
    assert len(claims) == 7 and {claim["verdict"] for claim in claims.values()} <= VERDICTS
    detail = json.loads(
        run(["dvc", "metrics", "show", "--json", "metrics/variants.json"], project).stdout
    )
    assert "vae-relu-s0" in next(iter(detail.values()))["data"]["metrics/variants.json"]["data"]
    plots = json.loads(run(["dvc", "plots", "show", "--json"], project).stdout)
    assert not plots.get("errors")
    curves = plots["data"]["plots/learning_curves.csv"][0]["content"]
    assert {point["config"] for point in curves["data"]["values"]} == {"vae-relu", "vae-tanh"}
    assert curves["encoding"]["color"]["field"] == "config"  # one line per config
    rate_distortion = plots["data"]["plots/rate_distortion.csv"][0]["content"]["data"]["values"]
    assert {(point["config"], float(point["beta"])) for point in rate_distortion} == {
        ("vae-relu", 1.0),
        ("vae-relu", 2.0),
    }
    assert (project / "reports" / "study.html").read_text().count("<img") > 0


def test_mlflow_has_one_study_run_with_a_child_per_variant(project):
    runs = study_runs(project)
    parents = [run for run in runs if run.data.tags.get("vaeops.role") == "sweep"]
    children = [run for run in runs if run.data.tags.get("vaeops.role") == "variant"]
    assert len(parents) == 1
    assert parents[0].info.end_time - parents[0].info.start_time > 1000  # spans the pipeline
    assert {child.data.tags["vaeops.variant"] for child in children} == VARIANTS | CLAIM_POINTS
    data_md5 = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    commit_of_run = run(["git", "rev-parse", "HEAD~1"], project).stdout.strip()
    client = mlflow_client(project)
    for child in children:
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tags["vaeops.data_version"] == data_md5
        assert tags["mlflow.source.git.commit"] == commit_of_run
        assert tags["mlflow.source.name"] == "vaeops train"
        assert child.info.status == "FINISHED"
        assert "val/reconstruction" in child.data.metrics
        history = client.get_metric_history(child.info.run_id, "train/loss")
        assert [point.step for point in history] == [1, 2]
        inputs = {
            (item.dataset.name, item.dataset.digest, item.tags[0].value)
            for item in child.inputs.dataset_inputs
        }
        contexts = ("train", "validation", "test")
        assert inputs == {(f"mnist-5k/{context}", data_md5, context) for context in contexts}


def test_second_repro_does_nothing_and_one_param_reruns_only_its_dependents(project):
    again = run(["dvc", "repro"], project)
    assert stages_run(again.stdout) == set()
    edit_params(project, "evaluate", iwae_samples=9)
    changed = stages_run(run(["dvc", "repro"], project).stdout)
    assert "evaluate" in changed
    assert "train" not in changed
    commit(project, "iwae 9")


@pytest.mark.parametrize(
    ("module", "importers"),
    [
        ("data/splits.py", STAGES - {"summarize", "report"}),
        ("training.py", {"train", "evaluate", "claim_sweeps", "promote"}),
        ("steps/summarize.py", {"summarize"}),
    ],
)
def test_editing_a_library_module_makes_exactly_its_importers_stale(project, module, importers):
    path = project / "src/vaeops" / module
    original = path.read_text()
    path.write_text(original + "\n# an edit\n")
    try:
        assert stale_stages(project) == importers
    finally:
        path.write_text(original)
    assert stale_stages(project) == set()


def test_adding_an_activation_trains_and_registers_only_its_variant(project):
    before = {run.info.run_name: run.info.run_id for run in study_runs(project)}
    versions_before = len(registered_versions(project))
    weights = (project / "outputs/variants/vae-relu-s0/model.safetensors").read_bytes()
    edit_params(project, "sweep", activations=["relu", "tanh", "gelu"])
    output = run(["dvc", "repro"], project).stdout
    assert "1 variants trained, 3 restored from the store" in output
    after = {run.info.run_name: run.info.run_id for run in study_runs(project)}
    assert set(after) - set(before) == {"vae-gelu-s0"}  # and no new study run
    assert {name: after[name] for name in before} == before
    assert len(registered_versions(project)) == versions_before + 1
    assert (project / "outputs/variants/vae-relu-s0/model.safetensors").read_bytes() == weights
    commit(project, "gelu")


def test_code_that_retrains_identical_weights_registers_nothing_new(project):
    train_step = project / "src/vaeops/steps/train.py"
    versions_before = len(registered_versions(project))
    runs_before = len(study_runs(project))
    before = json.loads((project / "metrics/promotion.json").read_text())
    train_step.write_text(train_step.read_text() + "\n# a comment changes the code digest\n")
    output = run(["dvc", "repro"], project).stdout
    assert "4 variants trained, 0 restored from the store" in output  # new identities
    assert len(study_runs(project)) > runs_before
    assert len(registered_versions(project)) == versions_before  # same weights: same versions
    after = json.loads((project / "metrics/promotion.json").read_text())
    assert after["candidate"]["version"] == before["candidate"]["version"]
    assert after["champion"]["version"] == before["champion"]["version"]
    commit(project, "a comment in the train step")


def test_a_misspelt_section_fails_repro_with_the_key_named_before_training(project):
    (project / "params.yaml").write_text(
        (project / "params.yaml").read_text() + "trian:\n  epochs: 3\n"
    )
    try:
        failed = run(["dvc", "repro"], project, check=False)
        assert failed.returncode != 0
        assert "unknown key 'trian'; valid keys here: paths, data, prepare" in failed.stderr
        assert stages_run(failed.stdout) == {"prepare"}
    finally:
        run(["git", "checkout", "params.yaml"], project)


def test_data_that_differs_from_data_dvc_is_refused(project):
    labels = project / "data/labels-idx1-ubyte"
    original = labels.read_bytes()
    labels.write_bytes(original[:-1] + bytes([(original[-1] + 1) % 10]))
    recorded = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    try:
        failed = run(["vaeops", "train"], project, check=False)
        assert failed.returncode == 2
        (line,) = failed.stderr.strip().splitlines()
        assert recorded in line and "data.dvc records" in line
    finally:
        labels.write_bytes(original)


def test_commands_work_from_a_subfolder_and_create_nothing_outside(project, tmp_path):
    subfolder = project / "outputs/variants"
    where = run(["vaeops", "where"], subfolder, project)
    assert str(project / "metrics") in where.stdout
    assert "?workflowType=machine_learning" in where.stdout
    pulled = tmp_path / "champion"
    run(["vaeops", "pull", "models:/vae-mnist@champion", "--out", str(pulled)], subfolder, project)
    assert (pulled / "MLmodel").is_file() or any(pulled.rglob("MLmodel"))
    assert not (subfolder / "mlruns").exists()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for command in (["vaeops", "where"], ["vaeops", "pull", "models:/vae-mnist@champion"]):
        failed = run(
            [*command, "--out", "x"] if "pull" in command else command, outside, check=False
        )
        assert failed.returncode == 2
        assert "not inside a vaeops project" in failed.stderr
    assert list(outside.iterdir()) == []


def test_an_experiment_is_shown_diffed_and_applied_beside_head(project):
    run(["dvc", "exp", "run", "-n", "short", "-S", "train.epochs=1"], project)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    head = next(row for row in shown if row["rev"] != "workspace")
    experiments = {exp["name"]: exp for exp in head["experiments"] or []}
    assert "short" in experiments
    for revision in (head["data"], experiments["short"]["revs"][0]["data"]):
        study = revision["metrics"]["metrics/study.json"]["data"]
        assert study["best"]["mean"] > 0
        assert "train" in revision["params"]["params.yaml"]["data"]
    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD", "short", "--json"], project).stdout)
    assert "metrics/study.json" in diff
    plots = json.loads(run(["dvc", "plots", "diff", "HEAD", "short", "--json"], project).stdout)
    assert not plots.get("errors")
    run(["dvc", "exp", "apply", "short"], project)
    applied = json.loads((project / "metrics/study.json").read_text())
    assert (
        applied == experiments["short"]["revs"][0]["data"]["metrics"]["metrics/study.json"]["data"]
    )
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["epochs"] == 1
    run(["git", "checkout", "."], project)
    run(["dvc", "checkout"], project)


def test_queued_experiments_land_in_the_same_mlflow_store(project):
    for epochs in (3, 4):
        queue = ["dvc", "exp", "run", "--queue", "-n", f"ep{epochs}"]
        run([*queue, "-S", f"train.epochs={epochs}"], project)
    run(["dvc", "queue", "start"], project)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], project).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    assert status.count("Success") >= 2, status
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    names = {exp["name"] for row in shown for exp in row.get("experiments") or []}
    assert {"ep3", "ep4"} <= names
    baseline = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    tagged = {
        (run.data.tags.get("vaeops.dvc_experiment"), run.data.tags.get("vaeops.dvc_baseline_rev"))
        for run in study_runs(project)
        if run.data.tags.get("vaeops.role") == "variant"
    }
    assert {("ep3", baseline), ("ep4", baseline)} <= tagged
    assert not list((project / ".dvc/tmp/exps").rglob("mlflow.db"))


def test_data_is_versioned_and_round_trips_through_the_remote(project):
    """Fetching again leaves data.dvc clean (byte-stable); push then pull restores data/."""
    run(["vaeops", "data", "fetch"], project)
    status = run(["dvc", "status", "data.dvc"], project)
    assert "changed" not in status.stdout
    original = (project / "data/images-idx3-ubyte").read_bytes()
    run(["dvc", "push", "data.dvc"], project)
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc/cache")
    run(["dvc", "pull", "data.dvc"], project)
    assert (project / "data/images-idx3-ubyte").read_bytes() == original
