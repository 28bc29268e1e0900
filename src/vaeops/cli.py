"""`vaeops ...`: parse, validate, call one library function. Heavy imports happen inside commands,
so `vaeops --help` stays fast."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

app = typer.Typer(
    help="vaeops: which activation function makes the best VAE? Train, track, promote, generate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Raw datasets in data/ (versioned by DVC).", no_args_is_help=True)
app.add_typer(data_app, name="data")

PARAMS_OPTION = typer.Option(
    None, "--params", help="The params file (default: params.yaml of the project around here)."
)
TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def echo_json(payload: dict) -> None:
    typer.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))


def load(params_path: Path | None):
    from vaeops.config import load_params

    return load_params(params_path)


def params_file(params_path: Path | None) -> str:
    """The absolute path of a valid params file, for flows that load it themselves."""
    config = load(params_path)  # a bad file fails here, before Prefect starts
    return str(params_path.resolve() if params_path else config.root / "params.yaml")


def tracking_root() -> Path:
    """The project root, which only the project's local MLflow store needs: with
    MLFLOW_TRACKING_URI set, commands that only talk to MLflow work from any folder."""
    from vaeops.project import find_root

    return Path.cwd() if os.environ.get("MLFLOW_TRACKING_URI") else find_root()


@data_app.command("fetch")
def data_fetch(
    dataset: str | None = typer.Option(
        None,
        help="mnist-5k (bundled), mnist, fashion-mnist, kmnist, or idx:DIR "
        "(default: data.dataset in params.yaml).",
    ),
    root: Path | None = typer.Option(None, help="Where torchvision datasets keep raw files."),
    download: bool = typer.Option(False, help="Let torchvision download (needs network)."),
    dvc_add: bool = typer.Option(True, help="Run `dvc add` so data.dvc records the new version."),
    params: Path | None = PARAMS_OPTION,
) -> None:
    """Materialize a raw dataset into data/ (paths.data) and record its version in data.dvc."""
    from vaeops.data.sources import fetch_dataset
    from vaeops.data.versioning import record_data_version

    config = load(params)
    out = config.paths.data
    info = fetch_dataset(dataset or config.data.dataset, out, root=root, download=download)
    typer.echo(f"wrote {info.images} images {info.image_shape} of '{info.dataset}' to {out}/")
    if dvc_add:
        typer.echo(record_data_version(out, config.root))


@app.command()
def prepare(params: Path | None = PARAMS_OPTION) -> None:
    """Split data/ into seeded, stratified train/val/test (paths.splits)."""
    from vaeops.steps.prepare import prepare as prepare_step

    echo_json(prepare_step(load(params)))


@app.command()
def train(
    activation: str | None = typer.Option(None, help="Only this activation (default: all)."),
    seed: int | None = typer.Option(None, help="Only this seed (default: all)."),
    kind: str | None = typer.Option(None, help="Only this model kind, vae or ae (default: both)."),
    params: Path | None = PARAMS_OPTION,
) -> None:
    """Train the sweep's variants (all by default), each a child run of the sweep in MLflow."""
    from vaeops.steps.train import train_sweep
    from vaeops.variants import select_variants

    config = load(params)
    variants = select_variants(config, kind=kind, activation=activation, seed=seed)
    try:
        summaries = train_sweep(config, variants)
    except KeyboardInterrupt:
        typer.echo("interrupted; a rerun resumes from the last finished epoch", err=True)
        raise typer.Exit(130) from None
    for summary in summaries:
        if summary["diverged"]:
            typer.echo(
                f"warning: {summary['variant']} diverged ({summary['failure_reason']})", err=True
            )
        typer.echo(json.dumps(summary, sort_keys=True))
    restored = sum(summary["restored"] for summary in summaries)
    typer.echo(f"{len(summaries) - restored} variants trained, {restored} restored from the store")


@app.command()
def evaluate(
    activation: str | None = typer.Option(None, help="Only this activation (default: all)."),
    seed: int | None = typer.Option(None, help="Only this seed (default: all)."),
    kind: str | None = typer.Option(None, help="Only this model kind (default: all)."),
    params: Path | None = PARAMS_OPTION,
) -> None:
    """Evaluate the sweep's trained variants on the validation and test splits."""
    from vaeops.steps.evaluate import evaluate_sweep
    from vaeops.variants import select_variants

    config = load(params)
    variants = select_variants(config, kind=kind, activation=activation, seed=seed)
    for metrics in evaluate_sweep(config, variants):
        typer.echo(json.dumps(metrics, sort_keys=True))


@app.command()
def summarize(params: Path | None = PARAMS_OPTION) -> None:
    """Write the leaderboard of every variant, the comparison plots and the study report."""
    from vaeops.steps.summarize import summarize as summarize_step

    echo_json(summarize_step(load(params)))


@app.command("claim-sweeps")
def claim_sweeps(params: Path | None = PARAMS_OPTION) -> None:
    """Train and evaluate the sweeps that test the published claims (beta, dropout, latent)."""
    from vaeops.steps.claim_sweeps import run_claim_sweeps

    for summary in run_claim_sweeps(load(params)):
        typer.echo(json.dumps(summary, sort_keys=True))


@app.command()
def classifier(params: Path | None = PARAMS_OPTION) -> None:
    """Train the digit classifier whose features score samples; print its test accuracy."""
    from vaeops.steps.sample_quality import train_digit_classifier

    echo_json(train_digit_classifier(load(params)))


@app.command("sample-quality")
def sample_quality(params: Path | None = PARAMS_OPTION) -> None:
    """Score every variant's prior samples with the classifier (Frechet distance, coverage)."""
    from vaeops.steps.sample_quality import score_sweep

    for score in score_sweep(load(params)):
        typer.echo(json.dumps(score, sort_keys=True))


@app.command()
def report(params: Path | None = PARAMS_OPTION) -> None:
    """Write the study report (reports/study.html and study.md) and log it to the study run."""
    from vaeops.steps.report import run as write_study_report

    echo_json(write_study_report(load(params)))


@app.command()
def promote(params: Path | None = PARAMS_OPTION) -> None:
    """Register every variant and promote the best activation config to @champion if it beats
    the current champion by the margin (against MLFLOW_TRACKING_URI or the local store)."""
    from vaeops.steps.promote import promote as promote_step

    result = promote_step(load(params))
    candidate = result["candidate"]
    typer.echo(
        f"{result['decision']}: {candidate['variant']} "
        f"(v{candidate['version']}, {result['metric']} {candidate['value']:.3f}); "
        f"{result['reason']}. Champion: {result['champion_uri']} (v{result['champion']['version']})"
    )


@app.command()
def pull(
    model_uri: str = typer.Argument(..., help="models:/NAME@ALIAS or models:/NAME/VERSION"),
    out: Path = typer.Option(..., "--out", help="Folder to download the model into."),
) -> None:
    """Download a registered model and print how to load it."""
    from vaeops.registry import pull as pull_model
    from vaeops.tracking import configure_tracking

    configure_tracking(tracking_root())
    local = pull_model(model_uri, out)
    typer.echo(
        f"downloaded {model_uri} to {local}\n"
        "load it (mlflow and torch needed, vaeops not):\n"
        f"  import mlflow; model = mlflow.pyfunc.load_model({str(local)!r})\n"
        "  reconstructions = model.predict(images)  # float32 (n, 784) in [0, 1]"
    )


@app.command()
def generate(
    model_uri: str | None = typer.Option(
        None, help="Model to use (default: models:/<promote.registered_model>@champion)."
    ),
    out: Path | None = typer.Option(None, help="Output folder (default: paths.generated)."),
    n_samples: int | None = typer.Option(
        None, min=1, help="Prior samples (default: generate.n_samples)."
    ),
    input_path: Path | None = typer.Option(
        None, "--input", help="IDX file, .npy or PNG folder to reconstruct (default: test split)."
    ),
    params: Path | None = PARAMS_OPTION,
) -> None:
    """The batch job: reconstructions, prior samples and interpolations from a registered model."""
    from vaeops.registry import champion_uri
    from vaeops.steps.generate import generate_batch

    config = load(params)
    uri = model_uri or champion_uri(config.promote.registered_model)
    echo_json(generate_batch(config, uri, out or config.paths.generated, n_samples, input_path))


@app.command()
def where(params: Path | None = PARAMS_OPTION) -> None:
    """Say where the study's results are and how to browse them."""
    from vaeops.tracking import configure_tracking, experiment_ui_link, uses_default_store

    config = load(params)
    uri = configure_tracking(config.root)
    if uses_default_store(config.root):
        browse = "make ui   (in the project root), then open"
        link = experiment_ui_link(config.tracking.experiment)
    else:
        browse = "open"
        link = experiment_ui_link(config.tracking.experiment, uri.rstrip("/"))
    paths = config.paths
    typer.echo(
        f"Results\n"
        f"  report:        {paths.summary / 'report.md'}\n"
        f"  leaderboard:   {paths.summary / 'leaderboard.csv'}\n"
        f"  metrics:       {paths.metrics}/  (dvc metrics show; dvc exp show)\n"
        f"  plots:         {paths.plots}/  (dvc plots show writes dvc_plots/index.html)\n"
        f"  images:        {paths.generated}/  and  {paths.evaluation}/*/images/\n"
        f"  MLflow store:  {uri}\n"
        f"Browse runs and the model registry:\n  {browse} {link}"
    )


# Orchestration: Prefect flows and the scheduled deployment (vaeops.orchestration). ------------
# Defaults repeat orchestration.DEFAULT_CRON / DEPLOYMENT_NAME: importing it here costs seconds.
FLOW_NAMES = ("study", "retrain")
WORKERS_OPTION = typer.Option(
    None, min=1, help="Variants trained in parallel (default: one per core)."
)
DASK_OPTION = typer.Option(
    None,
    "--dask-address",
    help="Fan out on a Dask scheduler (tcp://127.0.0.1:8786), or 'local' for a LocalCluster; "
    "needs the dask extra (default: local processes).",
)


@app.command("flow")
def flow_run(
    name: str = typer.Argument(..., help="study (the whole sweep) or retrain (if data changed)."),
    workers: int | None = WORKERS_OPTION,
    dask_address: str | None = DASK_OPTION,
    force: bool = typer.Option(False, help="retrain: run the study even if data is unchanged."),
    params: Path | None = PARAMS_OPTION,
) -> None:
    """Run a Prefect flow once: the study (variants in parallel) or the data-driven retrain."""
    if name not in FLOW_NAMES:
        raise typer.BadParameter(f"'{name}': valid flows: {', '.join(FLOW_NAMES)}")
    if force and name != "retrain":
        raise typer.BadParameter("--force applies to the retrain flow only")
    params_path = params_file(params)  # a bad params file fails here, before Prefect starts
    from vaeops import orchestration

    options = {"params_path": params_path, "workers": workers, "dask_address": dask_address}
    if name == "retrain":
        echo_json(orchestration.retrain(**options, force=force))
    else:
        echo_json(orchestration.study(**options))


@app.command()
def schedule(
    cron: str = typer.Option(
        "0 3 * * 1", envvar="VAEOPS_SCHEDULE_CRON", help="When to check for new data (UTC)."
    ),
    workers: int | None = WORKERS_OPTION,
    dask_address: str | None = DASK_OPTION,
    name: str = typer.Option("weekly-retrain", help="Deployment name."),
    pool: str = typer.Option(
        "vaeops", envvar="VAEOPS_WORK_POOL", help="The process work pool its worker polls."
    ),
    params: Path | None = PARAMS_OPTION,
) -> None:
    """Create or update the scheduled retrain deployment on a work pool of PREFECT_API_URL."""
    from vaeops import orchestration

    params_path = params_file(params)
    deployment_id = orchestration.deploy_retrain(
        cron, params_path, workers, dask_address, name, pool
    )
    typer.echo(f"deployment vae-retrain/{name} ({deployment_id}) on work pool '{pool}'")
    typer.echo(f"start its worker in the project root: prefect worker start --pool {pool}")


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    from vaeops.allocator import keep_freed_memory
    from vaeops.errors import USER_ERRORS, hide_user_error_tracebacks, one_line

    # Process-wide, so set by the entry point, never by the library (see vaeops.allocator).
    keep_freed_memory()
    # Prefect's run loggers log a failed task's or flow's exception before it reaches us.
    hide_user_error_tracebacks("prefect.flow_runs", "prefect.task_runs", "prefect.engine")
    try:
        app()
    except USER_ERRORS as error:
        # One line whatever the error holds (a params file with several problems lists them all).
        message = one_line(str(error)) or type(error).__name__
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)
