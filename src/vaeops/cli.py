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

PARAMS_OPTION = typer.Option(Path("params.yaml"), "--params", help="The params file to read.")
KIND_OPTION = typer.Option("vae", help="Model kind: vae or ae.")
ACTIVATION_OPTION = typer.Option(..., help="Activation name, e.g. relu (see params.yaml).")
SEED_OPTION = typer.Option(..., help="Training seed of the variant.")
TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def echo_json(payload: dict) -> None:
    typer.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))


def load(params_path: Path):
    from vaeops.config import load_params

    return load_params(params_path)


@data_app.command("fetch")
def data_fetch(
    dataset: str | None = typer.Option(
        None,
        help="mnist-5k (bundled), mnist, fashion-mnist, kmnist, or idx:DIR "
        "[default: data.dataset in params.yaml].",
    ),
    root: Path | None = typer.Option(None, help="Where torchvision datasets keep raw files."),
    download: bool = typer.Option(False, help="Let torchvision download (needs network)."),
    dvc_add: bool = typer.Option(True, help="Run `dvc add` so data.dvc records the new version."),
    params: Path = PARAMS_OPTION,
) -> None:
    """Materialize a raw dataset into data/ (paths.data) and record its version in data.dvc."""
    from vaeops.data.sources import fetch_dataset
    from vaeops.data.versioning import record_data_version

    config = load(params)
    out = config.paths.data
    info = fetch_dataset(dataset or config.data.dataset, out, root=root, download=download)
    typer.echo(f"wrote {info.images} images {info.image_shape} of '{info.dataset}' to {out}/")
    if dvc_add:
        typer.echo(record_data_version(out))


@app.command()
def prepare(params: Path = PARAMS_OPTION) -> None:
    """Split data/ into seeded, stratified train/val/test (paths.splits)."""
    from vaeops.steps.prepare import prepare as prepare_step

    echo_json(prepare_step(load(params)))


@app.command()
def train(
    activation: str = ACTIVATION_OPTION,
    seed: int = SEED_OPTION,
    kind: str = KIND_OPTION,
    params: Path = PARAMS_OPTION,
) -> None:
    """Train one variant and track it as a child run of the sweep in MLflow."""
    from vaeops.steps.train import train_variant
    from vaeops.variants import parse_variant

    config = load(params)
    summary = train_variant(config, parse_variant(kind, activation, seed))
    if summary["diverged"]:
        typer.echo(
            f"warning: {summary['variant']} diverged ({summary['failure_reason']})", err=True
        )
    echo_json(summary)


@app.command()
def evaluate(
    activation: str | None = typer.Option(None, help="Only this activation (default: all)."),
    seed: int | None = typer.Option(None, help="Only this seed (default: all)."),
    kind: str | None = typer.Option(None, help="Only this model kind (default: all)."),
    params: Path = PARAMS_OPTION,
) -> None:
    """Evaluate the sweep's trained variants on the validation and test splits."""
    from vaeops.steps.evaluate import evaluate_sweep
    from vaeops.variants import select_variants

    config = load(params)
    variants = select_variants(config, kind=kind, activation=activation, seed=seed)
    for metrics in evaluate_sweep(config, variants):
        typer.echo(json.dumps(metrics, sort_keys=True))


@app.command()
def summarize(params: Path = PARAMS_OPTION) -> None:
    """Write the leaderboard of every variant, the comparison plots and the study report."""
    from vaeops import report

    summary = report.summarize(load(params))
    typer.echo(f"leaderboard: {summary['leaderboard']}\nreport: {summary['report']}")


@app.command()
def promote(params: Path = PARAMS_OPTION) -> None:
    """Register every variant and promote the best activation config to @champion if it beats
    the current champion by the margin (against MLFLOW_TRACKING_URI or the local store)."""
    from vaeops.registry import promote as promote_step

    result = promote_step(load(params))
    typer.echo(
        f"{result['decision']}: {result['candidate_variant']} "
        f"(v{result['candidate_version']}, {result['metric']} {result['candidate_metric']:.3f}); "
        f"{result['reason']}. Champion: {result['champion_uri']}"
    )


@app.command()
def pull(
    model_uri: str = typer.Argument(..., help="models:/NAME@ALIAS or models:/NAME/VERSION"),
    out: Path = typer.Option(..., "--out", help="Folder to download the model into."),
) -> None:
    """Download a registered model and print how to load it."""
    from vaeops.registry import pull as pull_model

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
        None, help="Model to use [default: models:/<promote.registered_model>@champion]."
    ),
    out: Path | None = typer.Option(None, help="Output folder [default: paths.generated]."),
    n_samples: int | None = typer.Option(None, help="Prior samples [default: generate.n_samples]."),
    input_path: Path | None = typer.Option(
        None, "--input", help="IDX file, .npy or PNG folder to reconstruct [default: test split]."
    ),
    params: Path = PARAMS_OPTION,
) -> None:
    """The batch job: reconstructions, prior samples and interpolations from a registered model."""
    from vaeops.generate import generate_batch
    from vaeops.registry import CHAMPION, alias_uri

    config = load(params)
    uri = model_uri or alias_uri(config.promote.registered_model, CHAMPION)
    echo_json(generate_batch(config, uri, out or config.paths.generated, n_samples, input_path))


@app.command()
def where(params: Path = PARAMS_OPTION) -> None:
    """Say where the study's results are and how to browse them."""
    from vaeops.tracking import DEFAULT_TRACKING_URI, tracking_uri

    config = load(params)
    uri = tracking_uri()
    ui = (
        "make ui   (or: mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --port 5000)"
        if uri == DEFAULT_TRACKING_URI
        else f"open the MLflow server at {uri}"
    )
    typer.echo(
        f"Results\n"
        f"  report:        {config.paths.summary / 'report.md'}\n"
        f"  leaderboard:   {config.paths.summary / 'leaderboard.csv'}  (dvc metrics show)\n"
        f"  plots:         dvc plots show  (writes dvc_plots/index.html)\n"
        f"  images:        {config.paths.generated}/  and  {config.paths.evaluation}/*/images/\n"
        f"  MLflow store:  {uri}\n"
        f"Browse runs and the model registry:\n  {ui}\n  then http://127.0.0.1:5000"
    )


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    from vaeops.errors import USER_ERRORS

    try:
        app()
    except USER_ERRORS as error:
        message = str(error).strip() or type(error).__name__
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; a rerun resumes from the last finished epoch", err=True)
        sys.exit(130)
