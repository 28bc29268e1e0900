"""The model registry: register every variant, promote the best activation config, pull models.

Promotion policy (params `promote`): rank activation configs by the mean over seeds of a
validation metric (lower is better); the best config's best seed is the candidate. It becomes
`@champion` only if it beats the current champion, re-evaluated now on the same validation split
with the same code and seed, by at least `min_margin`; otherwise it is aliased `@challenger` and
the champion stays. The test split is never used to choose.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vaeops import tracking
from vaeops.config import Params
from vaeops.errors import VaeopsError
from vaeops.leaderboard import ConfigScore, aggregate, leaderboard_rows
from vaeops.outputs import write_json
from vaeops.steps.evaluate import KEY_METRICS, seeded_split_metrics

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"
PROMOTION_LOG = "promotion_log.jsonl"
MODEL_DESCRIPTION = """\
Autoencoder from the vaeops activation study (kind, activation and seed are in the version tags).
Input: float32 images flattened to (n, 784), intensities in [0, 1]. Load without vaeops installed:

    model = mlflow.pyfunc.load_model("models:/{name}@champion")
    reconstructions = model.predict(images)                        # (n, 784)
    samples = model.predict(images[:1], params={{"mode": "sample", "n_samples": 16}})
    codes = model.predict(images, params={{"mode": "encode"}})       # (n, latent)

Weights are safetensors and the code travels with the model; loading never unpickles.
"""


class RegistryError(VaeopsError):
    """A model URI, name, version or alias that the registry cannot resolve."""


@dataclass(frozen=True)
class Decision:
    """One promotion decision, as recorded in tags, descriptions and the promotion log."""

    decision: str  # "promoted" or "kept"
    reason: str
    candidate_version: str
    candidate_variant: str
    candidate_metric: float
    champion_version: str | None
    champion_metric: float | None
    metric: str
    min_margin: float
    data_version: str
    decided_at: str


# Pure URI helpers ---------------------------------------------------------------------------


def alias_uri(name: str, alias: str) -> str:
    return f"models:/{name}@{alias}"


def version_uri(name: str, version: str | int) -> str:
    return f"models:/{name}/{version}"


def parse_registry_uri(uri: str) -> tuple[str, str | None, str | None]:
    """`models:/name@alias` or `models:/name/version` -> (name, version, alias)."""
    if not uri.startswith("models:/"):
        raise RegistryError(
            f"'{uri}' is not a registry URI; use models:/NAME@ALIAS or models:/NAME/VERSION"
        )
    body = uri.removeprefix("models:/")
    if "@" in body:
        name, alias = body.split("@", 1)
        return name, None, alias
    name, _, version = body.partition("/")
    return name, version or None, None


def should_promote(candidate: float, champion: float | None, min_margin: float) -> bool:
    """Lower is better: promote when there is no champion or the gain is at least the margin."""
    return champion is None or champion - candidate >= min_margin


# Registry operations ------------------------------------------------------------------------


def resolve_version(client: MlflowClient, uri: str):
    """The ModelVersion a registry URI names; a bad name, version or alias is a RegistryError."""
    name, version, alias = parse_registry_uri(uri)
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        if version is None:
            raise RegistryError(
                f"'{uri}' names no version or alias; e.g. {alias_uri(name, CHAMPION)}"
            )
        return client.get_model_version(name, version)
    except MlflowException as error:
        known = [model.name for model in client.search_registered_models(max_results=20)]
        raise RegistryError(
            f"cannot resolve {uri}: {error.message.splitlines()[0]} "
            f"(registered models: {', '.join(known) or 'none'})"
        ) from None


def current_champion(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)
    client.update_registered_model(name, description=MODEL_DESCRIPTION.format(name=name))


def version_tags(row: dict, sweep_run_id: str, data_version: str) -> dict[str, str]:
    tags = {
        "vaeops.variant": row["variant"],
        "vaeops.activation": row["activation"],
        "vaeops.seed": str(row["seed"]),
        "vaeops.kind": row["kind"],
        "vaeops.data_version": data_version,
        "vaeops.sweep": sweep_run_id,
    }
    return tags | {key: str(row[key]) for key in KEY_METRICS if row.get(key) is not None}


def find_version_for_run(client: MlflowClient, name: str, run_id: str):
    found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    return found[0] if found else None


def register_variant(
    client: MlflowClient, params: Params, row: dict, sweep_run_id: str, example: np.ndarray
):
    """Log the variant's pyfunc model into its run (once) and register it (once)."""
    from vaeops.serving import log_pyfunc_model

    name = params.promote.registered_model
    existing = find_version_for_run(client, name, row["run_id"])
    if existing is not None:
        return existing
    model_dir = params.paths.variants / row["variant"]
    with mlflow.start_run(run_id=row["run_id"]):
        model_uri = log_pyfunc_model(model_dir, example)
    return mlflow.register_model(
        model_uri, name, tags=version_tags(row, sweep_run_id, tracking.data_version())
    )


def register_sweep(params: Params, rows: list[dict], sweep_run_id: str) -> dict[str, object]:
    """Every non-diverged variant as a version of the registered model; variant -> version."""
    from vaeops.data.splits import load_split

    client = MlflowClient()
    ensure_registered_model(client, params.promote.registered_model)
    example = load_split(params.paths.splits, "val").images[:2].flatten(1).numpy()
    return {
        row["variant"]: register_variant(client, params, row, sweep_run_id, example)
        for row in rows
        if not row["diverged"]
    }


def reevaluate(params: Params, version) -> float:
    """The champion's promotion metric on the current validation split, computed as the
    evaluate step computes it for every candidate (same code, same seed, same k)."""
    from vaeops.checkpoints import SPEC_FILE, WEIGHTS_FILE, read_model
    from vaeops.data.splits import load_split

    local = Path(mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}"))
    spec = next(local.rglob(SPEC_FILE))
    model = read_model(spec, spec.with_name(WEIGHTS_FILE))
    images = load_split(params.paths.splits, "val").images
    metrics = seeded_split_metrics(params, model, images)
    value = metrics[params.promote.metric.removeprefix("val/")]
    if value is None:
        raise RegistryError(
            f"champion {version.name}/{version.version} has no {params.promote.metric} "
            f"(kind {version.tags.get('vaeops.kind')}); choose another promote.metric"
        )
    return float(value)


def decide(params: Params, best: ConfigScore, candidate, champion) -> Decision:
    metric, margin = params.promote.metric, params.promote.min_margin
    candidate_value = best.best_value
    if champion is None:
        champion_value, promote, reason = None, True, "no champion yet"
    elif champion.version == candidate.version:
        champion_value, promote = candidate_value, False
        reason = "candidate is already the champion"
    else:
        champion_value = reevaluate(params, champion)
        promote = should_promote(candidate_value, champion_value, margin)
        gain = champion_value - candidate_value
        reason = f"gain {gain:.3f} {'>=' if promote else '<'} margin {margin:g}"
    return Decision(
        decision="promoted" if promote else "kept",
        reason=reason,
        candidate_version=str(candidate.version),
        candidate_variant=best.best_variant,
        candidate_metric=candidate_value,
        champion_version=None if champion is None else str(champion.version),
        champion_metric=champion_value,
        metric=metric,
        min_margin=margin,
        data_version=tracking.data_version(),
        decided_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def apply_decision(client: MlflowClient, name: str, decision: Decision) -> None:
    """Move aliases and write the decision where users see it: version tags and description."""
    candidate = decision.candidate_version
    if decision.decision == "promoted":
        if decision.champion_version is not None:
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION, decision.champion_version)
        client.set_registered_model_alias(name, CHAMPION, candidate)
        with contextlib.suppress(MlflowException):  # there may be no challenger to clear
            client.delete_registered_model_alias(name, CHALLENGER)
    elif decision.champion_version != candidate:
        client.set_registered_model_alias(name, CHALLENGER, candidate)
    for key, value in asdict(decision).items():
        client.set_model_version_tag(name, candidate, f"promotion.{key}", str(value))
    champion_text = (
        "none"
        if decision.champion_metric is None
        else f"v{decision.champion_version} at {decision.champion_metric:.3f}"
    )
    client.update_model_version(
        name,
        candidate,
        description=(
            f"{decision.decided_at}: {decision.decision} ({decision.reason}). "
            f"{decision.metric} {decision.candidate_metric:.3f} vs champion {champion_text}; "
            f"margin {decision.min_margin:g}; data {decision.data_version}."
        ),
    )


def append_promotion_log(params: Params, sweep_run_id: str, decision: Decision) -> Path:
    """One JSON line per decision, kept as an artifact of the sweep's parent run."""
    log_path = params.paths.promotion.with_name(PROMOTION_LOG)
    client = MlflowClient()
    try:
        previous = client.download_artifacts(sweep_run_id, PROMOTION_LOG, str(log_path.parent))
        lines = Path(previous).read_text().splitlines()
    except (MlflowException, OSError):
        lines = []
    lines.append(json.dumps(asdict(decision), sort_keys=True))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("\n".join(lines) + "\n")
    client.log_artifact(sweep_run_id, str(log_path))
    return log_path


def promote(params: Params) -> dict:
    """Register the sweep, choose the best activation config on validation, promote or keep."""
    started = time.perf_counter()
    tracking.configure_tracking()
    rows = leaderboard_rows(params)
    scores = aggregate(rows, params.promote.metric)
    if not scores:
        raise RegistryError(
            f"no variant has {params.promote.metric} (all diverged?); nothing to promote"
        )
    sweep_run_id = tracking.sweep_parent_run(params)
    versions = register_sweep(params, rows, sweep_run_id)
    client = MlflowClient()
    name = params.promote.registered_model
    best = scores[0]
    decision = decide(params, best, versions[best.best_variant], current_champion(client, name))
    apply_decision(client, name, decision)
    append_promotion_log(params, sweep_run_id, decision)
    result = asdict(decision) | {
        "registered_model": name,
        "registered_versions": len(versions),
        "best_config": best.config,
        "best_config_mean": best.mean,
        "best_config_std": best.std,
        "champion_uri": alias_uri(name, CHAMPION),
        "compute_seconds": time.perf_counter() - started,
    }
    write_json(params.paths.promotion, result)
    return result


def pull(model_uri: str, out_dir: Path) -> Path:
    """Download a registered model (by alias or version) into `out_dir`."""
    tracking.configure_tracking()
    resolve_version(MlflowClient(), model_uri)
    out_dir.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(out_dir)))
