"""The model registry: URI helpers, and register, promote, resolve and pull.

Promotion policy (params `promote`): the promote step ranks activation configs by the mean over
seeds of a validation metric (lower is better); the best config's best seed is the candidate. It
becomes `@champion` only if it beats the current champion, re-evaluated by the promote step on
the same validation split with the same code and seed, by at least `min_margin`; otherwise it is
aliased `@challenger` and the champion stays. The test split is never used to choose.

A version is registered once per distinct model: the same variant, data version and weights
(`model_key`) are never registered twice, even when a code change retrained them identically.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vaeops.checkpoints import SPEC_FILE, WEIGHTS_FILE
from vaeops.errors import VaeopsError
from vaeops.leaderboard import KEY_METRICS, ConfigScore
from vaeops.provenance import PACKAGE, PACKAGE_DIR, import_closure, module_file
from vaeops.tracking import Tag

# The models-from-code file MLflow runs to build a loaded model (it imports vaeops.serving).
MODEL_ENTRY = "vaeops.pyfunc_entry"

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


def champion_uri(name: str) -> str:
    """The model consumers load by default: `models:/NAME@champion`."""
    return alias_uri(name, CHAMPION)


def is_registry_uri(uri: str) -> bool:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION`; not a logged model's `models:/m-ID`."""
    return uri.startswith("models:/") and not uri.removeprefix("models:/").startswith("m-")


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


def is_not_found(error: MlflowException) -> bool:
    """MLflow's "no such model, version or alias"; any other error (a server that is down, a
    refused request) is not an answer and must not be read as one."""
    missing_alias = error.error_code == "INVALID_PARAMETER_VALUE" and "not found" in error.message
    return error.error_code == "RESOURCE_DOES_NOT_EXIST" or missing_alias


def aliased_version(client: MlflowClient, name: str, alias: str):
    """The version an alias points at, or None when the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if not is_not_found(error):
            raise
        return None


def current_champion(client: MlflowClient, name: str):
    return aliased_version(client, name, CHAMPION)


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if not is_not_found(error):
            raise
        client.create_registered_model(name)
    client.update_registered_model(name, description=MODEL_DESCRIPTION.format(name=name))


def version_tags(row: dict, sweep_run_id: str, data_version: str) -> dict[str, str]:
    tags = {
        Tag.VARIANT: row["variant"],
        Tag.ACTIVATION: row["activation"],
        Tag.SEED: str(row["seed"]),
        Tag.KIND: row["kind"],
        Tag.IDENTITY: row["identity"],
        Tag.DATA_VERSION: data_version,
        Tag.SWEEP: sweep_run_id,
    }
    return tags | {key: str(row[key]) for key in KEY_METRICS if row.get(key) is not None}


def model_key(variant: str, data_version: str, weights_digest: str) -> tuple[str, str, str]:
    """What makes two versions the same model: the variant, its data and its exact weights."""
    return (variant, data_version, weights_digest)


def registered_versions(client: MlflowClient, name: str) -> dict[tuple[str, str, str], object]:
    """The registered model's versions by `model_key` (one paged search), the oldest kept."""
    versions: dict[tuple[str, str, str], object] = {}
    token = None
    while True:
        page = client.search_model_versions(f"name='{name}'", max_results=1000, page_token=token)
        for version in page:
            tags = version.tags
            key = model_key(
                tags.get(Tag.VARIANT, ""),
                tags.get(Tag.DATA_VERSION, ""),
                tags.get(Tag.WEIGHTS_DIGEST, ""),
            )
            if key not in versions or int(version.version) < int(versions[key].version):
                versions[key] = version
        token = page.token
        if not token:
            return versions


def carried_code(folder: Path) -> Path:
    """A copy of the package that holds only what a loaded model runs: the import closure of
    the models-from-code entry file. The registered model carries this, not the whole package."""
    package = folder / PACKAGE
    for name in import_closure(MODEL_ENTRY):
        source = module_file(name)
        target = package / source.relative_to(PACKAGE_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return package


def log_model(model_dir: Path, example: np.ndarray) -> str:
    """Log the model in `model_dir` to the active run as a pickle-free pyfunc; its model URI."""
    import torch

    from vaeops.serving import DEFAULT_PARAMS

    example = example.astype(np.float32)
    signature = mlflow.models.infer_signature(example, example, params=dict(DEFAULT_PARAMS))
    with tempfile.TemporaryDirectory() as scratch:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(module_file(MODEL_ENTRY)),
            code_paths=[str(carried_code(Path(scratch)))],
            artifacts={
                "spec": str(model_dir / SPEC_FILE),
                "weights": str(model_dir / WEIGHTS_FILE),
            },
            signature=signature,
            input_example=example,
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                "safetensors",
                "numpy",
                "pydantic",
                "pyyaml",
            ],
        )
    return info.model_uri


def register_variant(
    client: MlflowClient,
    name: str,
    run,
    model_dir: Path,
    example: np.ndarray,
    tags: dict[str, str],
):
    """Log the variant's pyfunc model into its training run and register it as a new version,
    which links back to that run."""
    with mlflow.start_run(run_id=run.info.run_id):
        model_uri = log_model(model_dir, example)
    weights = run.data.tags.get(Tag.WEIGHTS_DIGEST, "")
    return mlflow.register_model(model_uri, name, tags=tags | {Tag.WEIGHTS_DIGEST: weights})


def download_version(version) -> Path:
    """A registered version's files, in MLflow's download cache."""
    return Path(mlflow.artifacts.download_artifacts(version_uri(version.name, version.version)))


def decide(
    best: ConfigScore,
    candidate,
    champion,
    champion_value: float | None,
    metric: str,
    margin: float,
    data_version: str,
) -> Decision:
    """Promote or keep: `champion_value` is the champion re-evaluated now (None: no champion)."""
    candidate_value = best.best_value
    if champion is None:
        promote, reason = True, "no champion yet"
    elif champion.version == candidate.version:
        champion_value, promote = candidate_value, False
        reason = "candidate is already the champion"
    else:
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
        data_version=data_version,
        decided_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def apply_decision(client: MlflowClient, name: str, decision: Decision) -> None:
    """Move aliases and write the decision where users see it: version tags and description."""
    candidate = decision.candidate_version
    if decision.decision == "promoted":
        if decision.champion_version is not None:
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION, decision.champion_version)
        client.set_registered_model_alias(name, CHAMPION, candidate)
        if aliased_version(client, name, CHALLENGER) is not None:
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


def read_promotion_log(client: MlflowClient, sweep_run_id: str, folder: Path) -> list[str]:
    """The lines logged so far; none if the run has no log yet. A failed download raises: an
    unreadable history must never be replaced by a one-line log."""
    logged = {item.path for item in client.list_artifacts(sweep_run_id)}
    if PROMOTION_LOG not in logged:
        return []
    downloaded = client.download_artifacts(sweep_run_id, PROMOTION_LOG, str(folder))
    return Path(downloaded).read_text().splitlines()


def append_promotion_log(sweep_run_id: str, decision: Decision) -> list[str]:
    """One JSON line per decision, kept as an artifact of the sweep's study run; its lines."""
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as scratch:
        lines = read_promotion_log(client, sweep_run_id, Path(scratch))
        lines.append(json.dumps(asdict(decision), sort_keys=True))
        log_path = Path(scratch) / PROMOTION_LOG
        log_path.write_text("\n".join(lines) + "\n")
        client.log_artifact(sweep_run_id, str(log_path))
    return lines


def pull(model_uri: str, out_dir: Path) -> Path:
    """Download a registered model (by alias or version) into `out_dir`; MLflow must already
    point at the store (tracking.configure_tracking)."""
    resolve_version(MlflowClient(), model_uri)
    out_dir.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(out_dir)))
