"""A real `dvc repro` of the whole pipeline on a tiny params file in a temporary git repo."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TINY = {
    "model": {"hidden": [32], "latent": 4},
    "train": {"epochs": 2, "device": "cpu"},
    "sweep": {"activations": ["relu", "tanh"], "seeds": [0]},
    "evaluate": {"iwae_samples": 8},
    "generate": {"n_samples": 16, "interpolation_pairs": 2},
}
VARIANTS = {"vae-relu-s0", "vae-tanh-s0", "ae-relu-s0"}


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        # the project copy's own code, whatever the venv's editable install points at
        env=os.environ
        | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(cwd / "src")},
    )
    assert result.returncode == 0, (
        f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A fresh git + DVC project: the repo's pipeline and code, a tiny params file, the 5k data."""
    root = tmp_path_factory.mktemp("project")
    for name in ("src", ".dvc", "dvc.yaml", ".dvcignore", ".gitignore", "pyproject.toml"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source, root / name, ignore=shutil.ignore_patterns("tmp", "cache", "__pycache__")
            )
        else:
            shutil.copy(source, root / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section] |= values
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["vaeops", "data", "fetch"], root)
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], root)
    run(["dvc", "repro"], root)
    return root


def stages_run(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_repro_writes_a_leaderboard_of_every_variant(project):
    with (project / "outputs/summary/leaderboard.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["variant"] for row in rows} == VARIANTS
    for row in rows:
        assert float(row["val/reconstruction"]) > 0
        if row["kind"] == "vae":
            assert float(row["val/iwae_nll"]) <= float(row["val/neg_elbo"]) + 1.0
    board = json.loads((project / "outputs/summary/leaderboard.json").read_text())
    assert board["best_config"] in {"vae-relu", "vae-tanh"}
    assert json.loads((project / "outputs/promotion.json").read_text())["decision"] == "promoted"
    for image in ("reconstructions.png", "samples.png", "interpolations.png"):
        assert (project / "outputs/generated" / image).stat().st_size > 0


def test_metrics_and_plots_show_the_study(project):
    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    files = next(iter(metrics.values()))["data"]
    assert "vae-relu-s0" in files["outputs/evaluation.json"]["data"]
    assert files["outputs/summary/leaderboard.json"]["data"]["variants"] == 3
    plots = json.loads(run(["dvc", "plots", "show", "--json"], project).stdout)
    assert not plots.get("errors")
    curves = plots["data"]["outputs/summary/learning_curves.csv"][0]["content"]
    assert {point["config"] for point in curves["data"]["values"]} == {"vae-relu", "vae-tanh"}
    assert curves["encoding"]["color"]["field"] == "config"  # one line per config
    run(["dvc", "plots", "show", "-o", "plots"], project)
    assert (project / "plots/index.html").stat().st_size > 0


def test_mlflow_has_one_parent_with_a_child_per_variant(project):
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlruns/mlflow.db'}")
    experiment = client.get_experiment_by_name("vae-activation-study")
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if run.data.tags.get("vaeops.role") == "sweep"]
    children = [run for run in runs if run.data.tags.get("vaeops.role") == "variant"]
    assert len(parents) == 1
    assert {child.data.tags["vaeops.variant"] for child in children} == VARIANTS
    data_md5 = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    commit = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    for child in children:
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tags["vaeops.data_version"] == data_md5
        assert tags["vaeops.git_commit"] == commit
        assert child.info.status == "FINISHED"
        assert "val/reconstruction" in child.data.metrics
        history = client.get_metric_history(child.info.run_id, "train/loss")
        assert [point.step for point in history] == [1, 2]
        images = {item.path for item in client.list_artifacts(child.info.run_id, "images")}
        assert images == {"images/reconstructions.png", "images/samples.png"}
    assert mlflow.get_tracking_uri()  # the test itself left the global URI alone


def test_second_repro_does_nothing_and_one_param_reruns_only_its_dependents(project):
    again = run(["dvc", "repro"], project)
    assert stages_run(again.stdout) == set()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["iwae_samples"] = 9
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = run(["dvc", "repro"], project)
    assert "evaluate" in stages_run(changed.stdout)
    assert not any(stage.startswith("train") for stage in stages_run(changed.stdout))


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
