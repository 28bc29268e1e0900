"""The promote step: register the sweep's variants and promote the best activation config.

The champion is re-evaluated here, on the current validation split with the evaluate step's own
scoring (same code, seed and k), and the figure is handed to the registry's decision. How a
promotion survives a server that stops and a promotion racing it: vaeops.registry's docstring.
"""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vaeops import registry, tracking
from vaeops.checkpoints import SPEC_FILE, WEIGHTS_FILE, read_model
from vaeops.config import Params
from vaeops.data.splits import load_split
from vaeops.identity import study_key
from vaeops.leaderboard import aggregate, leaderboard_rows
from vaeops.outputs import write_json
from vaeops.steps.evaluate import seeded_split_metrics
from vaeops.variants import Variant

ENTRY_POINT = "vaeops promote"
# Decisions one promote makes at most: each round after the first follows a lost race and
# needs another promotion to have won it, so two rounds settle a race of two.
MAX_ROUNDS = 4


def reevaluate(params: Params, version) -> float:
    """The champion's promotion metric on the current validation split."""
    local = registry.download_version(version)
    spec = next(local.rglob(SPEC_FILE))
    model = read_model(spec, spec.with_name(WEIGHTS_FILE))
    images = load_split(params.paths.splits, "val").images
    value = seeded_split_metrics(params, model, images)[params.promote.metric.removeprefix("val/")]
    if value is None:
        raise registry.RegistryError(
            f"champion {version.name}/{version.version} has no {params.promote.metric} "
            f"(kind {version.tags.get(tracking.Tag.KIND)}); choose another promote.metric"
        )
    return float(value)


def register_sweep(params: Params, rows: list[dict], sweep_run_id: str) -> dict[str, object]:
    """Every non-diverged variant as a version of the registered model; variant -> version."""
    client = MlflowClient()
    name = params.promote.registered_model
    registry.ensure_registered_model(client, name)
    example = load_split(params.paths.splits, "val").images[:2].flatten(1).numpy()
    data_version = tracking.data_version(params)
    stored = tracking.stored_variants(params)
    registered = registry.registered_versions(client, name)
    versions = {}
    for row in rows:
        if row["diverged"]:
            continue
        run = tracking.stored_run(stored, row["identity"])
        weights = run.data.tags.get(tracking.Tag.WEIGHTS_DIGEST, "")
        key = registry.model_key(row["variant"], data_version, weights)
        if key not in registered:
            variant = Variant(row["kind"], row["activation"], row["seed"])
            registered[key] = registry.register_variant(
                client,
                name,
                run,
                variant.train_dir(params),
                example,
                registry.version_tags(row, sweep_run_id, data_version),
            )
        versions[row["variant"]] = registered[key]
    return versions


def promotion_metrics(decision: registry.Decision, best) -> dict:
    """`metrics/promotion.json`: the decision and the champion after it, no timestamps."""
    promoted = decision.decision == "promoted"
    return {
        "decision": decision.decision,
        "reason": decision.reason,
        "metric": decision.metric,
        "candidate": {
            "variant": decision.candidate_variant,
            "version": int(decision.candidate_version),
            "value": decision.candidate_metric,
            "config_mean": best.mean,
            "config_std": best.std,
        },
        "champion": {
            "version": int(
                decision.candidate_version if promoted else decision.champion_version or 0
            ),
            "value": decision.candidate_metric if promoted else decision.champion_metric,
        },
    }


def decide_against(params: Params, best, candidate, champion) -> registry.Decision:
    needs_figure = champion is not None and champion.version != candidate.version
    return registry.decide(
        best,
        candidate,
        champion,
        reevaluate(params, champion) if needs_figure else None,
        params.promote.metric,
        params.promote.min_margin,
        tracking.data_version(params),
    )


def settled_champion(client: MlflowClient, name: str, champion) -> str:
    """Finish a promotion of `champion` that was committed (its alias moved) but may have been
    cut short before the other aliases moved, or that raced another; the champion's version."""
    if champion.tags.get("promotion.decision") != "promoted":
        return champion.version
    over = champion.tags.get("promotion.champion_version")
    metric = float(champion.tags["promotion.candidate_metric"])
    return registry.settle_champion(
        client, name, None if over == "None" else over, champion.version, metric
    )


def promote_candidate(
    params: Params, client: MlflowClient, best, candidate, sweep_run_id: str
) -> registry.Decision:
    """Decide about `candidate`, log and record the decision, then move the aliases; decide
    again against the winner of a race it lost. A decision already recorded with the same
    figures (a rerun, or a rerun after a promotion cut before its aliases) is not logged again;
    its aliases are set to what it says, which moves nothing where they already are."""
    name = params.promote.registered_model
    for _ in range(MAX_ROUNDS):
        champion = registry.current_champion(client, name)
        decision = decide_against(params, best, candidate, champion)
        if champion is not None and champion.version == candidate.version:
            if settled_champion(client, name, champion) == candidate.version:
                return decision
            continue
        recorded = client.get_model_version(name, candidate.version)
        if not registry.same_as_recorded(recorded, decision):
            registry.append_promotion_log(sweep_run_id, decision)
            registry.record_decision(client, name, decision)
        champion_after = registry.move_aliases(client, name, decision)
        if decision.decision == "kept" or champion_after == candidate.version:
            return decision
    return decision


def promote(params: Params) -> dict:
    """Register the sweep, choose the best activation config on validation, promote or keep."""
    uri = tracking.configure_tracking(params.root)
    try:
        return promote_sweep(params)
    except MlflowException as error:
        # Every expected "not found" is answered inside (no champion yet, no log yet); one that
        # escapes is a request the server failed, even where MLflow words a failed download as
        # RESOURCE_DOES_NOT_EXIST.
        first_line = next(iter(error.message.splitlines()), "")[:300]
        raise tracking.TrackingError(
            f"tracking server {uri} failed during promotion ({first_line}); @champion moves "
            "last, so a cut promotion changed no alias: rerun `vaeops promote` once it answers"
        ) from None


def promote_sweep(params: Params) -> dict:
    rows = leaderboard_rows(params)
    scores = aggregate(rows, params.promote.metric)
    if not scores:
        raise registry.RegistryError(
            f"no variant has {params.promote.metric} (all diverged?); nothing to promote"
        )
    sweep_run_id = tracking.study_run(params, study_key(params), ENTRY_POINT)
    versions = register_sweep(params, rows, sweep_run_id)
    client = MlflowClient()
    name = params.promote.registered_model
    best = scores[0]
    decision = promote_candidate(params, client, best, versions[best.best_variant], sweep_run_id)
    tracking.close_study_run(sweep_run_id)
    summary = promotion_metrics(decision, best)
    write_json(params.paths.metrics / "promotion.json", summary)
    write_json(
        params.paths.registered_versions,
        {variant: int(version.version) for variant, version in versions.items()},
    )
    return summary | {
        "registered_model": name,
        "registered_versions": len(versions),
        "champion_uri": registry.champion_uri(name),
    }
