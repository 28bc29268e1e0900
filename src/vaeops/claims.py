"""The published claims about activations in VAEs, each put to the test on the study's results.

One function per claim takes the collected results (`StudyResults`, read by `vaeops.report`)
and returns a `Claim`: what is claimed, the measurement that tests it, its numbers, and a verdict
by an explicit rule. Where seeds allow, the rule is statistical: paired comparisons over seeds
with the Holm correction (`vaeops.statistics.compare_with_best`), so "supported" means the
difference is resolved, not just that one mean is lower.
"""

from __future__ import annotations

import math
import statistics as stdlib_statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from vaeops.statistics import Comparison, compare_with_best, describe

Verdict = Literal["supported", "not supported", "inconclusive"]
SUPPORTED: Verdict = "supported"
NOT_SUPPORTED: Verdict = "not supported"
INCONCLUSIVE: Verdict = "inconclusive"

GRAD_NORM_PREFIX = "train/grad_norm/"
# Points on the overlapping distortion range where two rate-distortion curves are compared.
INTERPOLATION_POINTS = 50


@dataclass(frozen=True)
class RunResult:
    """One trained variant: its final figures (train.json, then eval.json over it), its
    per-epoch history, and its sample-quality scores where they were computed."""

    name: str
    kind: str
    activation: str
    seed: int
    metrics: Mapping[str, object]
    history: tuple[Mapping[str, float], ...] = ()
    quality: Mapping[str, object] | None = None
    sweep: str | None = None  # None in the main sweep; "beta", "dropout" or "latent"
    value: float | None = None  # the swept setting's value

    @property
    def config(self) -> str:
        return f"{self.kind}-{self.activation}"

    @property
    def diverged(self) -> bool:
        return bool(self.metrics.get("diverged"))

    def figure(self, key: str) -> float | None:
        """A final figure, None where the variant diverged or its kind lacks it."""
        value = self.metrics.get(key)
        return None if self.diverged or value is None else float(value)


@dataclass(frozen=True)
class StudyResults:
    """Everything the claims and the report read, collected once (`vaeops.report.collect`)."""

    runs: tuple[RunResult, ...]  # the main sweep, AE baseline included
    claim_runs: tuple[RunResult, ...]  # the beta, dropout and latent sweeps
    best_config: str | None  # None where every config diverged
    metric: str  # the promotion metric the best config was chosen on
    alpha: float
    # The main sweep's settings: the sweeps' point at train.beta, model.dropout, model.latent.
    base: Mapping[str, float]
    promotion: Mapping[str, object] = field(default_factory=dict)
    classifier_accuracy: float | None = None
    # config -> {"reconstructions": png, "samples": png} of its first seed.
    grids: Mapping[str, Mapping[str, Path]] = field(default_factory=dict)
    generated: Mapping[str, Path] = field(default_factory=dict)  # the champion's batch job


@dataclass(frozen=True)
class Claim:
    key: str
    title: str
    measurement: str
    numbers: Mapping[str, object]  # the key figures, as in metrics/claims.json
    table: tuple[Mapping[str, object], ...]  # the rows behind them, for the report
    verdict: Verdict
    explanation: str


# Reading the results --------------------------------------------------------------------------


def per_seed(runs: tuple[RunResult, ...], config: str, key: str) -> dict[int, float]:
    """{seed: final figure} of one config, leaving out seeds without the figure."""
    values = {run.seed: run.figure(key) for run in runs if run.config == config}
    return {seed: value for seed, value in sorted(values.items()) if value is not None}


def vae_configs(results: StudyResults) -> list[str]:
    return list(dict.fromkeys(run.config for run in results.runs if run.kind == "vae"))


def summary_row(label: str, name: str, values: Mapping[int, float]) -> dict[str, object]:
    """One table row: the mean, std and 95% interval over seeds of `values`."""
    return {label: name, **describe(list(values.values())).as_dict()}


def is_resolved(comparison: Comparison | None) -> bool:
    return comparison is not None and bool(comparison.resolved)


def p_adjusted(comparison: Comparison | None) -> float | None:
    """The Holm-adjusted p-value; None where no test was possible."""
    return None if comparison is None else comparison.p_adjusted


def mean_of(values: Mapping[int, float]) -> float:
    return stdlib_statistics.fmean(values.values())


def compare_to_reference(
    per_config: dict[str, dict[int, float]], reference: str, alpha: float, lower_is_better: bool
) -> dict[str, Comparison]:
    """Paired, Holm-corrected comparisons of every config with `reference`, by config.

    `resolved` here means Holm-resolved in either direction (compare_with_best only counts the
    reference's side); each claim's rule reads the direction from the means.
    """
    usable = {config: values for config, values in per_config.items() if values}
    if reference not in usable or len(usable) < 2:
        return {}
    comparisons = compare_with_best(usable, reference, alpha, lower_is_better=lower_is_better)
    return {
        comparison.config: replace(
            comparison,
            resolved=comparison.p_adjusted is not None and comparison.p_adjusted <= alpha,
        )
        for comparison in comparisons
    }


def inconclusive(key: str, title: str, measurement: str, why: str) -> Claim:
    """A claim whose measurement is missing from the results: the verdict says so."""
    return Claim(key, title, measurement, {}, (), INCONCLUSIVE, why)


# ReLU gives the best reconstructions ----------------------------------------------------------

RECONSTRUCTION = "val/reconstruction"


def relu_best_reconstruction(results: StudyResults) -> Claim:
    key, title = "relu_best_reconstruction", "ReLU gives the best reconstructions"
    measurement = (
        "Validation reconstruction term (nats per image, lower is better) of every activation "
        "of the main sweep except identity (a linear network, the control), mean over seeds; "
        "paired comparisons with the lowest, Holm-corrected."
    )
    per_config = {
        config: per_seed(results.runs, config, RECONSTRUCTION)
        for config in vae_configs(results)
        if config != "vae-identity"
    }
    per_config = {config: values for config, values in per_config.items() if values}
    if "vae-relu" not in per_config or len(per_config) < 2:
        return inconclusive(key, title, measurement, "ReLU and another activation are needed.")
    best = min(per_config, key=lambda config: mean_of(per_config[config]))
    comparisons = compare_to_reference(per_config, best, results.alpha, lower_is_better=True)
    table = tuple(
        summary_row("config", config, values)
        | {"p_adjusted": p_adjusted(comparisons.get(config))}
        | {"resolved": is_resolved(comparisons.get(config))}
        for config, values in sorted(per_config.items(), key=lambda item: mean_of(item[1]))
    )
    numbers = {"lowest": best, "relu_mean": mean_of(per_config["vae-relu"])}
    numbers["lowest_mean"] = mean_of(per_config[best])
    if best == "vae-relu":
        unresolved = sorted(c for c, comparison in comparisons.items() if not comparison.resolved)
        verdict = INCONCLUSIVE if unresolved else SUPPORTED
        explanation = (
            f"ReLU has the lowest mean; within noise of {', '.join(unresolved)}."
            if unresolved
            else "ReLU has the lowest mean and every other activation is resolved above it."
        )
    else:
        relu = comparisons.get("vae-relu")
        verdict = NOT_SUPPORTED if is_resolved(relu) else INCONCLUSIVE
        explanation = f"{best} reconstructs better than ReLU " + (
            "(resolved)." if verdict == NOT_SUPPORTED else "but within noise of it."
        )
    return Claim(key, title, measurement, numbers, table, verdict, explanation)


# ReLU avoids vanishing gradients --------------------------------------------------------------

GRADIENT_CONFIGS = ("vae-relu", "vae-tanh", "vae-sigmoid")


def grad_norm_columns(run: RunResult) -> list[str]:
    """The per-layer gradient-norm columns of the history, input layer first (data-flow order)."""
    return [
        column
        for column in (run.history[0] if run.history else {})
        if column.startswith(GRAD_NORM_PREFIX)
    ]


def log_ratio_per_epoch(run: RunResult) -> list[float]:
    """log10(first-layer / last-layer gradient norm) at each epoch: how much of the gradient
    reaches the input layer (very negative: the vanishing-gradient signature)."""
    columns = grad_norm_columns(run)
    first, last = columns[0], columns[-1]
    return [
        math.log10(float(row[first]) / float(row[last]))
        for row in run.history
        if float(row[first]) > 0 and float(row[last]) > 0
    ]


def gradient_log_ratios(results: StudyResults, config: str) -> dict[int, list[float]]:
    """{seed: per-epoch log ratios} of a config's non-diverged seeds that recorded the norms."""
    ratios = {
        run.seed: log_ratio_per_epoch(run)
        for run in results.runs
        if run.config == config and not run.diverged and len(grad_norm_columns(run)) >= 2
    }
    return {seed: values for seed, values in ratios.items() if values}


def relu_avoids_vanishing_gradients(results: StudyResults) -> Claim:
    key = "relu_avoids_vanishing_gradients"
    title = "ReLU avoids vanishing gradients better than sigmoid and tanh"
    measurement = (
        "Per-layer L2 norms of the weight gradients over every training epoch; per seed, the mean "
        "over epochs of log10(first layer / last layer). Higher means more gradient reaches the "
        "input layer. Paired comparisons of ReLU with tanh and sigmoid, Holm-corrected."
    )
    ratios = {config: gradient_log_ratios(results, config) for config in GRADIENT_CONFIGS}
    if not all(ratios.values()):
        return inconclusive(
            key, title, measurement, "No per-layer gradient norms in the training histories."
        )
    per_config = {
        config: {seed: stdlib_statistics.fmean(values) for seed, values in seeds.items()}
        for config, seeds in ratios.items()
    }
    comparisons = compare_to_reference(per_config, "vae-relu", results.alpha, lower_is_better=False)
    table = tuple(
        summary_row("config", config, per_config[config])
        | {"first_epoch": stdlib_statistics.fmean(v[0] for v in ratios[config].values())}
        | {"last_epoch": stdlib_statistics.fmean(v[-1] for v in ratios[config].values())}
        | {"p_adjusted": p_adjusted(comparisons.get(config))}
        | {"resolved": is_resolved(comparisons.get(config))}
        for config in GRADIENT_CONFIGS
    )
    relu = mean_of(per_config["vae-relu"])
    others = [config for config in GRADIENT_CONFIGS if config != "vae-relu"]
    higher_than_relu = [c for c in others if mean_of(per_config[c]) > relu]
    if any(is_resolved(comparisons.get(c)) for c in higher_than_relu):
        verdict, explanation = (
            NOT_SUPPORTED,
            (f"{', '.join(higher_than_relu)} keeps more gradient at the input layer than ReLU."),
        )
    elif not higher_than_relu and all(is_resolved(comparisons.get(c)) for c in others):
        verdict, explanation = (
            SUPPORTED,
            ("ReLU's first/last gradient ratio is higher than tanh's and sigmoid's, resolved."),
        )
    else:
        verdict, explanation = INCONCLUSIVE, "The ratios differ by less than the seed spread."
    numbers = {f"{row['config']}_log10_ratio": row["mean"] for row in table}
    return Claim(key, title, measurement, numbers, table, verdict, explanation)


# Swish compresses better than ReLU ------------------------------------------------------------

RATE, DISTORTION = "val/kl", "val/reconstruction"


def sweep_points(results: StudyResults, sweep: str, activation: str) -> list[RunResult]:
    """The variants of one sweep and activation, its base point (the main sweep's variant of the
    same activation and seed, at the main setting) included."""
    swept = [
        run
        for run in results.claim_runs
        if run.sweep == sweep and run.activation == activation and not run.diverged
    ]
    seeds = {run.seed for run in swept}
    base = [
        run
        for run in results.runs
        if run.kind == "vae" and run.activation == activation and run.seed in seeds
    ]
    return swept + [
        replace(run, sweep=sweep, value=results.base[sweep]) for run in base if not run.diverged
    ]


def rd_curve(runs: list[RunResult]) -> tuple[np.ndarray, np.ndarray]:
    """(distortion, rate) points sorted by distortion, as np.interp needs them: (n,), (n,)."""
    points = sorted(
        (run.figure(DISTORTION), run.figure(RATE))
        for run in runs
        if run.figure(DISTORTION) is not None and run.figure(RATE) is not None
    )
    return np.array([p[0] for p in points]), np.array([p[1] for p in points])


def rate_gap_at_equal_distortion(
    curve: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray]
) -> float | None:
    """Mean of curve's rate minus the reference's at equal distortion, by linear interpolation
    over the distortion range both cover; None where they do not overlap."""
    low = max(curve[0].min(), reference[0].min())
    high = min(curve[0].max(), reference[0].max())
    if not low < high:
        return None
    grid = np.linspace(low, high, INTERPOLATION_POINTS)
    return float(np.mean(np.interp(grid, *curve) - np.interp(grid, *reference)))


def mean_curve(runs: list[RunResult]) -> list[dict[str, float]]:
    """The mean (distortion, rate) over seeds at each beta, sorted by beta."""
    betas = sorted({run.value for run in runs})
    rows = []
    for beta in betas:
        at_beta = [run for run in runs if run.value == beta]
        rows.append(
            {
                "beta": beta,
                DISTORTION: stdlib_statistics.fmean(run.figure(DISTORTION) for run in at_beta),
                RATE: stdlib_statistics.fmean(run.figure(RATE) for run in at_beta),
                "seeds": len(at_beta),
            }
        )
    return rows


def swish_compresses_better(results: StudyResults) -> Claim:
    key = "swish_compresses_better"
    title = "Swish (SiLU) compresses better than ReLU: a lower rate at equal distortion"
    measurement = (
        "A beta sweep per activation; distortion = validation reconstruction, rate = validation "
        "KL (nats per image). Per seed, SiLU's rate minus ReLU's at equal distortion, by linear "
        "interpolation of both curves over the distortion range both cover, averaged over it; "
        "the 95% interval of that difference over seeds decides."
    )
    points = {a: sweep_points(results, "beta", a) for a in ("relu", "silu")}
    seeds = sorted({r.seed for r in points["relu"]} & {r.seed for r in points["silu"]})
    per_seed_gap = {}
    for seed in seeds:
        curves = [rd_curve([r for r in points[a] if r.seed == seed]) for a in ("silu", "relu")]
        if all(len(curve[0]) >= 2 for curve in curves):
            gap = rate_gap_at_equal_distortion(*curves)
            if gap is not None:
                per_seed_gap[seed] = gap
    if not per_seed_gap:
        return inconclusive(
            key, title, measurement, "No overlapping rate-distortion curves of ReLU and SiLU."
        )
    summary = describe(list(per_seed_gap.values()))
    table = tuple(
        {"config": f"vae-{activation}", **row}
        for activation in ("relu", "silu")
        for row in mean_curve(points[activation])
    )
    if summary.n >= 2 and summary.ci_high < 0:
        verdict, explanation = SUPPORTED, "SiLU needs fewer nats of rate at equal distortion."
    elif summary.n >= 2 and summary.ci_low > 0:
        verdict, explanation = NOT_SUPPORTED, "SiLU needs more nats of rate at equal distortion."
    else:
        verdict, explanation = INCONCLUSIVE, "The rate difference is within the seed spread."
    numbers = {"silu_minus_relu_rate": summary.as_dict(), "seeds": sorted(per_seed_gap)}
    return Claim(key, title, measurement, numbers, table, verdict, explanation)


# tanh and sigmoid slow training ---------------------------------------------------------------

SPEED_REFERENCE = "vae-relu"
SLOW_CANDIDATES = ("vae-tanh", "vae-sigmoid")
ELBO = "val/neg_elbo"
SAME_TARGET = "zero difference"  # the reference of the paired tests of epoch differences


def epochs_to_reach(run: RunResult, target: float) -> int | None:
    """The first epoch whose validation negative ELBO is at or below `target`."""
    return next((int(row["epoch"]) for row in run.history if float(row[ELBO]) <= target), None)


def speed_runs(results: StudyResults, config: str) -> list[RunResult]:
    return [
        run for run in results.runs if run.config == config and not run.diverged and run.history
    ]


@dataclass(frozen=True)
class SpeedComparison:
    """Epochs to a target of one candidate and ReLU: the target is the worst final validation
    negative ELBO of any seed of the two, so every seed of both reaches it."""

    config: str
    target: float
    epochs: dict[int, int]  # seed -> the candidate's first epoch at or below the target
    reference_epochs: dict[int, int]  # seed -> ReLU's

    @property
    def differences(self) -> dict[int, float]:
        """seed -> candidate minus ReLU epochs (positive: the candidate is slower)."""
        seeds = sorted(set(self.epochs) & set(self.reference_epochs))
        return {seed: float(self.epochs[seed] - self.reference_epochs[seed]) for seed in seeds}


def speed_comparison(results: StudyResults, config: str) -> SpeedComparison:
    candidate, reference = speed_runs(results, config), speed_runs(results, SPEED_REFERENCE)
    target = max(float(run.history[-1][ELBO]) for run in candidate + reference)
    return SpeedComparison(
        config,
        target,
        {run.seed: epochs_to_reach(run, target) for run in candidate},
        {run.seed: epochs_to_reach(run, target) for run in reference},
    )


def speed_comparisons(results: StudyResults) -> list[SpeedComparison]:
    """tanh and sigmoid each against ReLU, where all three have histories."""
    configs = (SPEED_REFERENCE, *SLOW_CANDIDATES)
    if not all(speed_runs(results, config) for config in configs):
        return []
    return [speed_comparison(results, config) for config in SLOW_CANDIDATES]


def tanh_sigmoid_slow_training(results: StudyResults) -> Claim:
    key, title = "tanh_sigmoid_slow_training", "tanh and sigmoid slow training"
    measurement = (
        "Epochs until the validation negative ELBO first reaches a target, for tanh and for "
        "sigmoid each against ReLU: the target is the worst final value of any seed of the pair, "
        "so every seed reaches it. Per seed, the candidate's epochs minus ReLU's; the two "
        "differences are tested against zero (paired over seeds, Holm-corrected)."
    )
    speeds = speed_comparisons(results)
    if not speeds:
        return inconclusive(key, title, measurement, "ReLU, tanh and sigmoid runs are needed.")
    differences = {speed.config: speed.differences for speed in speeds}
    zero = {seed: 0.0 for seed in set().union(*differences.values())}
    comparisons = compare_to_reference(
        {SAME_TARGET: zero, **differences}, SAME_TARGET, results.alpha, lower_is_better=True
    )
    table = tuple(
        {"config": speed.config, "target": speed.target}
        | {"epochs": mean_of(speed.epochs), "relu_epochs": mean_of(speed.reference_epochs)}
        | {
            f"difference_{k}": v
            for k, v in describe(list(speed.differences.values())).as_dict().items()
        }
        | {"p_adjusted": p_adjusted(comparisons.get(speed.config))}
        | {"resolved": is_resolved(comparisons.get(speed.config))}
        for speed in speeds
    )
    never_slower = [c for c, diff in differences.items() if all(d <= 0 for d in diff.values())]
    slower = {
        c: mean_of(diff) > 0 and is_resolved(comparisons.get(c)) for c, diff in differences.items()
    }
    verdict_of = {c: "slower (resolved)" if slower[c] else "not resolved" for c in differences}
    verdict_of |= {c: "never slower than ReLU" for c in never_slower}
    faster = [
        c
        for c, diff in differences.items()
        if mean_of(diff) < 0 and is_resolved(comparisons.get(c))
    ]
    if never_slower or faster:
        verdict = NOT_SUPPORTED
    elif all(slower.values()):
        verdict = SUPPORTED
    else:
        verdict = INCONCLUSIVE
    explanation = "; ".join(f"{config}: {state}" for config, state in verdict_of.items()) + "."
    numbers = {f"{row['config']}_minus_relu_epochs": row["difference_mean"] for row in table}
    numbers |= {f"{row['config']}_target": row["target"] for row in table}
    return Claim(key, title, measurement, numbers, table, verdict, explanation)


# Dropout reduces overfitting ------------------------------------------------------------------


def train_val_gap(run: RunResult) -> float:
    """Validation minus training negative ELBO at the last epoch (nats per image)."""
    last = run.history[-1]
    return float(last["val/neg_elbo"]) - float(last["train/neg_elbo"])


def sweep_table(
    runs: list[RunResult], measure: Callable[[RunResult], float | None]
) -> dict[float, dict[int, float]]:
    """{setting value: {seed: measure}} of a sweep's points, by increasing setting."""
    table: dict[float, dict[int, float]] = {}
    for run in sorted(runs, key=lambda run: (run.value, run.seed)):
        value = measure(run)
        if value is not None:
            table.setdefault(run.value, {})[run.seed] = value
    return table


def labelled(table: dict[float, dict[int, float]], setting: str) -> dict[str, dict[int, float]]:
    return {f"{setting}={value:g}": seeds for value, seeds in table.items()}


def best_activation(results: StudyResults) -> str:
    """The best config's activation: the one the dropout and latent sweeps train."""
    return (results.best_config or "").removeprefix("vae-")


def dropout_reduces_overfitting(results: StudyResults) -> Claim:
    key, title = "dropout_reduces_overfitting", "Dropout reduces overfitting in a VAE"
    measurement = (
        f"A dropout sweep of the best config ({results.best_config}); the train-validation gap is "
        "the validation minus the training negative ELBO at the last epoch. The training figure "
        "is the mean over the epoch's batches in train mode, so with dropout on it is measured "
        "with dropout active. Paired comparisons of each rate with the main setting, "
        "Holm-corrected."
    )
    runs = [
        run for run in sweep_points(results, "dropout", best_activation(results)) if run.history
    ]
    gaps = sweep_table(runs, train_val_gap)
    base = results.base["dropout"]
    if base not in gaps or len(gaps) < 2:
        return inconclusive(key, title, measurement, "No dropout sweep beside the main setting.")
    per_setting = labelled(gaps, "dropout")
    reference = f"dropout={base:g}"
    comparisons = compare_to_reference(per_setting, reference, results.alpha, lower_is_better=True)
    elbo = labelled(sweep_table(runs, lambda run: run.figure(ELBO)), "dropout")
    table = tuple(
        summary_row("dropout", label, values)
        | {"val_neg_elbo": mean_of(elbo[label]) if elbo.get(label) else None}
        | {"p_adjusted": p_adjusted(comparisons.get(label))}
        | {"resolved": is_resolved(comparisons.get(label))}
        for label, values in per_setting.items()
    )
    base_gap = mean_of(gaps[base])
    raised = [value for value in gaps if value > base]
    reduces = {value: mean_of(gaps[value]) < base_gap for value in raised}
    resolved = {value: is_resolved(comparisons.get(f"dropout={value:g}")) for value in raised}
    if any(resolved[value] and not reduces[value] for value in raised):
        verdict, explanation = NOT_SUPPORTED, "A higher dropout rate widens the gap (resolved)."
    elif raised and all(reduces.values()) and all(resolved.values()):
        verdict, explanation = SUPPORTED, "Every higher dropout rate narrows the gap (resolved)."
    else:
        verdict, explanation = INCONCLUSIVE, "The gaps differ by less than the seed spread."
    numbers = {row["dropout"]: row["mean"] for row in table}
    return Claim(key, title, measurement, numbers, table, verdict, explanation)


# The latent size should be chosen on validation -----------------------------------------------

IWAE = "val/iwae_nll"


def latent_size_by_validation(results: StudyResults) -> Claim:
    key = "latent_size_by_validation"
    title = "The latent dimension should be chosen on a validation set"
    measurement = (
        f"A latent-size sweep of the best config ({results.best_config}): validation IWAE NLL "
        "(nats per image) and active units per size. Supported when the validation optimum is "
        "inside the swept range and every other size is resolved worse than it (paired, Holm): "
        "the size matters and validation finds it."
    )
    runs = sweep_points(results, "latent", best_activation(results))
    nll = sweep_table(runs, lambda run: run.figure(IWAE))
    if len(nll) < 2:
        return inconclusive(key, title, measurement, "No latent-size sweep beside the main size.")
    per_setting = labelled(nll, "latent")
    optimum = min(nll, key=lambda value: mean_of(nll[value]))
    comparisons = compare_to_reference(
        per_setting, f"latent={optimum:g}", results.alpha, lower_is_better=True
    )
    active = labelled(sweep_table(runs, lambda r: r.figure("val/active_units")), "latent")
    test = labelled(sweep_table(runs, lambda r: r.figure("test/iwae_nll")), "latent")
    table = tuple(
        summary_row("latent", label, values)
        | {"active_units": mean_of(active[label]) if active.get(label) else None}
        | {"test_iwae_nll": mean_of(test[label]) if test.get(label) else None}
        | {"p_adjusted": p_adjusted(comparisons.get(label))}
        | {"resolved": is_resolved(comparisons.get(label))}
        for label, values in per_setting.items()
    )
    interior = min(nll) < optimum < max(nll)
    resolved = [is_resolved(comparison) for comparison in comparisons.values()]
    if resolved and not any(resolved):
        verdict, explanation = NOT_SUPPORTED, "No latent size is resolved from the optimum."
    elif not interior:
        verdict = INCONCLUSIVE
        explanation = f"The validation optimum (latent {optimum:g}) is at the swept range's edge."
    elif all(resolved):
        verdict = SUPPORTED
        explanation = f"Latent size {optimum:g} is best on validation, every other size resolved."
    else:
        verdict = INCONCLUSIVE
        explanation = f"Latent size {optimum:g} is best but within noise of another size."
    numbers = {"optimum": optimum} | {row["latent"]: row["mean"] for row in table}
    return Claim(key, title, measurement, numbers, table, verdict, explanation)


# A plain autoencoder cannot generate ----------------------------------------------------------

FRECHET = "frechet_distance"


def frechet_per_seed(results: StudyResults, config: str) -> dict[int, float]:
    return {
        run.seed: float(run.quality[FRECHET])
        for run in sorted(results.runs, key=lambda run: run.seed)
        if run.config == config and run.quality and run.quality.get(FRECHET) is not None
    }


def ae_cannot_generate(results: StudyResults) -> Claim:
    key, title = "ae_cannot_generate", "A plain autoencoder cannot generate; a VAE can"
    measurement = (
        "Frechet distance (classifier features) of prior samples to the test digits, lower is "
        f"better; the AE baseline against the best config ({results.best_config}) and every VAE, "
        "paired over seeds, Holm-corrected. The AE's samples come from a Gaussian fitted to its "
        "training codes."
    )
    configs = list(dict.fromkeys(run.config for run in results.runs))
    per_config = {config: frechet_per_seed(results, config) for config in configs}
    per_config = {config: values for config, values in per_config.items() if values}
    baselines = [config for config in per_config if config.startswith("ae-")]
    if not baselines or results.best_config not in per_config:
        return inconclusive(key, title, measurement, "No sample-quality scores of the AE and VAE.")
    baseline = baselines[0]
    comparisons = compare_to_reference(
        per_config, results.best_config, results.alpha, lower_is_better=True
    )
    table = tuple(
        summary_row("config", config, values)
        | {"p_adjusted": p_adjusted(comparisons.get(config))}
        | {"resolved": is_resolved(comparisons.get(config))}
        for config, values in sorted(per_config.items(), key=lambda item: mean_of(item[1]))
    )
    ae_mean, best_mean = mean_of(per_config[baseline]), mean_of(per_config[results.best_config])
    vaes_better = sum(mean_of(v) < ae_mean for c, v in per_config.items() if c != baseline)
    resolved = is_resolved(comparisons.get(baseline))
    if resolved and ae_mean > best_mean:
        verdict, explanation = (
            SUPPORTED,
            (
                f"The AE's samples are resolved farther from real digits than "
                f"{results.best_config}'s."
            ),
        )
    elif resolved:
        verdict, explanation = NOT_SUPPORTED, "The AE's samples are closer to real digits."
    else:
        verdict, explanation = INCONCLUSIVE, "The Frechet distances are within the seed spread."
    numbers = {
        "ae_frechet": ae_mean,
        "best_vae_frechet": best_mean,
        "vaes_better_than_ae": vaes_better,
        "vaes": len(per_config) - 1,
    }
    return Claim(key, title, measurement, numbers, table, verdict, explanation)


CLAIMS: tuple[Callable[[StudyResults], Claim], ...] = (
    relu_best_reconstruction,
    relu_avoids_vanishing_gradients,
    swish_compresses_better,
    tanh_sigmoid_slow_training,
    dropout_reduces_overfitting,
    latent_size_by_validation,
    ae_cannot_generate,
)


def evaluate_claims(results: StudyResults) -> list[Claim]:
    """Every claim with its verdict, in the order the report lists them."""
    return [claim(results) for claim in CLAIMS]
