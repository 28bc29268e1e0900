"""`python -m benchmarks ...` from the repository root: commands that print one JSON line of
figures. Development tooling, not part of the installed package: the logic lives in this folder
and imports vaeops, never the other way round. Heavy imports happen inside commands."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from vaeops.allocator import keep_freed_memory

app = typer.Typer(
    help="Benchmarks: training throughput against the matmul roofline, pipeline overhead.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
IDX_DIR_OPTION = typer.Option(
    ..., "--idx-dir", help="MNIST-format IDX folder (train-/t10k- files, or DIR/MNIST/raw/)."
)
DEVICE_OPTION = typer.Option("auto", help="auto | cpu | cuda.")


def comma_separated(sizes: str) -> list[int]:
    return [int(size) for size in sizes.split(",") if size.strip()]


@app.command("train")
def train(
    idx_dir: Path = IDX_DIR_OPTION,
    epochs: int = typer.Option(3, min=1, help="Epochs of each timed run."),
    batch_size: int = typer.Option(128, min=1),
    activation: str = typer.Option("relu"),
    hidden: int = typer.Option(400, min=1),
    latent: int = typer.Option(20, min=1),
    seed: int = typer.Option(0),
    baseline: bool = typer.Option(False, help="Also time the idiomatic DataLoader loop."),
    precision: str = typer.Option("fp32", help="bf16: also time a bf16-autocast run."),
    iwae_samples: int = typer.Option(0, min=0, help="IWAE k for the throughput figure (0: skip)."),
    iwae_images: int = typer.Option(10_000, min=1, help="Test images the IWAE figure uses."),
    device: str = DEVICE_OPTION,
) -> None:
    """Train through the pipeline's fit loop and print one JSON line of throughput figures."""
    from benchmarks.train import TrainBenchConfig, bench_train

    if precision not in ("fp32", "bf16"):
        raise typer.BadParameter("--precision: fp32 or bf16")
    config = TrainBenchConfig(
        idx_dir, epochs, batch_size, activation, hidden, latent, seed, baseline,
        precision == "bf16", iwae_samples, iwae_images, device,
    )  # fmt: skip
    typer.echo(json.dumps(bench_train(config)))


@app.command("scaling")
def scaling(
    idx_dir: Path = IDX_DIR_OPTION,
    sizes: str = typer.Option("5000,20000,60000", help="Training-set sizes, comma-separated."),
    epochs: int = typer.Option(2, min=1),
    device: str = DEVICE_OPTION,
) -> None:
    """Print one JSON line: training-epoch time against the number of training images."""
    from benchmarks.train import TrainBenchConfig, bench_scaling

    config = TrainBenchConfig(idx_dir, epochs=epochs, device=device)
    typer.echo(json.dumps(bench_scaling(config, comma_separated(sizes))))


@app.command("make-idx")
def make_idx(
    out: Path = typer.Option(..., "--out", help="Folder to write (DIR/MNIST/raw/...)."),
    train_size: int = typer.Option(60_000, min=1),
    test_size: int = typer.Option(10_000, min=1),
    seed: int = typer.Option(0),
) -> None:
    """Write a 60k/10k MNIST-format IDX folder tiled (small random shifts) from the 5k digits."""
    from benchmarks.mnist_idx import make_idx_folder

    sizes = make_idx_folder(out, train_size=train_size, test_size=test_size, seed=seed)
    typer.echo(f"wrote {sizes['train']} train and {sizes['test']} test images to {out}/MNIST/raw/")


@app.command("pipeline")
def pipeline(
    project: Path = typer.Option(Path("."), help="The project to copy (its working tree)."),
    keep: Path | None = typer.Option(None, help="Scratch folder to use and keep (default: tmp)."),
    sweep_sizes: str = typer.Option(
        "1,2,4", help="Activations per sweep for the fan-out scaling ('' to skip)."
    ),
) -> None:
    """Time the default `dvc repro` in a scratch copy, stage by stage; print one JSON line."""
    from benchmarks.pipeline import bench_pipeline

    figures = bench_pipeline(project, keep, tuple(comma_separated(sweep_sizes)))
    typer.echo(json.dumps(figures))


def main() -> None:
    # The product's CLI sets the same allocator policy at its entry; so the figures measure it.
    keep_freed_memory()
    app()


if __name__ == "__main__":
    main()
