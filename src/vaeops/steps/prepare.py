"""The prepare step: data/ -> the split file."""

from __future__ import annotations

import time

from vaeops.config import Params
from vaeops.data.splits import prepare_splits


def prepare(params: Params) -> dict[str, int]:
    started = time.perf_counter()
    sizes = prepare_splits(params.paths.data, params.paths.splits, params.prepare)
    return sizes | {"compute_seconds": time.perf_counter() - started}
