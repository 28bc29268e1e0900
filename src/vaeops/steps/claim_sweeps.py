"""The claim sweeps: the extra trainings that put published claims about VAEs to the test.

- beta, for each of `claims.beta_activations`: rate-distortion curves (Alemi et al. 2018) to
  compare the rate (KL) two activations pay at equal distortion (reconstruction);
- dropout and latent size, for the main sweep's best config: overfitting and the validation
  optimum of the latent size.

Each point is a variant whose params differ from the study's in one setting; it is trained and
evaluated with the same code as the main sweep, so it is as incremental: its identity includes the
changed setting, and a point trained before is restored from its MLflow run. The points are
children of the study run. The main sweep's variant of the same activation and seed is each
curve's point at the study's own setting.
"""

from __future__ import annotations

from dataclasses import dataclass

from vaeops import tracking
from vaeops.config import Params
from vaeops.data.splits import load_split
from vaeops.outputs import TRAIN_FILE, read_json, write_json
from vaeops.steps.evaluate import evaluate_variant
from vaeops.steps.train import open_study, train_variant
from vaeops.training import resolve_device
from vaeops.variants import Variant

# Which params section and key each sweep changes.
SWEPT_SETTINGS = {
    "beta": ("train", "beta"),
    "dropout": ("model", "dropout"),
    "latent": ("model", "latent"),
}


@dataclass(frozen=True)
class SweepPoint:
    sweep: str  # "beta" | "dropout" | "latent"
    value: float | int
    variant: Variant


def best_activation(params: Params) -> str | None:
    """The activation of the main sweep's best config (metrics/study.json), None if none is."""
    best = read_json(params.paths.metrics / "study.json")["best"]["config"]
    return best.removeprefix("vae-") if best else None


def sweep_points(params: Params, best: str | None) -> list[SweepPoint]:
    """Every point of the three sweeps, for every seed of `claims.seeds` (default: the sweep's)."""
    claims = params.claims
    grid = [
        ("beta", activation, beta)
        for activation in claims.beta_activations
        for beta in claims.betas
    ]
    if best is not None:  # with every config diverged there is no best one to sweep
        grid += [("dropout", best, dropout) for dropout in claims.dropouts]
        grid += [("latent", best, latent) for latent in claims.latents]
    return [
        SweepPoint(sweep, value, Variant("vae", activation, seed, f"{sweep}{value:g}"))
        for sweep, activation, value in grid
        for seed in params.claim_seeds
    ]


def point_params(params: Params, point: SweepPoint) -> Params:
    """The study's params with the point's setting changed and its own outputs folders."""
    section, key = SWEPT_SETTINGS[point.sweep]
    changed = getattr(params, section).model_copy(update={key: point.value})
    paths = params.paths.model_copy(
        update={
            "variants": params.paths.claim_sweeps / "variants",
            "evaluation": params.paths.claim_sweeps / "evaluation",
        }
    )
    return params.model_copy(update={section: changed, "paths": paths})


def label_point(params: Params, point: SweepPoint) -> dict:
    """Add the sweep and its value to the point's train.json, for the report to group by."""
    path = point.variant.train_dir(point_params(params, point)) / TRAIN_FILE
    summary = read_json(path) | {"sweep": point.sweep, "value": point.value}
    write_json(path, summary)
    return summary


def run_claim_sweeps(params: Params) -> list[dict]:
    """Train (or restore) and evaluate every point; each point's train.json summary."""
    points = sweep_points(params, best_activation(params))
    study_run_id = open_study(params)
    stored = tracking.stored_variants(params)
    for point in points:
        train_variant(point_params(params, point), point.variant, study_run_id, stored)
    summaries = [label_point(params, point) for point in points]
    device = resolve_device(params.train.device)
    splits = {
        name: load_split(params.paths.splits, name, device).images for name in ("val", "test")
    }
    stored = tracking.stored_variants(params)  # now with the points trained above
    for point in points:
        evaluate_variant(point_params(params, point), point.variant, splits, stored)
    tracking.close_study_run(study_run_id)
    return summaries
