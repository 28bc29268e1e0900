"""The study report: the study's answer on one page.

`collect` reads the pipeline's outputs into `StudyResults`; `write_report` puts the claims to the
test (`vaeops.claims`) and writes `reports/study.html` (one self-contained page: figures and
grids embedded as data URIs, no network), `reports/study.md` (the same, figures as files under
`reports/figures/`), the leaderboard as `reports/leaderboard.csv`, the plot data under
`paths.plots` and the verdicts as `metrics/claims.json`. Every output is the same bytes for the
same inputs: no timestamps, no timings (training times stay in MLflow), PNGs without a
Software tag, JSON with sorted keys.
"""

from __future__ import annotations

import base64
import csv
import html
import math
import shutil
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from vaeops.claims import (
    DISTORTION,
    GRAD_NORM_PREFIX,
    RATE,
    Claim,
    RunResult,
    StudyResults,
    best_activation,
    evaluate_claims,
    grad_norm_columns,
    mean_curve,
    speed_comparisons,
    sweep_points,
    sweep_table,
    train_val_gap,
)
from vaeops.config import Params
from vaeops.outputs import EVAL_FILE, HISTORY_FILE, IMAGES_DIR, TRAIN_FILE, read_json, write_json
from vaeops.statistics import compare_with_best, describe
from vaeops.variants import sweep_variants

GRIDS = ("reconstructions", "samples")
GENERATED = ("samples", "reconstructions", "interpolations")
# The leaderboard's figures per config: mean ± std and 95% interval over seeds.
LEADERBOARD_METRICS = (
    "val/neg_elbo",
    "test/neg_elbo",
    "val/iwae_nll",
    "val/reconstruction",
    "val/kl",
    "val/active_units",
    "val/dead_unit_fraction",
    "frechet_distance",
)
QUALITY_KEYS = ("frechet_distance", "mean_confidence", "classes_covered", "class_entropy")
FIGURE_DPI = 100
MISSING = "n/a"  # a figure a config lacks (the AE has no ELBO)
PREFECT_LEADERBOARD_KEY = "study-leaderboard"
PREFECT_CLAIMS_KEY = "study-claims"


# Collecting the results -----------------------------------------------------------------------


def read_history(path: Path) -> tuple[dict[str, float], ...]:
    """A history.csv as rows of floats; empty cells (a metric a kind lacks) are left out."""
    if not path.is_file():
        return ()
    with path.open(newline="") as handle:
        return tuple(
            {key: float(value) for key, value in row.items() if value not in ("", None)}
            for row in csv.DictReader(handle)
        )


def read_run(train_dir: Path, eval_dir: Path, quality_file: Path) -> RunResult:
    """One variant from its train and evaluate folders (eval.json's figures win)."""
    trained = read_json(train_dir / TRAIN_FILE)
    metrics = trained | read_json(eval_dir / EVAL_FILE)
    return RunResult(
        name=trained["variant"],
        kind=trained["kind"],
        activation=trained["activation"],
        seed=int(trained["seed"]),
        metrics=metrics,
        history=read_history(train_dir / HISTORY_FILE),
        quality=read_json(quality_file) if quality_file.is_file() else None,
        sweep=trained.get("sweep"),
        value=trained.get("value"),
    )


def main_runs(params: Params) -> tuple[RunResult, ...]:
    quality = params.paths.sample_quality
    return tuple(
        read_run(v.train_dir(params), v.eval_dir(params), quality / f"{v.name}.json")
        for v in sweep_variants(params)
    )


def claim_runs(params: Params) -> tuple[RunResult, ...]:
    """Every variant the claim sweeps trained (none where they have not run)."""
    sweeps = params.paths.claim_sweeps
    folders = sorted((sweeps / "variants").glob(f"*/{TRAIN_FILE}"))
    quality = params.paths.sample_quality
    return tuple(
        read_run(
            folder.parent,
            sweeps / "evaluation" / folder.parent.name,
            quality / f"{folder.parent.name}.json",
        )
        for folder in folders
    )


def first_seed_grids(params: Params) -> dict[str, dict[str, Path]]:
    """config -> its first seed's reconstruction and sample grids (the evaluate step's)."""
    grids: dict[str, dict[str, Path]] = {}
    for variant in sweep_variants(params):
        images = variant.eval_dir(params) / IMAGES_DIR
        found = {name: images / f"{name}.png" for name in GRIDS}
        if variant.config_name not in grids and all(path.is_file() for path in found.values()):
            grids[variant.config_name] = found
    return grids


def collect(params: Params) -> StudyResults:
    """The study's outputs, read once: main sweep, claim sweeps, headline and promotion."""
    metrics = params.paths.metrics
    study = read_json(metrics / "study.json")
    classifier = metrics / "classifier.json"
    generated = {name: params.paths.generated / f"{name}.png" for name in GENERATED}
    return StudyResults(
        runs=main_runs(params),
        claim_runs=claim_runs(params),
        best_config=study["best"]["config"],
        metric=study["metric"],
        alpha=params.claims.alpha,
        base={
            "beta": params.train.beta,
            "dropout": params.model.dropout,
            "latent": params.model.latent,
        },
        promotion=read_json(metrics / "promotion.json"),
        classifier_accuracy=(
            read_json(classifier).get("test_accuracy") if classifier.is_file() else None
        ),
        grids=first_seed_grids(params),
        generated={name: path for name, path in generated.items() if path.is_file()},
    )


# The leaderboard ------------------------------------------------------------------------------


def figure_of(run: RunResult, key: str) -> float | None:
    """A final figure of a variant, its sample-quality scores included."""
    if key in QUALITY_KEYS:
        value = (run.quality or {}).get(key)
        return None if value is None else float(value)
    return run.figure(key)


def config_values(runs: Iterable[RunResult], config: str, key: str) -> dict[int, float]:
    values = {run.seed: figure_of(run, key) for run in runs if run.config == config}
    return {seed: value for seed, value in sorted(values.items()) if value is not None}


def configs_of(results: StudyResults) -> list[str]:
    """The main sweep's configs, best first by the study metric, those without it (the AE) last."""
    configs = list(dict.fromkeys(run.config for run in results.runs))

    def rank(config: str) -> tuple[bool, float]:
        values = config_values(results.runs, config, results.metric)
        return (not values, statistics.fmean(values.values()) if values else 0.0)

    return sorted(configs, key=rank)


def comparison_with_best(results: StudyResults) -> dict[str, dict[str, object]]:
    """config -> the paired comparison of its study metric with the best config's."""
    per_config = {
        config: config_values(results.runs, config, results.metric)
        for config in configs_of(results)
    }
    per_config = {config: values for config, values in per_config.items() if values}
    if results.best_config not in per_config or len(per_config) < 2:
        return {}
    comparisons = compare_with_best(per_config, results.best_config, results.alpha)
    found: dict[str, dict[str, object]] = {
        results.best_config: {"p_adjusted": None, "vs_best": "best"}
    }
    for comparison in comparisons:
        found[comparison.config] = {
            "p_adjusted": comparison.p_adjusted,
            "vs_best": "resolved" if comparison.resolved else "within noise",
        }
    return found


def leaderboard(results: StudyResults) -> list[dict[str, object]]:
    """One row per config: seeds, diverged, each figure's summary, the comparison with the best."""
    comparisons = comparison_with_best(results)
    rows = []
    for config in configs_of(results):
        members = [run for run in results.runs if run.config == config]
        row: dict[str, object] = {
            "config": config,
            "seeds": sum(not run.diverged for run in members),
            "diverged": sum(run.diverged for run in members),
        }
        for key in LEADERBOARD_METRICS:
            values = list(config_values(results.runs, config, key).values())
            summary = describe(values).as_dict() if values else {}
            for part in ("mean", "std", "ci_low", "ci_high"):
                row[f"{key} {part}"] = plain(summary.get(part))
        row |= comparisons.get(config, {"p_adjusted": None, "vs_best": "n/a"})
        rows.append(row)
    return rows


# Plot data (DVC plots) ------------------------------------------------------------------------


def mean(values: Iterable[float]) -> float:
    return statistics.fmean(values)


def rate_distortion_rows(results: StudyResults) -> list[dict[str, object]]:
    """Mean (distortion, rate) per beta of each activation the beta sweep covers."""
    activations = dict.fromkeys(run.activation for run in results.claim_runs if run.sweep == "beta")
    return [
        {"config": f"vae-{activation}", **row}
        for activation in activations
        for row in mean_curve(sweep_points(results, "beta", activation))
    ]


def grad_norm_rows(results: StudyResults) -> list[dict[str, object]]:
    """Per VAE config and epoch, the mean over seeds of each layer's gradient norm and of the
    first-over-last ratio."""
    rows = []
    for config in dict.fromkeys(run.config for run in results.runs if run.kind == "vae"):
        runs = [r for r in results.runs if r.config == config and not r.diverged]
        runs = [r for r in runs if len(grad_norm_columns(r)) >= 2]
        if not runs:
            continue
        columns = grad_norm_columns(runs[0])
        for epoch in range(min(len(run.history) for run in runs)):
            at_epoch = [run.history[epoch] for run in runs]
            row: dict[str, object] = {"config": config, "epoch": int(at_epoch[0]["epoch"])}
            row["first_over_last"] = mean(h[columns[0]] / h[columns[-1]] for h in at_epoch)
            row |= {column: mean(h[column] for h in at_epoch) for column in columns}
            rows.append(row)
    return rows


def summary_rows(
    results: StudyResults, keys: tuple[str, ...], kind: str | None = None
) -> list[dict[str, object]]:
    """Per config, the mean over seeds of each key (configs with none of them left out)."""
    rows = []
    for config in configs_of(results):
        if kind and not config.startswith(f"{kind}-"):
            continue
        row: dict[str, object] = {"config": config}
        for key in keys:
            values = config_values(results.runs, config, key)
            row[key] = mean(values.values()) if values else None
        if any(row[key] is not None for key in keys):
            rows.append(row)
    return rows


def dropout_rows(results: StudyResults) -> list[dict[str, object]]:
    activation = best_activation(results)
    runs = [r for r in sweep_points(results, "dropout", activation) if r.history]
    gaps = sweep_table(runs, train_val_gap)
    val = sweep_table(runs, lambda run: run.figure("val/neg_elbo"))
    train = sweep_table(runs, lambda run: float(run.history[-1]["train/neg_elbo"]))
    return [
        {
            "config": results.best_config,
            "dropout": value,
            "train_val_gap": mean(gaps[value].values()),
            "train/neg_elbo": mean(train[value].values()),
            "val/neg_elbo": mean(val[value].values()) if val.get(value) else None,
            "seeds": len(gaps[value]),
        }
        for value in gaps
    ]


def latent_rows(results: StudyResults) -> list[dict[str, object]]:
    runs = sweep_points(results, "latent", best_activation(results))
    keys = ("val/iwae_nll", "test/iwae_nll", "val/active_units")
    tables = {key: sweep_table(runs, lambda run, key=key: run.figure(key)) for key in keys}
    return [
        {"config": results.best_config, "latent": value}
        | {
            key: mean(tables[key][value].values()) if tables[key].get(value) else None
            for key in keys
        }
        | {"seeds": len(tables["val/iwae_nll"][value])}
        for value in tables["val/iwae_nll"]
    ]


def epochs_to_target_rows(results: StudyResults) -> list[dict[str, object]]:
    """Mean epochs to each pair's target: the candidate (tanh, sigmoid) and ReLU beside it."""
    rows = []
    for speed in speed_comparisons(results):
        for label, epochs in (
            (speed.config, speed.epochs),
            (f"vae-relu (vs {speed.config})", speed.reference_epochs),
        ):
            rows.append(
                {"config": label, "epochs_to_target": mean(epochs.values()), "target": speed.target}
            )
    return rows


PLOT_DATA: dict[str, Callable[[StudyResults], list[dict[str, object]]]] = {
    "rate_distortion.csv": rate_distortion_rows,
    "grad_norms.csv": grad_norm_rows,
    "dead_units.csv": lambda results: summary_rows(results, ("val/dead_unit_fraction",)),
    "sweep_dropout.csv": dropout_rows,
    "sweep_latent.csv": latent_rows,
    "epochs_to_target.csv": epochs_to_target_rows,
    "sample_quality.csv": lambda results: summary_rows(results, QUALITY_KEYS),
}


# Writing files --------------------------------------------------------------------------------


def plain(value: object) -> object:
    """A JSON- and CSV-safe value: NumPy scalars as Python numbers, NaN as None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def write_rows(path: Path, rows: list[dict[str, object]]) -> Path:
    """A CSV with the union of the rows' columns, in first-seen order; empty cells for None."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row)) or ["config"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows([{key: plain(value) for key, value in row.items()} for row in rows])
    return path


def claims_metrics(claims: list[Claim]) -> dict[str, object]:
    """metrics/claims.json: each claim's title, verdict and key numbers."""
    return {
        claim.key: {
            "title": claim.title,
            "verdict": claim.verdict,
            "numbers": plain(claim.numbers),
        }
        for claim in claims
    }


# Figures --------------------------------------------------------------------------------------


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path) -> Path:
    """A PNG without the Software tag, so the same figure is the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=FIGURE_DPI, metadata={"Software": None})
    pyplot().close(figure)
    return path


def plot_rate_distortion(rows: list[dict[str, object]], path: Path) -> Path:
    figure, axes = pyplot().subplots(figsize=(6, 4))
    for config in dict.fromkeys(row["config"] for row in rows):
        curve = sorted((r[DISTORTION], r[RATE], r["beta"]) for r in rows if r["config"] == config)
        axes.plot([p[0] for p in curve], [p[1] for p in curve], marker="o", label=config)
        for distortion, rate, beta in curve:
            axes.annotate(f"β={beta:g}", (distortion, rate), fontsize=7)
    axes.set_xlabel("distortion: validation reconstruction (nats per image)")
    axes.set_ylabel("rate: validation KL (nats per image)")
    axes.legend()
    return save_figure(figure, path)


def plot_learning_curves(results: StudyResults, path: Path) -> Path:
    """Validation negative ELBO per epoch, mean over seeds, one line per VAE config."""
    figure, axes = pyplot().subplots(figsize=(7, 4.5))
    for config in dict.fromkeys(run.config for run in results.runs if run.kind == "vae"):
        runs = [r for r in results.runs if r.config == config and r.history and not r.diverged]
        if not runs:
            continue
        epochs = min(len(run.history) for run in runs)
        values = [mean(run.history[e]["val/neg_elbo"] for run in runs) for e in range(epochs)]
        axes.plot(range(1, epochs + 1), values, label=config)
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation negative ELBO (nats per image)")
    axes.set_yscale("log")
    axes.legend(fontsize=7, ncol=2)
    return save_figure(figure, path)


def plot_grad_norms(rows: list[dict[str, object]], path: Path) -> Path:
    """Each layer's gradient norm over training, one panel per config (relu, tanh, sigmoid)."""
    configs = [
        c for c in ("vae-relu", "vae-tanh", "vae-sigmoid") if any(r["config"] == c for r in rows)
    ]
    figure, panels = pyplot().subplots(
        1, len(configs), figsize=(4 * len(configs), 3.5), squeeze=False
    )
    for axes, config in zip(panels[0], configs, strict=True):
        own = [row for row in rows if row["config"] == config]
        for column in (key for key in own[0] if key.startswith(GRAD_NORM_PREFIX)):
            label = column.removeprefix(GRAD_NORM_PREFIX)
            axes.plot([r["epoch"] for r in own], [r[column] for r in own], label=label)
        axes.set_title(config)
        axes.set_xlabel("epoch")
        axes.set_yscale("log")
        axes.legend(fontsize=7)
    panels[0][0].set_ylabel("weight-gradient L2 norm (mean over batches)")
    return save_figure(figure, path)


def plot_bars(rows: list[dict[str, object]], path: Path, key: str, label: str) -> Path:
    """Horizontal bars of one per-config figure, the first row on top."""
    shown = [row for row in rows if row.get(key) is not None][::-1]
    figure, axes = pyplot().subplots(figsize=(6, 0.35 * len(shown) + 1.2))
    axes.barh([row["config"] for row in shown], [row[key] for row in shown])
    axes.set_xlabel(label)
    return save_figure(figure, path)


def plot_sweep(rows: list[dict[str, object]], path: Path, x: str, ys: tuple[str, str]) -> Path:
    """A sweep's two figures against its setting, the second on its own axis."""
    figure, axes = pyplot().subplots(figsize=(6, 4))
    axes.plot([r[x] for r in rows], [r[ys[0]] for r in rows], marker="o", color="C0")
    axes.set_xlabel(x)
    axes.set_ylabel(ys[0], color="C0")
    other = axes.twinx()
    points = [(r[x], r[ys[1]]) for r in rows if r.get(ys[1]) is not None]
    other.plot([p[0] for p in points], [p[1] for p in points], marker="s", color="C1")
    other.set_ylabel(ys[1], color="C1")
    if x == "latent":
        axes.set_xscale("log", base=2)
    return save_figure(figure, path)


# figure name -> (its plot data, how to draw it)
FIGURE_PLANS: dict[str, tuple[str, Callable[[list[dict[str, object]], Path], Path]]] = {
    "rate_distortion": ("rate_distortion.csv", plot_rate_distortion),
    "grad_norms": ("grad_norms.csv", plot_grad_norms),
    "dead_units": (
        "dead_units.csv",
        partial(plot_bars, key="val/dead_unit_fraction", label="dead-unit fraction (validation)"),
    ),
    "frechet_distance": (
        "sample_quality.csv",
        partial(plot_bars, key="frechet_distance", label="Frechet distance to test digits"),
    ),
    "sweep_dropout": (
        "sweep_dropout.csv",
        partial(plot_sweep, x="dropout", ys=("train_val_gap", "val/neg_elbo")),
    ),
    "sweep_latent": (
        "sweep_latent.csv",
        partial(plot_sweep, x="latent", ys=("val/iwae_nll", "val/active_units")),
    ),
}


def draw_figures(results: StudyResults, data: dict[str, list], folder: Path) -> dict[str, Path]:
    """Every figure whose data exists: name -> PNG under `folder`."""
    drawn = {"learning_curves": plot_learning_curves(results, folder / "learning_curves.png")}
    for name, (source, plot) in FIGURE_PLANS.items():
        if data[source]:
            drawn[name] = plot(data[source], folder / f"{name}.png")
    return drawn


FIGURE_CAPTIONS = {
    "rate_distortion": "Rate-distortion curves of the beta sweep (mean over seeds per beta).",
    "learning_curves": "Validation negative ELBO per epoch, mean over seeds (log scale).",
    "grad_norms": "Per-layer weight-gradient norms over training, mean over seeds.",
    "dead_units": "Fraction of hidden units whose output barely varies (validation split).",
    "frechet_distance": "Frechet distance of prior samples to the test digits (lower is better).",
    "sweep_dropout": "Dropout sweep of the best config: train-validation gap and validation ELBO.",
    "sweep_latent": "Latent-size sweep of the best config: validation IWAE NLL and active units.",
}


# The page -------------------------------------------------------------------------------------


def fmt(value: object) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return MISSING if math.isnan(value) else f"{value:.4g}"
    return str(value)


def summary_cell(row: Mapping[str, object], key: str) -> str:
    """'mean ± std [low, high]' of one leaderboard figure."""
    if row.get(f"{key} mean") is None:
        return MISSING
    parts = [fmt(row[f"{key} {part}"]) for part in ("mean", "std", "ci_low", "ci_high")]
    return f"{parts[0]} ± {parts[1]} [{parts[2]}, {parts[3]}]"


LEADERBOARD_HEADERS = ("config", "seeds", "diverged", *LEADERBOARD_METRICS, "p adjusted", "vs best")


def leaderboard_cells(row: Mapping[str, object]) -> list[tuple[str, str]]:
    """(text, sort key) of each cell of a leaderboard row."""
    cells = [(str(row["config"]), str(row["config"]))]
    cells += [(fmt(row[key]), str(row[key])) for key in ("seeds", "diverged")]
    for key in LEADERBOARD_METRICS:
        value = row.get(f"{key} mean")
        cells.append((summary_cell(row, key), "Infinity" if value is None else repr(value)))
    p = row.get("p_adjusted")
    cells.append((fmt(p), "Infinity" if p is None else repr(p)))
    cells.append((str(row["vs_best"]), str(row["vs_best"])))
    return cells


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def html_table(rows: Iterable[Mapping[str, object]], attributes: str = "") -> str:
    rows = list(rows)
    if not rows:
        return ""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table{attributes}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_leaderboard(rows: list[dict[str, object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in LEADERBOARD_HEADERS)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td data-sort="{html.escape(key)}">{html.escape(text)}</td>'
            for text, key in leaderboard_cells(row)
        )
        + "</tr>"
        for row in rows
    )
    return (
        f'<table id="leaderboard" class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def html_claim(claim: Claim) -> str:
    return (
        f'<article class="claim" data-verdict="{html.escape(claim.verdict)}">'
        f"<h3>{html.escape(claim.title)}</h3>"
        f'<p>Verdict: <strong class="verdict">{html.escape(claim.verdict)}</strong>. '
        f"{html.escape(claim.explanation)}</p>"
        f"<p><em>Measurement.</em> {html.escape(claim.measurement)}</p>"
        f"{html_table(claim.table)}</article>"
    )


def html_image(source: str, alt: str) -> str:
    return f'<img src="{source}" alt="{html.escape(alt)}">'


def html_grids(results: StudyResults) -> str:
    """Reconstructions and samples per config, the AE's first so every VAE is beside it."""
    configs = sorted(results.grids, key=lambda config: (not config.startswith("ae-"), config))
    rows = "".join(
        f"<tr><th>{html.escape(config)}</th>"
        + "".join(
            f"<td>{html_image(data_uri(results.grids[config][name]), f'{config} {name}')}</td>"
            for name in GRIDS
        )
        + "</tr>"
        for config in configs
    )
    head = "<tr><th>config</th>" + "".join(f"<th>{name}</th>" for name in GRIDS) + "</tr>"
    return f'<table class="grids"><thead>{head}</thead><tbody>{rows}</tbody></table>'


def champion_lines(results: StudyResults) -> list[str]:
    promotion = results.promotion
    candidate = promotion.get("candidate", {})
    champion = promotion.get("champion", {})
    lines = [
        f"Best config on {results.metric}: {results.best_config} "
        f"(mean {fmt(candidate.get('config_mean'))} ± {fmt(candidate.get('config_std'))}).",
        f"Promotion: {promotion.get('decision')} — {promotion.get('reason')}.",
        f"Champion: version {champion.get('version')} ({fmt(champion.get('value'))}); "
        f"candidate {candidate.get('variant')} version {candidate.get('version')}.",
    ]
    if results.classifier_accuracy is not None:
        lines.append(
            f"Sample quality is scored with a digit classifier of test accuracy "
            f"{fmt(results.classifier_accuracy)}."
        )
    return lines


TIMINGS_NOTE = (
    "Training times are not on this page: files DVC tracks hold no timings. They are the "
    "MLflow metric train_seconds of each variant's run."
)

SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach((header, column) => {
  header.addEventListener("click", () => {
    const body = header.closest("table").tBodies[0];
    const direction = header.dataset.direction === "ascending" ? -1 : 1;
    header.dataset.direction = direction === 1 ? "ascending" : "descending";
    const key = (row) => row.cells[column].dataset.sort;
    const rows = [...body.rows].sort((a, b) => {
      const x = parseFloat(key(a)), y = parseFloat(key(b));
      return direction * (isNaN(x) || isNaN(y) ? key(a).localeCompare(key(b)) : x - y);
    });
    rows.forEach((row) => body.appendChild(row));
  });
});
"""

STYLE = """
body { font-family: sans-serif; max-width: 1400px; margin: 1em auto; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; }
table.sortable th { cursor: pointer; background: #eee; }
.claim { border-left: 4px solid #888; padding-left: 0.8em; margin-bottom: 1.5em; }
.claim[data-verdict="supported"] { border-color: #2a7; }
.claim[data-verdict="not supported"] { border-color: #c33; }
figure { display: inline-block; margin: 0.5em; }
"""


def render_html(
    results: StudyResults, claims: list[Claim], rows: list[dict], figures: dict[str, Path]
) -> str:
    champion = "".join(f"<p>{html.escape(line)}</p>" for line in champion_lines(results))
    generated = "".join(
        f"<figure>{html_image(data_uri(path), f'champion {name}')}"
        f"<figcaption>{name}</figcaption></figure>"
        for name, path in results.generated.items()
    )
    plots = "".join(
        f"<figure>{html_image(data_uri(path), name)}"
        f"<figcaption>{html.escape(FIGURE_CAPTIONS[name])}</figcaption></figure>"
        for name, path in figures.items()
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>VAE activation study</title><style>{STYLE}</style></head><body>"
        "<h1>VAE activation study</h1>"
        f'<section id="champion"><h2>Champion</h2>{champion}{generated}</section>'
        '<section id="leaderboard-section"><h2>Leaderboard</h2>'
        "<p>Per config: mean ± std [95% interval] over seeds; click a header to sort. "
        f"'vs best': paired comparison of {html.escape(results.metric)} with the best config, "
        "Holm-corrected.</p>"
        f"{html_leaderboard(rows)}</section>"
        '<section id="claims"><h2>Claims</h2>'
        f"{''.join(html_claim(claim) for claim in claims)}</section>"
        f'<section id="figures"><h2>Figures</h2>{plots}</section>'
        '<section id="grids"><h2>Reconstructions and samples (first seed)</h2>'
        f"{html_grids(results)}</section>"
        f"<footer><p>{html.escape(TIMINGS_NOTE)}</p></footer>"
        f"<script>{SORT_SCRIPT}</script></body></html>\n"
    )


def markdown_table(rows: list[Mapping[str, object]]) -> list[str]:
    if not rows:
        return []
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return [*lines, ""]


def render_markdown(
    results: StudyResults,
    claims: list[Claim],
    rows: list[dict],
    links: MarkdownLinks,
) -> str:
    """The same content as the page; figures and grids as files beside it (relative links)."""
    lines = ["# VAE activation study", "", "## Champion", "", *champion_lines(results), ""]
    lines += [f"![champion {name}]({link})" for name, link in links.generated.items()]
    lines += ["", "## Leaderboard", "", "Per config: mean ± std [95% interval] over seeds.", ""]
    board = [
        {
            header: text
            for header, (text, _) in zip(LEADERBOARD_HEADERS, leaderboard_cells(row), strict=True)
        }
        for row in rows
    ]
    lines += markdown_table(board)
    lines += ["## Claims", ""]
    for claim in claims:
        lines += [
            f"### {claim.title}",
            "",
            f"**Verdict: {claim.verdict}.** {claim.explanation}",
            "",
        ]
        lines += [f"*Measurement.* {claim.measurement}", "", *markdown_table(list(claim.table))]
    lines += ["## Figures", ""]
    for name, link in links.figures.items():
        lines += [f"![{name}]({link})", "", FIGURE_CAPTIONS[name], ""]
    lines += [
        "## Reconstructions and samples (first seed)",
        "",
        "| config | " + " | ".join(GRIDS) + " |",
    ]
    lines += ["|" + " --- |" * (len(GRIDS) + 1)]
    for config in sorted(links.grids, key=lambda config: (not config.startswith("ae-"), config)):
        cells = " | ".join(f"![{config} {name}]({links.grids[config][name]})" for name in GRIDS)
        lines.append(f"| {config} | {cells} |")
    lines += ["", TIMINGS_NOTE, ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class MarkdownLinks:
    """Where study.md finds its images, relative to reports/."""

    generated: dict[str, str]  # the champion's batch-job images
    figures: dict[str, str]
    grids: dict[str, dict[str, str]]  # config -> {"reconstructions": ..., "samples": ...}


def copy_image(source: Path, folder: Path, relative: str) -> str:
    """Copy an image to folder/relative; its link relative to the report."""
    target = folder / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return f"{folder.name}/{relative}"


def markdown_links(results: StudyResults, figures: dict[str, Path], folder: Path) -> MarkdownLinks:
    """Copy the champion's images and the grids beside the figures; the links to all of them."""
    return MarkdownLinks(
        generated={
            name: copy_image(path, folder, f"generated/{name}.png")
            for name, path in results.generated.items()
        },
        figures={name: f"{folder.name}/{path.name}" for name, path in figures.items()},
        grids={
            config: {
                name: copy_image(path, folder, f"grids/{config}-{name}.png")
                for name, path in paths.items()
            }
            for config, paths in results.grids.items()
        },
    )


def write_report(params: Params) -> dict[str, object]:
    """Collect the results, test the claims, write the page, its markdown twin, the figures,
    the leaderboard, the DVC plot data and metrics/claims.json; the paths and the verdicts."""
    results = collect(params)
    claims = evaluate_claims(results)
    reports, plots = params.paths.reports, params.paths.plots
    figures_dir = reports / "figures"
    if figures_dir.exists():
        shutil.rmtree(figures_dir)  # a figure whose data is gone must not linger
    data = {name: build(results) for name, build in PLOT_DATA.items()}
    for name, rows in data.items():
        write_rows(plots / name, rows)
    rows = leaderboard(results)
    write_rows(reports / "leaderboard.csv", rows)
    write_json(params.paths.metrics / "claims.json", claims_metrics(claims))
    figures = draw_figures(results, data, figures_dir)
    links = markdown_links(results, figures, figures_dir)
    (reports / "study.html").write_text(render_html(results, claims, rows, figures))
    (reports / "study.md").write_text(render_markdown(results, claims, rows, links))
    return {
        "html": str(reports / "study.html"),
        "markdown": str(reports / "study.md"),
        "claims": {claim.key: claim.verdict for claim in claims},
    }


# Publishing -----------------------------------------------------------------------------------

REPORT_ARTIFACTS = "report"


def report_files(params: Params) -> list[Path]:
    """What goes to the study's MLflow run: the page, its markdown twin and the verdicts."""
    reports = params.paths.reports
    return [reports / "study.html", reports / "study.md", params.paths.metrics / "claims.json"]


def publish_to_mlflow(params: Params, entry_point: str) -> str:
    """Log the report files to the study's MLflow run (folder `report`); its run id."""
    from vaeops import tracking
    from vaeops.identity import study_key

    tracking.configure_tracking(params.root)
    run_id = tracking.study_run(params, study_key(params), entry_point)
    tracking.log_artifacts_to_run(run_id, report_files(params), REPORT_ARTIFACTS)
    tracking.close_study_run(run_id)
    return run_id


def claims_markdown(claims: Mapping[str, Mapping[str, object]]) -> str:
    lines = ["# The study's claims", "", "| claim | verdict |", "| --- | --- |"]
    lines += [f"| {claim['title']} | **{claim['verdict']}** |" for claim in claims.values()]
    return "\n".join(lines) + "\n"


def publish_prefect_artifacts(params: Params) -> bool:
    """Inside a Prefect flow run, the leaderboard as a table artifact and the claims' verdicts as
    a markdown artifact, read from the written report; False (nothing published) outside one."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return False
    with (params.paths.reports / "leaderboard.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    claims = read_json(params.paths.metrics / "claims.json")
    create_table_artifact(
        table, key=PREFECT_LEADERBOARD_KEY, description="The study's leaderboard, per config."
    )
    create_markdown_artifact(
        claims_markdown(claims), key=PREFECT_CLAIMS_KEY, description="The claims' verdicts."
    )
    return True
