"""`python -m benchmarks pipeline`: the default `dvc repro` in a scratch copy, timed by itself.

Every figure is wall-clock time measured here, never read from the steps' outputs (no file DVC
tracks holds a time). Each `dvc repro` is timed as a whole, and split per stage by the moment
DVC announces each stage ("Running stage 'train':") on its output, as it arrives.

In order, in the scratch copy:
1. the full default `dvc repro` (every variant trained: the scratch store is empty),
2. one activation (`softplus`) taken out of `sweep.activations`, its variants deleted from the
   scratch MLflow store and DVC's run-cache emptied (as if never run), and the `dvc repro`
   that follows,
3. that activation appended again, and the `dvc repro` it causes: what adding an activation to
   the study costs (its 3 variants trained, the 36 others restored from the store),
4. the no-op `dvc repro` right after (DVC's fixed cost: hashing, locking, status),
then the start-up costs a stage pays (`vaeops --help`, fresh-interpreter imports), MLflow's
per-epoch logging, and the train-only sweep time against the number of variants.

The scratch copy is the working tree (tracked and untracked, not ignored, files) plus the data
folder, with its own MLflow store and DVC cache, so nothing of the project's outputs, mlruns or
cache is read or written.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from benchmarks import load_average

STAGE_MARKER = re.compile(r"Running stage '([^']+)'")
# The activation left out of the first repro and appended for the second: the last of the
# default list, so the second repro ends with exactly the default sweep.
ADDED_ACTIVATION = "softplus"
# One-off import costs a pipeline stage can pay, measured in fresh interpreters.
IMPORT_PROBES = {
    "python": "pass",
    "vaeops_cli": "import vaeops.cli",
    "torch": "import torch",
    "torch_dynamo": "import torch, torch._dynamo",
    "mlflow": "import mlflow",
    "train_step": "import vaeops.steps.train, vaeops.tracking",
}


@dataclass
class StageTiming:
    name: str
    wall_seconds: float = 0.0


def bench_environment(scratch: Path) -> dict[str, str]:
    """The venv's tools first on PATH, MLflow pointed at the scratch store, telemetry off."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch / 'mlruns' / 'mlflow.db'}"
    env |= {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    return env


def project_files(project: Path) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [name for name in listed.split("\0") if name]


def copy_project(project: Path, scratch: Path) -> None:
    """The working tree and the data folder into `scratch`, made a git repo of its own (DVC needs
    an SCM; nothing is committed)."""
    for name in project_files(project):
        source = project / name
        if source.is_file():  # a file deleted in the working tree is still listed by git
            target = scratch / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    data = yaml.safe_load((project / "params.yaml").read_text())["paths"]["data"]
    shutil.copytree(project / data, scratch / data, dirs_exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=scratch, check=True)


def run_streaming(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, list]:
    """Run `command`, timestamping each output line as it arrives; (wall seconds, lines)."""
    started = time.perf_counter()
    lines: list[tuple[float, str]] = []
    with subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        for line in process.stdout:
            lines.append((time.perf_counter() - started, line.rstrip("\n")))
    wall = time.perf_counter() - started
    if process.returncode != 0:
        tail = "\n".join(text for _, text in lines[-30:])
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{tail}")
    return wall, lines


def split_stages(lines: list[tuple[float, str]], wall: float) -> list[StageTiming]:
    """Per stage: wall time from its 'Running stage' line to the next one (or to the end)."""
    stages: list[StageTiming] = []
    starts: list[float] = []
    for stamp, text in lines:
        marker = STAGE_MARKER.search(text)
        if marker:
            stages.append(StageTiming(marker.group(1)))
            starts.append(stamp)
    for index, stage in enumerate(stages):
        end = starts[index + 1] if index + 1 < len(starts) else wall
        stage.wall_seconds = end - starts[index]
    return stages


def timed(command: list[str], cwd: Path, env: dict[str, str], repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        seconds.append(time.perf_counter() - started)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-3000:]
            raise RuntimeError(f"{command[0]} ... failed ({done.returncode}):\n{tail}")
    return seconds


def import_costs(cwd: Path, env: dict[str, str], repeats: int = 3) -> dict[str, float]:
    """Median seconds of a fresh interpreter importing each probe (python: the bare start-up)."""
    return {
        name: statistics.median(timed([sys.executable, "-c", code], cwd, env, repeats))
        for name, code in IMPORT_PROBES.items()
    }


def mlflow_epoch_logging(scratch: Path, epochs: int = 20) -> dict[str, float]:
    """How long `tracking.log_epoch` blocks the training loop per epoch, and the final flush."""
    code = (
        "import time, statistics, mlflow\n"
        "from pathlib import Path\n"
        "from vaeops import tracking\n"
        "tracking.configure_tracking(Path.cwd()); mlflow.set_experiment('bench-logging')\n"
        "mlflow.start_run()\n"
        "metrics = {f'train/m{i}': float(i) for i in range(5)}\n"
        "metrics |= {f'val/m{i}': float(i) for i in range(5)}\n"
        "blocked = []\n"
        f"for epoch in range({epochs}):\n"
        "    started = time.perf_counter(); tracking.log_epoch(epoch + 1, metrics)\n"
        "    blocked.append(time.perf_counter() - started)\n"
        "started = time.perf_counter(); tracking.end_run(); flush = time.perf_counter() - started\n"
        "print(statistics.median(blocked), max(blocked), flush)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=scratch,
        env=bench_environment(scratch),
        capture_output=True,
        text=True,
        check=True,
    )
    median, worst, flush = (float(value) for value in result.stdout.split()[-3:])
    return {
        "log_epoch_median_ms": 1e3 * median,
        "log_epoch_max_ms": 1e3 * worst,
        "end_run_flush_ms": 1e3 * flush,
    }


def stage_kind(name: str) -> str:
    """'name@key' -> 'name': the stages of one matrix are reported together."""
    return name.split("@", 1)[0]


def stage_seconds(stages: list[StageTiming]) -> dict[str, float]:
    """Wall seconds per stage kind, in the order DVC ran them."""
    kinds: dict[str, float] = {}
    for stage in stages:
        kind = stage_kind(stage.name)
        kinds[kind] = kinds.get(kind, 0.0) + stage.wall_seconds
    return kinds


def repro(scratch: Path, env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """One `dvc repro`: its wall seconds and the seconds of each stage it ran."""
    wall, lines = run_streaming(["dvc", "repro"], scratch, env)
    return wall, stage_seconds(split_stages(lines, wall))


@contextlib.contextmanager
def scratch_copy(project: Path, keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        copy_project(project, keep)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="vaeops-bench-pipeline-") as folder:
        copy_project(project, Path(folder))
        yield Path(folder)


def edit_sweep(scratch: Path, **changes) -> None:
    """Set keys of `sweep` in the scratch copy's params.yaml (DVC compares values, not text)."""
    path = scratch / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["sweep"] |= changes
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def sweep_activations(scratch: Path) -> list[str]:
    return yaml.safe_load((scratch / "params.yaml").read_text())["sweep"]["activations"]


def without(activations: list[str], name: str) -> list[str]:
    """`activations` less `name`, which it must hold: the benchmark adds it back later."""
    if name not in activations:
        raise ValueError(f"sweep.activations {activations} lacks {name!r}, the one to add back")
    return [activation for activation in activations if activation != name]


def forget_trained(scratch: Path, env: dict[str, str], activation: str | None = None) -> None:
    """Delete trained variants (all, or one activation's) from the scratch copy's outputs and
    its MLflow store, so that the next run trains them instead of restoring them."""
    from mlflow.tracking import MlflowClient

    paths = yaml.safe_load((scratch / "params.yaml").read_text())["paths"]
    for key in ("variants", "checkpoints"):
        shutil.rmtree(scratch / paths[key], ignore_errors=True)
    # DVC's run-cache would restore the stages of a sweep it ran before instead of running them.
    shutil.rmtree(scratch / ".dvc" / "cache" / "runs", ignore_errors=True)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    query = "tags.`vaeops.role` = 'variant'"
    if activation is not None:
        query += f" and tags.`vaeops.activation` = '{activation}'"
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    for run in client.search_runs(experiments, filter_string=query, max_results=10_000):
        client.delete_run(run.info.run_id)


# The Prefect fan-out of the study flow (vaeops.orchestration.train_all), inside a flow so that its
# pool workers share the flow's API server instead of each starting a temporary one.
PARALLEL_TRAIN = (
    "from prefect import flow\n"
    "from vaeops.config import load_params\n"
    "from vaeops.orchestration import train_all\n"
    "from vaeops.steps.train import open_study\n"
    "@flow(name='bench-train-fan-out')\n"
    "def fan_out():\n"
    "    params = load_params()\n"
    "    return train_all(params, open_study(params))\n"
    "fan_out()\n"
)


def sweep_scaling(scratch: Path, env: dict[str, str], counts: list[int]) -> list[dict]:
    """Train-only wall time of N activations (+ the AE baseline): `dvc repro train` (one process,
    variants in sequence) vs the Prefect fan-out (a pool of processes)."""
    activations = sweep_activations(scratch)
    rows = []
    for count in counts:
        # One seed of the first N activations: N VAE variants and the AE baseline.
        edit_sweep(scratch, activations=activations[:count], seeds=[0])
        forget_trained(scratch, env)
        sequential = timed(["dvc", "repro", "train"], scratch, env, 1)[0]
        forget_trained(scratch, env)
        parallel = timed([sys.executable, "-c", PARALLEL_TRAIN], scratch, env, 1)[0]
        rows.append(
            {
                "variants": count + 1,
                "sequential_dvc_seconds": sequential,
                "parallel_prefect_seconds": parallel,
                "speedup": sequential / parallel,
            }
        )
    return rows


def study_repros(scratch: Path, env: dict[str, str]) -> dict:
    """The full repro, the repro after adding an activation never trained, the no-op repro."""
    activations = sweep_activations(scratch)
    full, full_stages = repro(scratch, env)
    edit_sweep(scratch, activations=without(activations, ADDED_ACTIVATION))
    forget_trained(scratch, env, ADDED_ACTIVATION)
    removed, _ = repro(scratch, env)
    edit_sweep(scratch, activations=activations)
    added, added_stages = repro(scratch, env)
    noop = timed(["dvc", "repro"], scratch, env, 3)
    return {
        "full_repro_seconds": full,
        "full_repro_stage_seconds": full_stages,
        "remove_one_activation_seconds": removed,
        "added_activation": ADDED_ACTIVATION,
        "add_one_activation_seconds": added,
        "add_one_activation_stage_seconds": added_stages,
        "add_one_over_full": added / full,
        "noop_repro_seconds": statistics.median(noop),
        "noop_repro_runs": noop,
    }


def bench_pipeline(project: Path, keep: Path | None = None, sweep_counts=(1, 2, 4)) -> dict:
    """The figures of `python -m benchmarks pipeline` (see the module docstring)."""
    project = Path(project).resolve()
    figures: dict = {"benchmark": "pipeline", "load_average_before": load_average()}
    with scratch_copy(project, keep) as scratch:
        env = bench_environment(scratch)
        figures["scratch"] = str(scratch)
        figures |= study_repros(scratch, env)
        helps = timed(["vaeops", "--help"], scratch, env, 5)
        figures["help_seconds"] = {"median": statistics.median(helps), "runs": helps}
        figures["import_seconds"] = import_costs(scratch, env)
        figures["mlflow_logging"] = mlflow_epoch_logging(scratch)
        if sweep_counts:
            figures["sweep_scaling"] = sweep_scaling(scratch, env, list(sweep_counts))
    figures["cpu_count"] = os.cpu_count()
    return figures | {"load_average_after": load_average()}
