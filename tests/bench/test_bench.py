"""The benchmark logic (benchmarks/): FLOP counts, the IDX stand-in, the JSON figures, loss parity
of the two loops, the pipeline benchmark's bookkeeping. No test asserts a time."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from benchmarks.__main__ import app, comma_separated
from benchmarks.flops import count_flops, model_flops
from benchmarks.mnist_idx import (
    IdxFolderError,
    load_images,
    make_idx_folder,
    raw_folder,
    shift_images,
    torchvision_root,
)
from benchmarks.pipeline import edit_sweep, split_stages, stage_seconds, without
from benchmarks.roofline import matmul_gflops
from benchmarks.train import TrainBenchConfig, bench_scaling, bench_train, epoch_gflop
from vaeops.data.idx import read_idx
from vaeops.models import ModelSpec, build_model

pytestmark = pytest.mark.bench
REFERENCE_SPEC = ModelSpec(activation="relu", hidden=(400,), latent=20)  # 784-400-20


@pytest.fixture(scope="module")
def tiny_idx_dir(tmp_path_factory) -> Path:
    """A 512 / 256 image IDX folder in torchvision's raw layout, tiled from the 5k digits."""
    folder = tmp_path_factory.mktemp("idx")
    make_idx_folder(folder, train_size=512, test_size=256, test_sources=200, seed=0)
    return folder


# FLOP counting ---------------------------------------------------------------------------------


def test_reference_vae_flops_match_the_hand_count():
    # Given the 784-400-20 VAE: linears 784x400, 400x40 (mu, logvar), 20x400, 400x784
    model = build_model(REFERENCE_SPEC)
    macs = 784 * 400 + 400 * 40 + 20 * 400 + 400 * 784
    # When its FLOPs are counted
    flops = model_flops(model, (1, 28, 28))
    # Then forward is 2 * MACs, and backward 2 * MACs for every weight gradient plus 2 * MACs of
    # input gradient for every layer but the first (its input is the data)
    assert flops.forward == 2 * macs
    assert flops.backward == 2 * macs + 2 * (macs - 784 * 400)
    assert flops.training == 3_280_000


def test_conv_layers_are_counted_per_output_and_per_scattered_input():
    conv = nn.Conv2d(1, 32, kernel_size=4, stride=2, padding=1)  # 28x28 -> 32 x 14x14
    transposed = nn.ConvTranspose2d(64, 32, kernel_size=4, stride=2, padding=1)  # 7x7 -> 14x14
    assert count_flops(conv, torch.zeros(3, 1, 28, 28)).forward == 2 * (32 * 14 * 14) * 16
    assert count_flops(transposed, torch.zeros(3, 64, 7, 7)).forward == 2 * (64 * 49) * 32 * 16


def test_counting_flops_leaves_the_random_stream_untouched():
    model = build_model(REFERENCE_SPEC)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    model_flops(model, (1, 28, 28))  # the VAE forward draws reparameterization noise
    assert torch.equal(torch.rand(3), expected)


def test_measuring_the_matmul_rate_leaves_the_random_stream_untouched():
    # bench train measures the rate between epochs: it must not change what training draws next
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    rate = matmul_gflops(torch.device("cpu"), size=64, rounds=1, seconds_per_round=0.01)
    assert rate > 0
    assert torch.equal(torch.rand(3), expected)


def test_epoch_gflop_counts_training_and_test_passes():
    flops = model_flops(build_model(REFERENCE_SPEC), (1, 28, 28))
    gflop = epoch_gflop(flops, train_images=60_000, test_images=10_000)
    assert gflop == pytest.approx((60_000 * 3_280_000 + 10_000 * 1_302_400) / 1e9)


# The IDX stand-in for MNIST --------------------------------------------------------------------


def test_shift_moves_content_and_fills_with_background():
    image = np.zeros((1, 5, 5), dtype=np.uint8)
    image[0, 2, 2] = 255
    shifted = shift_images(image, np.array([[1, -2]]), max_shift=2)
    assert shifted[0, 3, 0] == 255 and shifted.sum() == 255


def test_idx_folder_has_mnist_layout_and_disjoint_sources(tiny_idx_dir):
    folder = raw_folder(tiny_idx_dir)
    assert folder == tiny_idx_dir / "MNIST" / "raw"
    train = read_idx(folder / "train-images-idx3-ubyte")
    test = read_idx(folder / "t10k-images-idx3-ubyte")
    assert train.shape == (512, 28, 28) and test.shape == (256, 28, 28)
    assert len(read_idx(folder / "train-labels-idx1-ubyte")) == 512
    # No test digit (nor a shift of it) is a training digit: compare unshifted originals.
    train_rows = {row.tobytes() for row in train}
    assert not any(row.tobytes() in train_rows for row in test)
    images = load_images(tiny_idx_dir, "test", torch.device("cpu"))
    assert images.shape == (256, 1, 28, 28) and images.min() >= 0 and images.max() <= 1


def test_torchvision_reads_the_folder_and_a_flat_copy(tiny_idx_dir, tmp_path):
    from torchvision import datasets

    assert torchvision_root(tiny_idx_dir, tmp_path) == tiny_idx_dir
    flat = tmp_path / "flat"
    flat.mkdir()
    for source in raw_folder(tiny_idx_dir).iterdir():
        (flat / source.name).write_bytes(source.read_bytes())
    root = torchvision_root(flat, tmp_path / "scratch")
    assert len(datasets.MNIST(str(root), train=False, download=False)) == 256


def test_missing_idx_files_are_a_user_error(tmp_path):
    with pytest.raises(IdxFolderError, match="python -m benchmarks make-idx"):
        raw_folder(tmp_path)


# The benchmark figures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_figures(tiny_idx_dir) -> dict:
    config = TrainBenchConfig(
        tiny_idx_dir,
        epochs=2,
        hidden=64,
        latent=8,
        baseline=True,
        iwae_samples=4,
        iwae_images=16,
        roofline_rounds=1,
    )
    return bench_train(config)


def test_bench_train_prints_every_figure_as_json(tiny_figures):
    line = json.dumps(tiny_figures)
    assert "\n" not in line
    for key in (
        "seconds_per_epoch",
        "samples_per_second",
        "train_neg_elbo",
        "test_neg_elbo",
        "model_gflop_per_epoch",
        "matmul_gflops_fp32",
        "roofline_fraction",
        "epoch_time_ratio_vs_baseline",
        "test_neg_elbo_relative_difference",
        "load_average_before",
        "minor_page_faults",
    ):
        assert math.isfinite(float(np.sum(tiny_figures[key]))), key
    assert len(tiny_figures["epoch_seconds"]) == 2
    # one matmul rate per epoch, each epoch against its own rate, the median reported
    assert len(tiny_figures["epoch_matmul_gflops_fp32"]) == 2
    gflop = tiny_figures["model_gflop_per_epoch"]
    expected = [
        gflop / rate / seconds
        for seconds, rate in zip(
            tiny_figures["epoch_seconds"], tiny_figures["epoch_matmul_gflops_fp32"], strict=True
        )
    ]
    # The listed figures are rounded to 4 decimals for the JSON line: on a slow machine a
    # fraction is small enough that the rounding alone exceeds 1%.
    assert tiny_figures["epoch_roofline_fractions"] == pytest.approx(expected, rel=1e-2, abs=1e-4)
    assert tiny_figures["roofline_fraction"] == pytest.approx(np.median(expected), rel=1e-2)
    assert tiny_figures["iwae"]["importance_samples_per_second"] > 0
    assert tiny_figures["baseline"]["diverged"] is False


def test_fit_loop_and_dataloader_baseline_reach_the_same_test_loss(tiny_figures):
    # Same model, objective and optimizer from the same initial weights; only the data path and
    # batch order differ, so after the same epochs the test losses agree within noise.
    fast, baseline = tiny_figures["test_neg_elbo"], tiny_figures["baseline"]["test_neg_elbo"]
    assert fast == pytest.approx(baseline, rel=0.02)
    assert 0 < tiny_figures["iwae"]["test_iwae_nll"] < 784 * math.log(2) * 2


def test_bf16_figures_report_the_difference_to_fp32(tiny_idx_dir):
    config = TrainBenchConfig(
        tiny_idx_dir, epochs=1, hidden=32, latent=4, bf16=True, roofline_rounds=1
    )
    figures = bench_train(config)
    bf16 = figures["bf16"]
    assert bf16["test_neg_elbo_difference_vs_fp32"] == pytest.approx(
        bf16["test_neg_elbo"] - figures["test_neg_elbo"]
    )
    assert abs(bf16["test_neg_elbo_relative_difference_vs_fp32"]) < 0.05


def test_scaling_reports_each_size(tiny_idx_dir):
    config = TrainBenchConfig(tiny_idx_dir, epochs=1, hidden=32, latent=4)
    figures = bench_scaling(config, [128, 512])
    assert [row["images"] for row in figures["sizes"]] == [128, 512]
    assert all(len(row["epoch_seconds"]) == 1 for row in figures["sizes"])
    with pytest.raises(ValueError, match="exceeds"):
        bench_scaling(config, [10_000])


# The pipeline benchmark's bookkeeping ---------------------------------------------------------


def test_dvc_output_is_split_into_stages_and_summed_per_stage_kind():
    lines = [
        (0.0, "Running stage 'prepare':"),
        (0.1, "> vaeops prepare"),
        (1.5, "Running stage 'train@relu-0':"),
        (9.5, "Running stage 'train@tanh-0':"),
        (11.0, '{"variant": "a"}'),
        (13.0, "Running stage 'summarize':"),
    ]
    stages = split_stages(lines, wall=14.0)
    assert [stage.name for stage in stages] == [
        "prepare",
        "train@relu-0",
        "train@tanh-0",
        "summarize",
    ]
    assert [stage.wall_seconds for stage in stages] == [1.5, 8.0, 3.5, 1.0]
    assert stage_seconds(stages) == {"prepare": 1.5, "train": 11.5, "summarize": 1.0}
    assert split_stages([(0.2, "Data and pipelines are up to date.")], wall=0.5) == []


def test_the_added_activation_is_left_out_first_and_must_be_in_the_sweep():
    assert without(["relu", "softplus", "gelu"], "softplus") == ["relu", "gelu"]
    with pytest.raises(ValueError, match="lacks 'softplus'"):
        without(["relu"], "softplus")


def test_editing_the_sweep_keeps_every_other_param(tmp_path):
    (tmp_path / "params.yaml").write_text(
        "train:\n  epochs: 15  # a comment\nsweep:\n  activations: [relu, elu]\n  seeds: [0, 1]\n"
    )
    edit_sweep(tmp_path, activations=["elu"], seeds=[0])
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params == {"train": {"epochs": 15}, "sweep": {"activations": ["elu"], "seeds": [0]}}


def test_comma_separated_sizes_skip_blanks():
    assert comma_separated("1, 4,12") == [1, 4, 12]
    assert comma_separated("") == []


@pytest.mark.parametrize(
    ("command", "option"),
    [("train", "--idx-dir"), ("scaling", "--sizes"), ("make-idx", "--out"), ("pipeline", "--keep")],
)
def test_every_command_parses_its_options(command, option):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert option in result.output


def test_the_command_line_runs_as_a_module_from_the_repository_root(tmp_path):
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "make-idx", "--out", str(tmp_path), "--train-size",
         "64", "--test-size", "32"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    assert "wrote 64 train and 32 test images" in done.stdout
    assert load_images(tmp_path, "train", torch.device("cpu")).shape == (64, 1, 28, 28)


def test_cli_import_stays_free_of_torch():
    # `vaeops --help` stays fast because no command's heavy import happens at module level.
    code = "import sys, vaeops.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def reference_iwae(model, images: torch.Tensor, samples: int) -> torch.Tensor:
    """The estimate before blocking: one decode per chunk, BCE on k-times-copied targets."""
    from vaeops.evaluation import IWAE_DECODES_PER_CHUNK, LOG_2PI, standard_normal_log_prob
    from vaeops.objectives import bernoulli_nll

    out = []
    for batch in images.split(max(1, IWAE_DECODES_PER_CHUNK // samples)):
        mu, logvar = model.encode(batch)
        eps = torch.randn(samples, *mu.shape)
        z = mu + torch.exp(0.5 * logvar) * eps
        targets = batch.expand(samples, *batch.shape).flatten(0, 1)
        log_px = -bernoulli_nll(model.decode(z.flatten(0, 1)), targets).view(samples, -1)
        log_qz = -0.5 * (eps.pow(2) + LOG_2PI + logvar).sum(-1)
        log_weights = log_px + standard_normal_log_prob(z) - log_qz
        out.append(torch.logsumexp(log_weights, dim=0) - math.log(samples))
    return torch.cat(out)


@pytest.mark.parametrize("samples", [1, 7, 3000])
def test_blocked_iwae_equals_the_one_call_estimate_on_the_same_draws(
    tiny_images, tiny_spec, samples, monkeypatch
):
    from vaeops import evaluation

    monkeypatch.setattr(evaluation, "IWAE_ROWS_PER_BLOCK_CPU", 1000)  # several blocks per chunk
    torch.manual_seed(0)
    model = build_model(tiny_spec).eval()
    images = tiny_images[:40]
    torch.manual_seed(1)
    blocked = evaluation.iwae_log_likelihood(model, images, samples)
    torch.manual_seed(1)
    with torch.no_grad():
        expected = reference_iwae(model, images, samples)
    assert blocked.shape == (40,)
    torch.testing.assert_close(blocked, expected, rtol=1e-5, atol=1e-3)
