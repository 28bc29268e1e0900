"""`python -m benchmarks train` and `scaling`: training throughput of the pipeline's loop.

Every figure is per epoch of (training pass + test pass), measured after the same seeded
initialization, and printed as one JSON line together with the matmul rate measured in the same
run and the load average of the machine (a busy neighbour slows every figure). The rate is
measured before the run and again after each epoch: on a shared machine it moves from minute to
minute, so the roofline fraction is the median of each epoch set against the rate beside it.
"""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import load_average
from benchmarks.flops import FlopCount, decoder_flops, model_flops
from benchmarks.loops import LoopFigures, dataloader_loop, pipeline_loop, seeded_model
from benchmarks.mnist_idx import load_images, torchvision_root
from benchmarks.roofline import cpu_has_native_bf16, matmul_gflops, synchronize
from vaeops.config import TrainConfig
from vaeops.evaluation import iwae_log_likelihood
from vaeops.models import Autoencoder, ModelSpec
from vaeops.training import resolve_device


@dataclass(frozen=True)
class TrainBenchConfig:
    idx_dir: Path
    epochs: int = 3
    batch_size: int = 128
    activation: str = "relu"
    hidden: int = 400
    latent: int = 20
    seed: int = 0
    baseline: bool = False
    bf16: bool = False
    iwae_samples: int = 0  # 0: no IWAE figure
    iwae_images: int = 10_000
    device: str = "auto"
    roofline_rounds: int = 5  # timed rounds of the matmul-rate measurement (best is kept)
    epoch_roofline_rounds: int = 2  # the same, after each training epoch


def machine(device: torch.device) -> dict:
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }


def minor_page_faults() -> int:
    """This process's minor page faults so far: memory the allocator had to map in afresh (see
    vaeops.allocator, which `python -m benchmarks` applies at its entry)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def epoch_gflop(flops: FlopCount, train_images: int, test_images: int) -> float:
    """Model GFLOP of one epoch: forward + backward on the training set, forward on the test set."""
    return (train_images * flops.training + test_images * flops.forward) / 1e9


def roofline_fraction(gflop: float, seconds: float, gflops: float) -> float:
    """Share of the measured matmul rate achieved: (gflop / rate) / seconds actually taken."""
    return gflop / gflops / seconds if seconds > 0 else float("nan")


def epoch_roofline_fractions(gflop: float, figures: LoopFigures) -> list[float]:
    """Each epoch's share of the matmul rate measured right after it."""
    pairs = zip(figures.epoch_seconds, figures.epoch_matmul_gflops, strict=True)
    return [roofline_fraction(gflop, seconds, gflops) for seconds, gflops in pairs]


def relative_difference(value: float, reference: float) -> float:
    return (value - reference) / abs(reference) if reference else float("nan")


def loss_parity(fast: float, baseline: float, tolerance: float = 0.01) -> dict:
    """Whether two final test losses agree within `tolerance` (relative; the issue's +/- 1%)."""
    difference = relative_difference(fast, baseline)
    return {
        "test_neg_elbo_relative_difference": difference,
        "within_1_percent": abs(difference) <= tolerance,
    }


def model_spec(config: TrainBenchConfig, image_shape: tuple[int, ...]) -> ModelSpec:
    return ModelSpec(
        kind="vae",
        activation=config.activation,
        hidden=(config.hidden,),
        latent=config.latent,
        image_shape=tuple(image_shape),
    )


def iwae_figures(
    model: Autoencoder, images: torch.Tensor, samples: int, gflops: float, seed: int
) -> dict:
    """Importance samples per second of `iwae_log_likelihood` (k samples for each image)."""
    torch.manual_seed(seed)
    device = images.device
    synchronize(device)
    started = time.perf_counter()
    nll = float(-iwae_log_likelihood(model, images, samples).mean())
    synchronize(device)
    seconds = time.perf_counter() - started
    per_sample = decoder_flops(model, model.spec.latent).forward
    encoder = model_flops(model, tuple(images.shape[1:])).forward - per_sample
    gflop = (len(images) * samples * per_sample + len(images) * encoder) / 1e9
    return {
        "samples": samples,
        "images": len(images),
        "seconds": seconds,
        "importance_samples_per_second": samples * len(images) / seconds,
        "model_gflop": gflop,
        "roofline_fraction": roofline_fraction(gflop, seconds, gflops),
        "test_iwae_nll": nll,
    }


def bf16_figures(config, spec, train, test, fp32_test_neg_elbo, device) -> dict:
    """The same run under bf16 autocast (train.precision: bf16), against the fp32 run."""
    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, precision="bf16")
    model = seeded_model(spec, config.seed, device)
    figures = pipeline_loop(model, train, test, train_config, config.seed)
    rate = matmul_gflops(device, torch.bfloat16, rounds=config.roofline_rounds)
    native = cpu_has_native_bf16() if device.type == "cpu" else True
    return figures.as_dict() | {
        "matmul_gflops_bf16": rate,
        "native_bf16": native,
        "test_neg_elbo_difference_vs_fp32": figures.test_neg_elbo - fp32_test_neg_elbo,
        "test_neg_elbo_relative_difference_vs_fp32": relative_difference(
            figures.test_neg_elbo, fp32_test_neg_elbo
        ),
    }


def baseline_figures(config, spec, fast_seconds: float, fast_test: float, device) -> dict:
    model = seeded_model(spec, config.seed, device)
    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size)
    with tempfile.TemporaryDirectory(prefix="vaeops-bench-") as scratch:
        root = torchvision_root(config.idx_dir, Path(scratch))
        figures = dataloader_loop(model, root, train_config, config.seed, device)
    return {
        "baseline": figures.as_dict(),
        "epoch_time_ratio_vs_baseline": fast_seconds / figures.seconds_per_epoch,
        **loss_parity(fast_test, figures.test_neg_elbo),
    }


def bench_train(config: TrainBenchConfig) -> dict:
    """The figures of `python -m benchmarks train` (see the module docstring)."""
    device = resolve_device(config.device)
    load_before = load_average()
    train = load_images(config.idx_dir, "train", device)  # (n, 1, 28, 28) float32 in [0, 1]
    test = load_images(config.idx_dir, "test", device)
    gflops = matmul_gflops(device, rounds=config.roofline_rounds)
    spec = model_spec(config, tuple(train.shape[1:]))
    model = seeded_model(spec, config.seed, device)
    flops = model_flops(model, spec.image_shape)
    gflop = epoch_gflop(flops, len(train), len(test))
    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size)
    faults_before = minor_page_faults()
    fast = pipeline_loop(
        model,
        train,
        test,
        train_config,
        config.seed,
        measure_rate=lambda: matmul_gflops(device, rounds=config.epoch_roofline_rounds),
    )
    faults = minor_page_faults() - faults_before
    fractions = epoch_roofline_fractions(gflop, fast)
    figures = {
        "benchmark": "train",
        **machine(device),
        "train_images": len(train),
        "test_images": len(test),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "model": f"vae mlp {spec.pixels}-{config.hidden}-{config.latent} {config.activation}",
        **fast.as_dict(),
        "samples_per_second": len(train) / fast.seconds_per_epoch,
        "flops_per_image": {"forward": flops.forward, "backward": flops.backward},
        "model_gflop_per_epoch": gflop,
        "matmul_gflops_fp32": gflops,
        "epoch_matmul_gflops_fp32": [round(rate, 1) for rate in fast.epoch_matmul_gflops],
        "epoch_roofline_fractions": [round(fraction, 4) for fraction in fractions],
        "roofline_fraction": statistics.median(fractions),
        "minor_page_faults": faults,  # of the timed run, its per-epoch rate measurements included
    }
    if config.iwae_samples:
        images = test[: config.iwae_images]
        figures["iwae"] = iwae_figures(model, images, config.iwae_samples, gflops, config.seed)
    if config.baseline:
        figures |= baseline_figures(
            config, spec, fast.seconds_per_epoch, fast.test_neg_elbo, device
        )
    if config.bf16:
        figures["bf16"] = bf16_figures(config, spec, train, test, fast.test_neg_elbo, device)
    return figures | {"load_average_before": load_before, "load_average_after": load_average()}


def bench_scaling(config: TrainBenchConfig, sizes: list[int]) -> dict:
    """Training-epoch time (no test pass) on the first n training images, for each n in sizes."""
    device = resolve_device(config.device)
    load_before = load_average()
    train = load_images(config.idx_dir, "train", device)
    spec = model_spec(config, tuple(train.shape[1:]))
    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size)
    rows = []
    for size in sizes:
        if size > len(train):
            raise ValueError(f"--sizes: {size} exceeds the {len(train)} training images")
        model = seeded_model(spec, config.seed, device)
        figures = pipeline_loop(model, train[:size], None, train_config, config.seed)
        rows.append(
            {
                "images": size,
                "seconds_per_epoch": figures.seconds_per_epoch,
                "samples_per_second": size / figures.seconds_per_epoch,
                "epoch_seconds": figures.as_dict()["epoch_seconds"],
            }
        )
    base = rows[0]
    for row in rows:
        # 1.0 = time grows exactly in proportion to the data (no fixed per-epoch cost).
        time_ratio = row["seconds_per_epoch"] / base["seconds_per_epoch"]
        row["time_ratio_over_size_ratio"] = time_ratio / (row["images"] / base["images"])
    return {
        "benchmark": "scaling",
        **machine(device),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "sizes": rows,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
