"""The model registry: URI helpers, and register, promote, resolve and pull.

Promotion policy (params `promote`): the promote step ranks activation configs by the mean over
seeds of a validation metric (lower is better); the best config's best seed is the candidate. It
becomes `@champion` only if it beats the current champion, re-evaluated by the promote step on
the same validation split with the same code and seed, by at least `min_margin`; otherwise it is
aliased `@challenger` and the champion stays. The test split is never used to choose.

A version is registered once per distinct model: the same variant, data version and weights
(`model_key`) are never registered twice, even when a code change retrained them identically.
A version is created with its identifying tags in one request, so a promotion interrupted after
it reuses it on the rerun; one whose registration failed on the server is deleted (and said so).

Faults and concurrency, without locks (the registry has no compare-and-set):

- Records before aliases. A decision is first written where it cannot be lost: its own file
  under `promotion_log/` of the sweep's study run (never a read-modify-write of one log file) and
  the candidate's tags, including `vaeops.promoted_over.<champion version or none>` for a
  promotion. The `@champion` alias moves last: it is the commit. A server that stops answering
  before it leaves the aliases as they were, and the rerun makes the same decision and commits.
- Rerunning changes nothing: a candidate that is already the champion, or whose recorded decision
  is the one made again (`same_as_recorded`), logs and tags nothing; its aliases are set to what
  the decision says, which moves nothing where they are already (and finishes a cut promotion).
- Racing promotions. Two promotions that read the same champion C may both promote over it. After
  writing its records, each re-derives the winner from all versions promoted over C (the lowest
  promotion metric, then the lowest version number) and sets `@champion` to it: the same answer
  from the same records, so whichever writes last sets the same champion. The last alias write
  happens after every racing record was written, so it sees them all. A loser then decides again
  against the winner (usually "kept", `@challenger`), and every decision stays logged.
- `promotion_log.jsonl` is rebuilt from the decision files until a listing after the upload
  matches the one before it, so the last upload holds every decision.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

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
PROMOTION_LOG = "promotion_log.jsonl"  # every decision of a sweep, rebuilt from the folder:
DECISIONS = "promotion_log"  # one JSON file per decision
# Decision fields that describe the decision itself (not when it was taken): a rerun whose
# decision matches the candidate's recorded one in these writes nothing.
DECISION_FIELDS = (
    "decision",
    "reason",
    "candidate_version",
    "candidate_metric",
    "champion_version",
    "champion_metric",
    "metric",
    "min_margin",
    "data_version",
)
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


REGISTRY_URI_FORMS = "models:/NAME@ALIAS or models:/NAME/VERSION (e.g. models:/vae-mnist@champion)"
MODEL_URI_FORMS = f"{REGISTRY_URI_FORMS}, models:/m-ID, runs:/RUN_ID/PATH or a model folder"
# Artifact stores MLflow reads that cannot be checked without a download: load_model decides.
REMOTE_SCHEMES = ("s3", "gs", "wasbs", "abfss", "hdfs", "viewfs", "ftp", "sftp", "dbfs", "http",
                  "https", "mlflow-artifacts")  # fmt: skip


def version_uri(name: str, version: str | int) -> str:
    return f"models:/{name}/{version}"


def parse_registry_uri(uri: str) -> tuple[str, str | None, str | None]:
    """`models:/name@alias` or `models:/name/version` -> (name, version, alias); anything else
    (another scheme, a logged model's models:/m-ID, an empty name, a version that is not a
    number) is a RegistryError that shows the valid forms."""
    if not is_registry_uri(uri):
        raise RegistryError(f"'{uri}' is not a registry URI; use {REGISTRY_URI_FORMS}")
    body = uri.removeprefix("models:/")
    if "@" in body:
        name, alias = body.split("@", 1)
        version = None
    else:
        name, _, version = body.partition("/")
        alias, version = None, version or None
    if not name or alias == "" or (version is not None and not version.isdigit()):
        raise RegistryError(f"'{uri}': malformed registry URI; use {REGISTRY_URI_FORMS}")
    return name, version, alias


def should_promote(candidate: float, champion: float | None, min_margin: float) -> bool:
    """Lower is better: promote when there is no champion or the gain is at least the margin."""
    return champion is None or champion - candidate >= min_margin


# Registry operations ------------------------------------------------------------------------


def resolve_version(client: MlflowClient, uri: str):
    """The ModelVersion a registry URI names; a bad name, version or alias is a RegistryError.
    Any other failure (a server that is down) is not an answer and is raised as it is."""
    name, version, alias = parse_registry_uri(uri)
    if alias is None and version is None:
        raise RegistryError(f"'{uri}' names no version or alias; e.g. {alias_uri(name, CHAMPION)}")
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, version)
    except MlflowException as error:
        if not is_not_found(error):
            raise
        reason = error.message.splitlines()[0]
    known = [model.name for model in client.search_registered_models(max_results=20)]
    raise RegistryError(
        f"cannot resolve {uri}: {reason} (registered models: {', '.join(known) or 'none'}); "
        f"run `vaeops promote` to register one, or name an existing version or alias"
    )


def not_found_error(uri: str, error: MlflowException) -> RegistryError:
    return RegistryError(
        f"cannot resolve {uri}: {error.message.splitlines()[0]}; use {MODEL_URI_FORMS} that exists"
    )


def check_model_uri(client: MlflowClient, uri: str) -> None:
    """Raise a RegistryError unless `uri` names a model that exists, in any form MLflow loads:
    a registry version or alias, a logged model (models:/m-ID), a run's artifact
    (runs:/RUN_ID/PATH), a local folder (or file:// URI) with an MLmodel file, or an object
    store URI (left to MLflow: checking it would download it)."""
    scheme = urlparse(uri).scheme
    try:
        if is_registry_uri(uri):
            resolve_version(client, uri)
        elif uri.startswith("models:/"):
            client.get_logged_model(uri.removeprefix("models:/").split("/")[0])
        elif scheme == "runs":
            run_id, _, path = uri.removeprefix("runs:/").partition("/")
            if not run_id or not path:
                raise RegistryError(f"'{uri}': use runs:/RUN_ID/PATH, e.g. runs:/<id>/model")
            client.get_run(run_id)
        elif scheme in ("", "file"):
            check_model_folder(Path(urlparse(uri).path if scheme else uri))
        elif scheme not in REMOTE_SCHEMES or not urlparse(uri).netloc:
            raise RegistryError(f"'{uri}': not a model URI; use {MODEL_URI_FORMS}")
    except MlflowException as error:
        if not is_not_found(error):
            raise
        raise not_found_error(uri, error) from None


def check_model_folder(folder: Path) -> None:
    if not folder.exists():
        raise RegistryError(f"{folder}: no such model folder; use {MODEL_URI_FORMS}")
    if not (folder / "MLmodel").is_file():
        raise RegistryError(
            f"{folder}: no MLmodel file, so not a model folder; give a folder that "
            f"`vaeops pull` wrote, or one of {MODEL_URI_FORMS}"
        )


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
            if version.status == "FAILED_REGISTRATION":
                delete_failed_version(client, version)
            elif key not in versions or int(version.version) < int(versions[key].version):
                versions[key] = version
        token = page.token
        if not token:
            return versions


def delete_failed_version(client: MlflowClient, version) -> None:
    """A version whose registration failed on the server holds no model: delete it, say so."""
    client.delete_model_version(version.name, version.version)
    print(
        f"deleted {version.name} v{version.version}: its registration failed "
        f"({version.status_message or 'no message'}); the variant is registered again",
        file=sys.stderr,
    )


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


def promoted_over_tag(champion_version: str | None) -> str:
    return f"{Tag.PROMOTED_OVER}.{champion_version or 'none'}"


def same_as_recorded(version, decision: Decision) -> bool:
    """True when `version`'s tags already record this decision (made before, same figures)."""
    recorded = {key: version.tags.get(f"promotion.{key}") for key in DECISION_FIELDS}
    return recorded == {key: str(getattr(decision, key)) for key in DECISION_FIELDS}


def record_decision(client: MlflowClient, name: str, decision: Decision) -> None:
    """Write the decision into the candidate's tags and description (no alias moves)."""
    candidate = decision.candidate_version
    if decision.decision == "promoted":  # first: recorded promotion.* tags imply this one
        over = promoted_over_tag(decision.champion_version)
        client.set_model_version_tag(name, candidate, over, str(decision.candidate_metric))
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


def promoted_over(client: MlflowClient, name: str, champion_version: str | None) -> dict:
    """Every version promoted over `champion_version`, with its promotion metric; one paged
    search of the model's versions."""
    tag = promoted_over_tag(champion_version)
    rivals: dict[str, float] = {}
    token = None
    while True:
        page = client.search_model_versions(f"name='{name}'", max_results=1000, page_token=token)
        rivals |= {v.version: float(v.tags[tag]) for v in page if tag in v.tags}
        token = page.token
        if not token:
            return rivals


def settle_champion(
    client: MlflowClient, name: str, over: str | None, candidate: str, metric: float
) -> str:
    """Set `@champion` to the best version promoted over `over`, `candidate` (at `metric`) among
    them (see the module docstring), then `@previous-champion` to `over`; a stale `@challenger`
    goes unless it lost this very race. The champion's version."""
    rivals = promoted_over(client, name, over)
    rivals.setdefault(candidate, metric)  # promoted before versions carried the tag
    winner = min(rivals, key=lambda version: (rivals[version], int(version)))
    client.set_registered_model_alias(name, CHAMPION, winner)
    if over is not None:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, over)
    challenger = aliased_version(client, name, CHALLENGER)
    lost_this_race = challenger is not None and challenger.version in rivals
    if challenger is not None and (challenger.version == winner or not lost_this_race):
        client.delete_registered_model_alias(name, CHALLENGER)
    return winner


def move_aliases(client: MlflowClient, name: str, decision: Decision) -> str | None:
    """Set the aliases a recorded decision calls for; the champion's version after it."""
    if decision.decision == "promoted":
        return settle_champion(
            client,
            name,
            decision.champion_version,
            decision.candidate_version,
            decision.candidate_metric,
        )
    if decision.champion_version != decision.candidate_version:
        client.set_registered_model_alias(name, CHALLENGER, decision.candidate_version)
    return decision.champion_version


def decision_files(client: MlflowClient, sweep_run_id: str) -> list[str]:
    return sorted(item.path for item in client.list_artifacts(sweep_run_id, DECISIONS))


def read_promotion_log(client: MlflowClient, sweep_run_id: str, folder: Path) -> list[str]:
    """Every decision logged on the sweep run, oldest first: a `promotion_log.jsonl` written
    before decisions had files of their own keeps its lines first. A failed download raises:
    an unreadable history must never be replaced by a shorter log."""
    logged = {item.path for item in client.list_artifacts(sweep_run_id)}
    lines = []
    if DECISIONS in logged:
        local = Path(client.download_artifacts(sweep_run_id, DECISIONS, str(folder)))
        lines = [path.read_text().strip() for path in sorted(local.glob("*.json"))]
    if PROMOTION_LOG in logged:
        legacy = Path(client.download_artifacts(sweep_run_id, PROMOTION_LOG, str(folder)))
        known = set(lines)
        lines = [line for line in legacy.read_text().splitlines() if line not in known] + lines
    return lines


def decision_file_name() -> str:
    """Unique per decision, sorted by time: nanoseconds, then the deciding host and process."""
    return f"{DECISIONS}/{time.time_ns()}-{socket.gethostname()}-{os.getpid()}.json"


def append_promotion_log(sweep_run_id: str, decision: Decision) -> list[str]:
    """Log the decision as a file of its own on the sweep's study run, then rebuild
    `promotion_log.jsonl` from all of them; its lines."""
    client = MlflowClient()
    line = json.dumps(asdict(decision), sort_keys=True)
    client.log_text(sweep_run_id, line + "\n", decision_file_name())
    listed = None
    while (files := decision_files(client, sweep_run_id)) != listed:
        listed = files
        with tempfile.TemporaryDirectory() as scratch:
            lines = read_promotion_log(client, sweep_run_id, Path(scratch))
        client.log_text(sweep_run_id, "\n".join(lines) + "\n", PROMOTION_LOG)
    return lines


def pull(model_uri: str, out_dir: Path) -> Path:
    """Download a registered model (by alias or version) into `out_dir`; MLflow must already
    point at the store (tracking.configure_tracking). The URI is resolved first, so a bad one
    creates nothing."""
    resolve_version(MlflowClient(), model_uri)
    if out_dir.exists() and not out_dir.is_dir():
        raise RegistryError(f"--out {out_dir}: a file, not a folder; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(out_dir)))
