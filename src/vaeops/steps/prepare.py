"""The prepare step: data/ (checked against data.dvc) -> the split file."""

from __future__ import annotations

from vaeops.config import Params
from vaeops.data.splits import check_batch_fits, split_pool, split_sizes, write_splits
from vaeops.data.versioning import verify_data


def prepare(params: Params) -> dict[str, int]:
    """Write the split file; the number of images per split. Every check (the data version, the
    data itself, train.batch_size against the train split) runs before the file is written."""
    verify_data(params.paths.data, params.paths.data_dvc, params.root)
    arrays = split_pool(params.paths.data, params.prepare)
    sizes = split_sizes(arrays)
    check_batch_fits("train.batch_size", params.train.batch_size, "train", sizes["train"])
    write_splits(arrays, params.paths.splits)
    return sizes
