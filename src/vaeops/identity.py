"""What makes two trainings (or evaluations) the same computation, as short digests.

A variant is identified by its definition (kind, activation, seed), the shared settings every
variant of the study uses (the split file, which fixes data and prepare; `model`; `train`) and
the code of the train step (the import closure that dvc.yaml lists as the stage's deps). The
same identity is trained once: the train step finds it in the tracking store and reuses it.
An evaluation adds the evaluate params and the evaluate step's code to the variant's identity.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vaeops.config import Params
from vaeops.provenance import code_digest
from vaeops.variants import Variant

TRAIN_CODE = "vaeops.steps.train"
EVALUATE_CODE = "vaeops.steps.evaluate"


def digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def study_key(params: Params) -> str:
    """The shared settings of every variant of a study: one MLflow study run per key."""
    shared = params.model_dump(mode="json", include={"model", "train"})
    return digest(
        {"splits": file_sha256(params.paths.splits), "code": code_digest(TRAIN_CODE), **shared}
    )


def variant_identity(params: Params, variant: Variant) -> str:
    return digest(
        {
            "study": study_key(params),
            "kind": variant.kind,
            "activation": variant.activation,
            "seed": variant.seed,
        }
    )


def evaluation_key(params: Params, identity: str) -> str:
    return digest(
        {
            "variant": identity,
            "evaluate": params.evaluate.model_dump(mode="json"),
            "beta": params.train.beta,
            "code": code_digest(EVALUATE_CODE),
        }
    )[:16]
