"""The claims' verdict rules on small synthetic results: one case per verdict, built so that the
right answer is known (a difference of many seed spreads, or none)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vaeops.claims import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    RunResult,
    StudyResults,
    ae_cannot_generate,
    dropout_reduces_overfitting,
    evaluate_claims,
    latent_size_by_validation,
    rate_gap_at_equal_distortion,
    relu_avoids_vanishing_gradients,
    relu_best_reconstruction,
    swish_compresses_better,
    tanh_sigmoid_slow_training,
)

SEEDS = (0, 1, 2)
# Per-seed wobble: small against the differences the "resolved" cases build in, and not the same
# for every config, so the paired differences have a spread.
NOISE = {0: 0.0, 1: 0.13, 2: -0.11}
OTHER_NOISE = {0: 0.05, 1: -0.07, 2: 0.12}


def wobble(index: int, seed: int) -> float:
    """The seed's wobble of the index-th config: a different size for each config."""
    return NOISE[seed] * (1 + index / 2)


def variant(config: str, seed: int, **metrics) -> RunResult:
    kind, activation = config.split("-", 1)
    return RunResult(
        name=f"{config}-s{seed}",
        kind=kind,
        activation=activation,
        seed=seed,
        metrics={"diverged": False, **metrics.pop("figures", {})},
        **metrics,
    )


def study(runs, claim_runs=(), best="vae-prelu") -> StudyResults:
    return StudyResults(
        runs=tuple(runs),
        claim_runs=tuple(claim_runs),
        best_config=best,
        metric="val/iwae_nll",
        alpha=0.05,
        base={"beta": 1.0, "dropout": 0.0, "latent": 20},
    )


def with_reconstruction(means: dict[str, float]) -> list[RunResult]:
    return [
        variant(c, s, figures={"val/reconstruction": m + wobble(i, s)})
        for i, (c, m) in enumerate(means.items())
        for s in SEEDS
    ]


# ReLU gives the best reconstructions ----------------------------------------------------------


def test_relu_best_reconstruction_supported_when_lowest_and_resolved():
    runs = with_reconstruction({"vae-relu": 100.0, "vae-tanh": 105.0, "vae-gelu": 103.0})
    claim = relu_best_reconstruction(study(runs))
    assert claim.verdict == SUPPORTED
    assert claim.numbers["lowest"] == "vae-relu"
    assert [row["config"] for row in claim.table] == ["vae-relu", "vae-gelu", "vae-tanh"]


def test_relu_best_reconstruction_not_supported_when_another_is_resolved_lower():
    runs = with_reconstruction({"vae-relu": 100.0, "vae-prelu": 96.0, "vae-tanh": 105.0})
    claim = relu_best_reconstruction(study(runs))
    assert claim.verdict == NOT_SUPPORTED
    assert claim.numbers["lowest"] == "vae-prelu"
    assert claim.numbers["relu_mean"] == pytest.approx(100.0 + (0.13 - 0.11) / 3)


def test_relu_best_reconstruction_inconclusive_within_noise():
    runs = with_reconstruction({"vae-relu": 100.0, "vae-gelu": 100.01})
    assert relu_best_reconstruction(study(runs)).verdict == INCONCLUSIVE


def test_identity_is_not_one_of_the_compared_activations():
    runs = with_reconstruction({"vae-relu": 100.0, "vae-identity": 90.0, "vae-tanh": 105.0})
    claim = relu_best_reconstruction(study(runs))
    assert claim.verdict == SUPPORTED
    assert "vae-identity" not in [row["config"] for row in claim.table]


# ReLU avoids vanishing gradients ---------------------------------------------------------------


def gradient_history(first: float, last: float, seed: int) -> tuple[dict[str, float], ...]:
    """Three epochs of per-layer gradient norms, input layer first."""
    return tuple(
        {
            "epoch": epoch,
            "train/grad_norm/encoder.0": first * (1 + 0.1 * epoch + 0.05 * seed),
            "train/grad_norm/decoder.0": 5.0,
            "train/grad_norm/head": last,
        }
        for epoch in (1, 2, 3)
    )


def gradient_runs(first_layer: dict[str, float]) -> list[RunResult]:
    return [
        variant(c, s, history=gradient_history(first * (1 + wobble(i, s) / 3), 10.0, s))
        for i, (c, first) in enumerate(first_layer.items())
        for s in SEEDS
    ]


def test_vanishing_gradients_supported_when_relu_keeps_most_gradient_at_the_input():
    runs = gradient_runs({"vae-relu": 8.0, "vae-tanh": 1.0, "vae-sigmoid": 0.05})
    claim = relu_avoids_vanishing_gradients(study(runs))
    assert claim.verdict == SUPPORTED
    assert claim.numbers["vae-relu_log10_ratio"] > claim.numbers["vae-tanh_log10_ratio"]
    assert claim.numbers["vae-tanh_log10_ratio"] > claim.numbers["vae-sigmoid_log10_ratio"]


def test_vanishing_gradients_not_supported_when_tanh_keeps_more():
    runs = gradient_runs({"vae-relu": 1.0, "vae-tanh": 9.0, "vae-sigmoid": 0.05})
    assert relu_avoids_vanishing_gradients(study(runs)).verdict == NOT_SUPPORTED


def test_vanishing_gradients_inconclusive_without_per_layer_norms():
    runs = [variant(c, s) for c in ("vae-relu", "vae-tanh", "vae-sigmoid") for s in SEEDS]
    claim = relu_avoids_vanishing_gradients(study(runs))
    assert claim.verdict == INCONCLUSIVE
    assert "gradient norms" in claim.explanation


# Swish compresses better -----------------------------------------------------------------------


def rd_point(activation: str, seed: int, beta: float, rate_offset: float) -> RunResult:
    """A point on rate = 400 / distortion (+ offset): higher beta, more distortion, less rate."""
    distortion = 80.0 + 20.0 * beta + NOISE[seed]
    figures = {"val/reconstruction": distortion, "val/kl": 400.0 / distortion + rate_offset}
    figures["val/kl"] += OTHER_NOISE[seed] * 0.1
    return variant(f"vae-{activation}", seed, figures=figures, sweep="beta", value=beta)


def rd_study(silu_offset: dict[int, float]) -> StudyResults:
    """ReLU and SiLU beta sweeps (0.5, 2) beside the main sweep's beta = 1 point."""
    claim_runs = [rd_point("relu", s, b, 0.0) for s in SEEDS for b in (0.5, 2.0)]
    claim_runs += [rd_point("silu", s, b, silu_offset[s]) for s in SEEDS for b in (0.5, 2.0)]
    main = [rd_point("relu", s, 1.0, 0.0) for s in SEEDS]
    main += [rd_point("silu", s, 1.0, silu_offset[s]) for s in SEEDS]
    main = [replace(run, sweep=None, value=None) for run in main]
    return study(main, claim_runs)


def test_rate_gap_interpolates_on_the_overlapping_distortion_range():
    import numpy as np

    curve = (np.array([1.0, 3.0]), np.array([10.0, 6.0]))
    reference = (np.array([2.0, 4.0]), np.array([9.0, 9.0]))
    # Overlap [2, 3]: the curve goes 8 -> 6, the reference stays 9; mean gap -2.
    assert rate_gap_at_equal_distortion(curve, reference) == pytest.approx(-2.0)
    assert rate_gap_at_equal_distortion(curve, (np.array([5.0, 6.0]), np.ones(2))) is None


def test_swish_supported_when_its_rate_is_lower_at_equal_distortion():
    claim = swish_compresses_better(rd_study({0: -2.0, 1: -2.2, 2: -1.9}))
    assert claim.verdict == SUPPORTED
    gap = claim.numbers["silu_minus_relu_rate"]
    assert gap["mean"] == pytest.approx(-2.0333, abs=0.05)
    assert gap["n"] == 3
    betas = [row["beta"] for row in claim.table if row["config"] == "vae-silu"]
    assert betas == [0.5, 1.0, 2.0]


def test_swish_not_supported_when_its_rate_is_higher():
    assert swish_compresses_better(rd_study({0: 1.5, 1: 1.4, 2: 1.7})).verdict == NOT_SUPPORTED


def test_swish_inconclusive_when_the_sign_depends_on_the_seed():
    assert swish_compresses_better(rd_study({0: 1.0, 1: -1.2, 2: 0.1})).verdict == INCONCLUSIVE


# tanh and sigmoid slow training ---------------------------------------------------------------


def descending_history(start: float, step: float, epochs: int = 10) -> tuple[dict, ...]:
    return tuple(
        {"epoch": e, "val/neg_elbo": start - step * e, "train/neg_elbo": start - step * e - 1}
        for e in range(1, epochs + 1)
    )


def speed_study(steps: dict[str, tuple[float, float, float]]) -> StudyResults:
    """Each config's per-seed improvement per epoch; all start at 200 and train 10 epochs."""
    return study(
        variant(c, s, history=descending_history(200.0, steps[c][s])) for c in steps for s in SEEDS
    )


def test_slow_training_supported_when_both_need_more_epochs():
    claim = tanh_sigmoid_slow_training(
        speed_study(
            {
                "vae-relu": (10.0, 10.5, 9.8),
                "vae-tanh": (4.0, 3.6, 3.3),
                "vae-sigmoid": (3.0, 2.8, 3.3),
            }
        )
    )
    assert claim.verdict == SUPPORTED
    rows = {row["config"]: row for row in claim.table}
    # tanh vs relu: the target is the worst final value of the pair (tanh seed 2: 200 - 33).
    assert rows["vae-tanh"]["target"] == pytest.approx(167.0)
    # relu reaches 167 at epochs 4, 4, 4; tanh at 9, 10, 10.
    assert rows["vae-tanh"]["difference_mean"] == pytest.approx(17 / 3)
    assert claim.numbers["vae-sigmoid_minus_relu_epochs"] == pytest.approx(20 / 3)


def test_slow_training_not_supported_when_tanh_is_never_slower():
    claim = tanh_sigmoid_slow_training(
        speed_study(
            {
                "vae-relu": (10.0, 10.5, 9.8),
                "vae-tanh": (10.0, 10.5, 9.8),
                "vae-sigmoid": (3.0, 2.6, 3.3),
            }
        )
    )
    assert claim.verdict == NOT_SUPPORTED
    assert "vae-tanh: never slower" in claim.explanation


def test_slow_training_inconclusive_without_histories():
    runs = [variant(c, s) for c in ("vae-relu", "vae-tanh", "vae-sigmoid") for s in SEEDS]
    assert tanh_sigmoid_slow_training(study(runs)).verdict == INCONCLUSIVE


# Dropout reduces overfitting ------------------------------------------------------------------


def gap_run(seed: int, dropout: float, gap: float, swept: bool) -> RunResult:
    history = ({"epoch": 1, "train/neg_elbo": 100.0, "val/neg_elbo": 100.0 + gap},)
    return variant(
        "vae-prelu",
        seed,
        history=history,
        figures={"val/neg_elbo": 100.0 + gap},
        sweep="dropout" if swept else None,
        value=dropout if swept else None,
    )


def dropout_study(gaps: dict[float, float]) -> StudyResults:
    """Mean train-validation gap per dropout rate; 0.0 is the main sweep's setting."""
    main = [gap_run(s, 0.0, gaps[0.0] + NOISE[s], swept=False) for s in SEEDS]
    swept = [
        gap_run(s, rate, gap + OTHER_NOISE[s], swept=True)
        for rate, gap in gaps.items()
        if rate
        for s in SEEDS
    ]
    return study(main, swept)


def test_dropout_supported_when_every_rate_narrows_the_gap():
    claim = dropout_reduces_overfitting(dropout_study({0.0: 8.0, 0.1: 5.0, 0.3: 2.0}))
    assert claim.verdict == SUPPORTED
    assert claim.numbers == {
        "dropout=0": pytest.approx(8.0 + sum(NOISE.values()) / 3),
        "dropout=0.1": pytest.approx(5.0 + sum(OTHER_NOISE.values()) / 3),
        "dropout=0.3": pytest.approx(2.0 + sum(OTHER_NOISE.values()) / 3),
    }
    assert "train mode" in claim.measurement


def test_dropout_not_supported_when_a_rate_widens_the_gap():
    claim = dropout_reduces_overfitting(dropout_study({0.0: 2.0, 0.3: 6.0}))
    assert claim.verdict == NOT_SUPPORTED


def test_dropout_inconclusive_without_a_sweep():
    assert dropout_reduces_overfitting(dropout_study({0.0: 2.0})).verdict == INCONCLUSIVE


# Latent size chosen on validation -------------------------------------------------------------


def latent_study(nll: dict[int, float]) -> StudyResults:
    """Mean validation IWAE NLL per latent size; 20 is the main sweep's setting."""

    def point(seed: int, latent: int, swept: bool) -> RunResult:
        figures = {
            "val/iwae_nll": nll[latent] + wobble(sorted(nll).index(latent), seed),
            "val/active_units": min(latent, 12),
        }
        sweep = {"sweep": "latent", "value": latent} if swept else {}
        return variant("vae-prelu", seed, figures=figures, **sweep)

    main = [point(s, 20, swept=False) for s in SEEDS]
    return study(main, [point(s, z, swept=True) for z in nll if z != 20 for s in SEEDS])


def test_latent_supported_for_an_interior_resolved_optimum():
    claim = latent_size_by_validation(latent_study({2: 140.0, 10: 120.0, 20: 123.0, 40: 126.0}))
    assert claim.verdict == SUPPORTED
    assert claim.numbers["optimum"] == 10
    active = {row["latent"]: row["active_units"] for row in claim.table}
    assert active == {"latent=2": 2, "latent=10": 10, "latent=20": 12, "latent=40": 12}


def test_latent_inconclusive_when_the_optimum_is_at_the_edge():
    claim = latent_size_by_validation(latent_study({2: 140.0, 10: 125.0, 20: 120.0}))
    assert claim.verdict == INCONCLUSIVE
    assert "edge" in claim.explanation


def test_latent_not_supported_when_no_size_is_resolved():
    claim = latent_size_by_validation(latent_study({2: 120.0, 10: 120.02, 20: 119.99}))
    assert claim.verdict == NOT_SUPPORTED


# A plain autoencoder cannot generate ----------------------------------------------------------


def frechet_study(means: dict[str, float]) -> StudyResults:
    return study(
        variant(c, s, quality={"frechet_distance": m + wobble(i, s)})
        for i, (c, m) in enumerate(means.items())
        for s in SEEDS
    )


def test_ae_cannot_generate_supported_when_its_samples_are_resolved_farther():
    claim = ae_cannot_generate(frechet_study({"vae-prelu": 10.0, "vae-relu": 14.0, "ae-relu": 40}))
    assert claim.verdict == SUPPORTED
    assert claim.numbers["vaes_better_than_ae"] == 2
    assert claim.numbers["vaes"] == 2


def test_ae_cannot_generate_not_supported_when_the_ae_samples_better():
    claim = ae_cannot_generate(frechet_study({"vae-prelu": 30.0, "ae-relu": 12.0}))
    assert claim.verdict == NOT_SUPPORTED


def test_ae_cannot_generate_inconclusive_without_sample_scores():
    runs = [variant(c, s) for c in ("vae-prelu", "ae-relu") for s in SEEDS]
    assert ae_cannot_generate(study(runs)).verdict == INCONCLUSIVE


def test_every_claim_has_a_verdict_on_empty_results():
    claims = evaluate_claims(study([], best=None))
    assert len(claims) == 7
    assert {claim.verdict for claim in claims} == {INCONCLUSIVE}
    assert len({claim.key for claim in claims}) == 7
