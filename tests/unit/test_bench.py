"""The benchmark logic (issue 4): FLOP counts, the IDX stand-in, the JSON figures, loss parity of
the two loops, and the speed-ups of the fit loop keeping its results. No test asserts a time."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vaeops.benchmarks.flops import count_flops, model_flops
from vaeops.benchmarks.mnist_idx import (
    IdxFolderError,
    load_images,
    make_idx_folder,
    raw_folder,
    shift_images,
    torchvision_root,
)
from vaeops.benchmarks.pipeline import split_stages, stage_compute, summarize_stages
from vaeops.benchmarks.roofline import matmul_gflops
from vaeops.benchmarks.train import TrainBenchConfig, bench_scaling, bench_train, epoch_gflop
from vaeops.data.idx import read_idx
from vaeops.models import ModelSpec, build_model
from vaeops.objectives import loss_terms
from vaeops.training import Diverged, FusedAdam, check_pending, make_optimizer

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
    with pytest.raises(IdxFolderError, match="bench make-idx"):
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
    # (the listed figures are rounded for the JSON line)
    assert tiny_figures["epoch_roofline_fractions"] == pytest.approx(expected, rel=1e-2)
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
    assert figures["sizes"][0]["time_ratio_over_size_ratio"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="exceeds"):
        bench_scaling(config, [10_000])


# Pipeline-overhead accounting ------------------------------------------------------------------


def test_dvc_output_is_split_into_stages_with_their_compute(tmp_path):
    lines = [
        (0.0, "Running stage 'prepare':"),
        (0.1, "> vaeops prepare"),
        (1.0, '  "compute_seconds": 0.5,'),
        (1.5, "Running stage 'train@relu-0':"),
        (9.0, '  "compute_seconds": 6.0,'),
        (9.5, "Running stage 'evaluate':"),
        (11.0, '{"compute_seconds": 1.0, "variant": "a"}'),
        (12.0, '{"compute_seconds": 1.5, "variant": "b"}'),
        (13.0, "Running stage 'summarize':"),
    ]
    (tmp_path / "params.yaml").write_text("paths: {promotion: promotion.json}\n")
    stages = split_stages(lines, wall=14.0)
    assert [stage.name for stage in stages] == ["prepare", "train@relu-0", "evaluate", "summarize"]
    assert [stage.wall_seconds for stage in stages] == [1.5, 8.0, 3.5, 1.0]
    assert stage_compute(stages[2]) == 2.5
    kinds = summarize_stages(stages, tmp_path)
    assert kinds["train"] == {
        "stages": 1,
        "wall_seconds": 8.0,
        "compute_seconds": 6.0,
        "unrecorded": 0,
    }
    assert kinds["summarize"]["unrecorded"] == 1


def test_cli_import_stays_free_of_torch():
    # `vaeops --help` stays fast because no command's heavy import happens at module level.
    code = "import sys, vaeops.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# The fit loop's speed-ups keep its results -----------------------------------------------------


def train_steps(model, optimizer, images, steps: range) -> None:
    for step in steps:
        torch.manual_seed(step)
        optimizer.zero_grad(set_to_none=True)
        loss_terms(model(images), images).total.backward()
        optimizer.step()


def test_fused_adam_is_torch_fused_adam_bit_for_bit(tiny_images, tiny_spec):
    torch.manual_seed(0)
    ours = build_model(tiny_spec)
    theirs = copy.deepcopy(ours)
    ours_optimizer = make_optimizer(ours, 1e-3)
    assert isinstance(ours_optimizer, FusedAdam)
    theirs_optimizer = torch.optim.Adam(theirs.parameters(), lr=1e-3, fused=True)
    train_steps(ours, ours_optimizer, tiny_images[:64], range(5))
    train_steps(theirs, theirs_optimizer, tiny_images[:64], range(5))
    pairs = zip(ours.parameters(), theirs.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    ours_state, theirs_state = ours_optimizer.state_dict(), theirs_optimizer.state_dict()
    assert ours_state["param_groups"] == theirs_state["param_groups"]
    for index, state in theirs_state["state"].items():
        assert all(torch.equal(ours_state["state"][index][key], state[key]) for key in state)


def test_fused_adam_state_loads_into_torch_adam_and_back(tiny_images, tiny_spec):
    torch.manual_seed(0)
    model = build_model(tiny_spec)
    optimizer = FusedAdam(model.parameters(), lr=1e-3)
    train_steps(model, optimizer, tiny_images[:64], range(3))
    resumed, resumed_torch = copy.deepcopy(model), copy.deepcopy(model)
    again = FusedAdam(resumed.parameters(), lr=1e-3)
    again.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    torch_optimizer = torch.optim.Adam(resumed_torch.parameters(), lr=1e-3, fused=True)
    torch_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    for net, opt in ((model, optimizer), (resumed, again), (resumed_torch, torch_optimizer)):
        train_steps(net, opt, tiny_images[:64], range(3, 6))
    for a, b, c in zip(
        model.parameters(), resumed.parameters(), resumed_torch.parameters(), strict=True
    ):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_training_never_imports_the_compiler():
    # torch.optim imports torch._dynamo (about 2 s) when an optimizer is built; fit must not.
    code = (
        "import sys, torch\n"
        "from vaeops.config import TrainConfig\n"
        "from vaeops.models import ModelSpec, build_model\n"
        "from vaeops.training import fit\n"
        "model = build_model(ModelSpec(hidden=(8,), latent=2))\n"
        "fit(model, torch.rand(64, 1, 28, 28), TrainConfig(epochs=1, batch_size=32), seed=0)\n"
        "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_deferred_divergence_check_reports_the_first_bad_batch():
    losses = [torch.tensor(200.0), torch.tensor(float("nan")), torch.tensor(1e9)]
    with pytest.raises(Diverged, match=r"non-finite loss \(nan\)"):
        check_pending(losses, max_loss=1e5)
    assert losses == []
    with pytest.raises(Diverged, match=r"exceeded train\.max_loss=100000"):
        check_pending([torch.tensor(5.0), torch.tensor(2e5)], max_loss=1e5)
    check_pending([torch.tensor(5.0)], max_loss=1e5)  # nothing raised


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
