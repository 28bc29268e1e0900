"""The dataset's version: `dvc add data` records the folder's md5 in data.dvc, and every step that
reads data/ first checks that the folder still is that version."""

from __future__ import annotations

import subprocess
from pathlib import Path

from vaeops.errors import VaeopsError
from vaeops.project import find_tool


class DataVersionError(VaeopsError):
    """data/ is missing or is not the version that data.dvc records."""


def record_data_version(data_dir: Path, root: Path) -> str:
    """`dvc add` the folder when the project is a DVC project; returns what to tell the user."""
    if not (root / ".dvc").is_dir():
        return f"{root} is not a DVC project: {data_dir.name}.dvc not updated"
    result = subprocess.run(
        [find_tool("dvc"), "add", str(data_dir)], capture_output=True, text=True, cwd=root
    )
    if result.returncode != 0:
        raise VaeopsError(f"dvc add {data_dir} failed: {result.stderr.strip()}")
    return (
        f"recorded {data_dir}/ in {data_dir}.dvc; to keep this version: "
        f"git add {data_dir}.dvc && git commit -m 'data: new version' && dvc push"
    )


def verify_data(data_dir: Path, dvc_file: Path, root: Path) -> None:
    """Raise DataVersionError unless `data_dir` holds exactly what `dvc_file` records.

    Nothing to check where no .dvc file versions the data (a scratch params file, say).
    """
    if not dvc_file.is_file():
        return
    if not data_dir.is_dir():
        raise DataVersionError(
            f"{data_dir}: missing, but {dvc_file.name} versions it; restore it with "
            f"`dvc pull {dvc_file.name}` (or `make data`)"
        )
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        (stage,) = repo.stage.collect(str(dvc_file))
        output = stage.outs[0]
        recorded, actual = output.hash_info.value, output.get_hash().value
    if recorded != actual:
        raise DataVersionError(
            f"{data_dir}: holds data {actual} but {dvc_file.name} records {recorded}; "
            f"run `dvc checkout {dvc_file.name}` to restore the recorded version, or "
            f"`dvc add {data_dir.name}` and commit {dvc_file.name} to version the new data"
        )
