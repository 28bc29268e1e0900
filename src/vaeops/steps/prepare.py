"""The prepare step: data/ (checked against data.dvc) -> the split file."""

from __future__ import annotations

from vaeops.config import Params
from vaeops.data.splits import prepare_splits
from vaeops.data.versioning import verify_data


def prepare(params: Params) -> dict[str, int]:
    """Write the split file; the number of images per split."""
    verify_data(params.paths.data, params.paths.data_dvc, params.root)
    return prepare_splits(params.paths.data, params.paths.splits, params.prepare)
