"""Faults of the tracking server, against a real `mlflow server` that the tests kill (SIGKILL of
its process group) and start again, and promotions racing as real `vaeops promote` processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.faults.conftest import NO_HTTP_RETRIES
from tests.integration.conftest import free_loopback_port

pytestmark = pytest.mark.faults

VAEOPS = Path(sys.executable).with_name("vaeops")


def vaeops_promote(params) -> subprocess.Popen:
    command = [str(VAEOPS), "promote", "--params", str(params.root / "params.yaml")]
    return subprocess.Popen(
        command,
        cwd=params.root,
        env=os.environ | NO_HTTP_RETRIES,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=600)
    return process.returncode, stdout, stderr


def set_promote(params, **values):
    """Rewrite the study's params.yaml with these `promote` values; the loaded params."""
    from vaeops.config import load_params

    path = params.root / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["promote"] = raw.get("promote", {}) | values
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(path)


@pytest.fixture(scope="module")
def two_sweeps(killable_mlflow_server, tmp_path_factory, make_study, run_study, track_with):
    """A weak (1 epoch) and a strong (2 epochs) sweep of the same data, trained, evaluated and
    summarized against the module's server, which stays current for the module."""
    root = tmp_path_factory.mktemp("sweeps")
    with pytest.MonkeyPatch.context() as patch:
        track_with(killable_mlflow_server.url, patch)
        changes = {"evaluate": {"iwae_samples": 8}}
        sweeps = {
            name: make_study(root / name, train={"epochs": epochs}, **changes)
            for name, epochs in (("weak", 1), ("strong", 2))
        }
        for sweep in sweeps.values():
            run_study(sweep)
        yield sweeps


@pytest.fixture
def fresh_model(two_sweeps, killable_mlflow_server, track_with, monkeypatch, request):
    """The two sweeps set to promote into a registered model of this test's own (default
    margin), and the module's server current; (weak, strong, the model's name)."""
    track_with(killable_mlflow_server.url, monkeypatch)
    name = f"faults-{request.node.name[-24:]}"
    weak, strong = (
        set_promote(two_sweeps[sweep], registered_model=name, min_margin=0.5)
        for sweep in ("weak", "strong")
    )
    return weak, strong, name


def wait_for(condition, process: subprocess.Popen, what: str) -> None:
    """Poll `condition()` until it holds; fail if `process` ends first (it got past the point)."""
    while not condition():
        if process.poll() is not None:
            code, stdout, stderr = finished(process)
            pytest.fail(f"promote ended ({code}) before {what}: {stdout} {stderr[-3000:]}")
        time.sleep(0.02)


def cut_promotion_error(stderr: str) -> bool:
    """The CLI's one line (its last; MLflow logs progress above it) for a cut promotion."""
    last = stderr.splitlines()[-1]
    return last.startswith("error: tracking server http://") and "during promotion" in last


def version_count(client, name: str) -> int:
    return len(client.search_model_versions(f"name='{name}'"))


def aliases(client, name: str) -> dict[str, str]:
    return client.get_registered_model(name).aliases


def decisions_about(client, version: str, folder: Path) -> list[str]:
    """The logged decisions about `version`, oldest first, from every study run's log (a study
    run is keyed by the train code's digest, which a concurrent edit of the tree changes)."""
    from vaeops.registry import read_promotion_log

    experiment = client.get_experiment_by_name("vae-activation-study")
    sweeps = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`vaeops.role` = 'sweep'"
    )
    decisions = []
    for number, sweep in enumerate(sweeps):
        (folder / str(number)).mkdir(parents=True)
        lines = read_promotion_log(client, sweep.info.run_id, folder / str(number))
        decisions += [json.loads(line) for line in lines]
    about = [d for d in decisions if d["candidate_version"] == version]
    return [d["decision"] for d in sorted(about, key=lambda d: d["decided_at"])]


def test_given_no_tracking_server_when_a_step_starts_then_it_says_so_in_one_line_within_seconds(
    tiny_params_file,
):
    url = f"http://127.0.0.1:{free_loopback_port()}"
    env = os.environ | {"MLFLOW_TRACKING_URI": url, "VAEOPS_TRACKING_PROBE_TRIES": "3"}
    command = [str(VAEOPS), "promote", "--params", str(tiny_params_file)]
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert re.fullmatch(
        rf"error: tracking server {url} did not answer \(3 tries over [34] s\): start it, or "
        r"unset MLFLOW_TRACKING_URI to use the local store",
        line,
    ), line
    assert time.monotonic() - started < 60  # MLflow's own retries would take minutes


def test_given_the_server_killed_mid_promotion_when_restarted_and_rerun_then_it_completes(
    killable_mlflow_server, fresh_model, monkeypatch, tmp_path
):
    """Two kills of the real server during `vaeops promote`: once just after it registered a
    version, once just after it logged its decision. Each cut promotion fails with one line and
    leaves the aliases as they were; while the server is down the registry is never read as
    empty; each rerun completes, registering nothing twice, and the log keeps its history."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from vaeops import registry
    from vaeops.steps.promote import promote

    server = killable_mlflow_server
    weak, strong, name = fresh_model
    client = MlflowClient()
    champion = str(promote(weak)["champion"]["version"])  # 3 versions, @champion
    strong = set_promote(strong, min_margin=1e6)  # the strong sweep is kept as challenger first

    # 1: killed as soon as the strong sweep's first version exists
    process = vaeops_promote(strong)
    wait_for(lambda: version_count(client, name) > 3, process, "a version was registered")
    server.kill()
    code, _, stderr = finished(process)
    assert code == 2 and cut_promotion_error(stderr), stderr[-2000:]
    server.start()
    assert aliases(client, name) == {"champion": champion}
    code, _, stderr = finished(vaeops_promote(strong))
    assert code == 0, stderr[-2000:]
    assert version_count(client, name) == 6  # the cut registration was reused, not repeated
    challenger = aliases(client, name)["challenger"]
    assert aliases(client, name) == {"champion": champion, "challenger": challenger}
    assert decisions_about(client, challenger, tmp_path / "1") == ["kept"]

    # 2: with no margin, killed as soon as its decision is recorded, before any alias moves
    strong = set_promote(strong, min_margin=0.0)
    sweep_run_id = client.get_model_version(name, challenger).tags["vaeops.sweep"]
    process = vaeops_promote(strong)
    promoted_over = f"vaeops.promoted_over.{champion}"  # written after the decision's log file
    wait_for(
        lambda: promoted_over in client.get_model_version(name, challenger).tags,
        process,
        "it recorded its decision",
    )
    server.kill()
    code, _, stderr = finished(process)
    assert code == 2 and cut_promotion_error(stderr), stderr[-2000:]
    with monkeypatch.context() as down:
        for key, value in NO_HTTP_RETRIES.items():
            down.setenv(key, value)
        with pytest.raises(MlflowException):  # not "no champion": that would promote blindly
            registry.current_champion(client, name)
        with pytest.raises(MlflowException):  # not an empty log to write over the history
            registry.append_promotion_log(sweep_run_id, registry.Decision(*[""] * 11))
    server.start()
    assert aliases(client, name) == {"champion": champion, "challenger": challenger}
    code, stdout, stderr = finished(vaeops_promote(strong))
    assert code == 0 and stdout.splitlines()[-1].startswith("promoted"), stderr[-2000:]
    assert version_count(client, name) == 6
    assert aliases(client, name) == {"champion": challenger, "previous-champion": champion}
    decisions = decisions_about(client, challenger, tmp_path / "2")
    assert decisions[0] == "kept" and decisions[1:] in (["promoted"], ["promoted"] * 2)


def test_given_two_promotions_racing_then_one_consistent_champion_and_every_decision_logged(
    fresh_model,
):
    """Two `vaeops promote` processes of a weak and a strong sweep, started together: whatever
    the interleaving, the strong candidate ends as @champion, the weak one as @challenger or
    @previous-champion, both sweeps log their decisions, and rerunning changes nothing."""
    from mlflow.tracking import MlflowClient

    from vaeops.outputs import read_json
    from vaeops.registry import decision_files
    from vaeops.steps.promote import promote

    weak, strong, name = fresh_model
    client = MlflowClient()

    racing = [vaeops_promote(weak), vaeops_promote(strong)]
    for code, _, stderr in map(finished, racing):
        assert code == 0, stderr[-2000:]

    candidates = {
        label: str(read_json(study.paths.metrics / "promotion.json")["candidate"]["version"])
        for label, study in (("weak", weak), ("strong", strong))
    }
    final = aliases(client, name)
    assert final["champion"] == candidates["strong"]
    assert candidates["weak"] in (final.get("challenger"), final.get("previous-champion"))
    sweeps = {
        label: client.get_model_version(name, version).tags["vaeops.sweep"]
        for label, version in candidates.items()
    }
    assert all(decision_files(client, sweep) for sweep in sweeps.values())

    def registry_state() -> tuple:
        versions = client.search_model_versions(f"name='{name}'")
        tags = {version.version: version.tags for version in versions}
        logs = {sweep: decision_files(client, sweep) for sweep in sweeps.values()}
        return tags, aliases(client, name), logs

    before = registry_state()
    again = promote(strong)
    assert again["decision"] == "kept" and again["reason"] == "candidate is already the champion"
    assert registry_state() == before
