"""The summarize step: leaderboard, comparison across activations, and the study report.

Headline figures go to `metrics/study.json` (what `dvc exp show` lists: the best config, its
mean and spread, one figure per config); every variant's key figures to `metrics/variants.json`
(`dvc metrics show metrics/variants.json` on demand). Both are versioned by git, beside the plot
data in `plots/`, and hold no timings, so the same computation gives the same bytes.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from vaeops.config import Params
from vaeops.identity import study_key
from vaeops.leaderboard import KEY_METRICS, ConfigScore, aggregate, leaderboard_rows
from vaeops.outputs import HISTORY_FILE, write_json
from vaeops.variants import sweep_variants

LEADERBOARD_COLUMNS = (
    "variant",
    "config",
    "kind",
    "activation",
    "seed",
    "diverged",
    "val/iwae_nll",
    "val/neg_elbo",
    "val/reconstruction",
    "val/kl",
    "val/active_units",
    "val/dead_unit_fraction",
    "val/grad_norm/first_over_last",
    "test/iwae_nll",
    "test/neg_elbo",
    "test/reconstruction",
    "parameters",
    "epochs",
)


def write_csv(path: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def learning_curves(params: Params) -> list[dict]:
    """Validation negative ELBO per epoch of each VAE config, the mean over its seeds (a diverged
    seed counts until its last finished epoch): one line per config in `dvc plots show`."""
    points: dict[tuple[str, int], list[float]] = defaultdict(list)
    for variant in sweep_variants(params):
        if variant.kind != "vae":
            continue  # the AE has no ELBO
        with (variant.train_dir(params) / HISTORY_FILE).open(newline="") as handle:
            for row in csv.DictReader(handle):
                points[(variant.config_name, int(row["epoch"]))].append(float(row["val/neg_elbo"]))
    return [
        {"config": config, "epoch": epoch, "val/neg_elbo": statistics.fmean(values)}
        for (config, epoch), values in sorted(points.items())
    ]


def plot_comparison(scores: list[ConfigScore], metric: str, path: Path) -> None:
    """Horizontal bars of the metric per activation config, seed spread as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 0.4 * len(scores) + 1.5))
    names = [score.config for score in scores][::-1]
    axes.barh(names, [s.mean for s in scores][::-1], xerr=[s.std for s in scores][::-1], capsize=3)
    low = min(s.mean - s.std for s in scores)
    high = max(s.mean + s.std for s in scores)
    axes.set_xlim(low - 0.1 * (high - low + 1), high + 0.1 * (high - low + 1))
    axes.set_xlabel(f"{metric} (nats per image, mean ± std over seeds; lower is better)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def markdown_report(scores: list[ConfigScore], rows: list[dict], metric: str) -> str:
    lines = [
        "# VAE activation study",
        "",
        f"Ranked by {metric} on the validation split (lower is better); test figures are for",
        "reference only and never used to choose.",
        "",
        "| rank | config | mean | std | seeds | diverged | best variant |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rank, s in enumerate(scores, start=1):
        lines.append(
            f"| {rank} | {s.config} | {s.mean:.2f} | {s.std:.2f} | {s.seeds} | {s.diverged} "
            f"| {s.best_variant} |"
        )
    diverged = [row["variant"] for row in rows if row["diverged"]]
    lines += ["", f"Diverged variants: {', '.join(diverged) or 'none'}."]
    baselines = [row for row in rows if row["kind"] == "ae" and not row["diverged"]]
    if baselines:
        recon = sum(row["val/reconstruction"] for row in baselines) / len(baselines)
        lines.append(
            f"Plain AE baseline: validation reconstruction {recon:.2f} nats per image (it has no "
            "ELBO); compare its prior samples with the VAEs' in the MLflow image grids."
        )
    return "\n".join(lines) + "\n"


def log_to_study_run(params: Params, files: list[Path]) -> None:
    from vaeops import tracking

    tracking.configure_tracking(params.root)
    run_id = tracking.study_run(params, study_key(params), "vaeops summarize")
    tracking.log_artifacts_to_run(run_id, files, "summary")
    tracking.close_study_run(run_id)


def headline(scores: list[ConfigScore], rows: list[dict], metric: str) -> dict:
    """What `dvc exp show` lists first: the best config, its mean and spread, each config's."""
    best = scores[0] if scores else None
    return {
        "metric": metric,
        "best": {
            "config": best.config if best else None,
            "mean": best.mean if best else None,
            "std": best.std if best else None,
        },
        "per_config": {score.config: score.mean for score in scores},
        "variants": len(rows),
        "diverged": sum(row["diverged"] for row in rows),
    }


def summarize(params: Params) -> dict:
    """Write the leaderboard, plots data, headline and per-variant metrics, and the report."""
    metric = params.promote.metric
    rows = leaderboard_rows(params)
    scores = aggregate(rows, metric)
    out, plots, metrics = params.paths.summary, params.paths.plots, params.paths.metrics
    for folder in (out, plots, metrics):
        folder.mkdir(parents=True, exist_ok=True)
    write_csv(out / "leaderboard.csv", rows, LEADERBOARD_COLUMNS)
    (out / "report.md").write_text(markdown_report(scores, rows, metric))
    if scores:
        plot_comparison(scores, metric, out / "comparison.png")
    write_csv(
        plots / "comparison.csv",
        [asdict(score) for score in scores],
        ("config", "kind", "activation", "mean", "std", "seeds", "diverged", "best_variant"),
    )
    write_csv(
        plots / "learning_curves.csv", learning_curves(params), ("config", "epoch", "val/neg_elbo")
    )
    study = headline(scores, rows, metric)
    write_json(metrics / "study.json", study)
    write_json(
        metrics / "variants.json",
        {row["variant"]: {key: row.get(key) for key in ("diverged", *KEY_METRICS)} for row in rows},
    )
    files = sorted(path for path in out.iterdir() if path.is_file())
    log_to_study_run(params, files)
    return {"leaderboard": str(out / "leaderboard.csv"), "report": str(out / "report.md")} | study
