"""Recording a dataset version: `dvc add data` rewrites data.dvc with the folder's md5."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from vaeops.errors import VaeopsError


def record_data_version(data_dir: Path) -> str:
    """`dvc add` the folder when run inside a DVC project; returns what to tell the user."""
    if not Path(".dvc").is_dir():
        return "not a DVC project here: data.dvc not updated"
    dvc = shutil.which("dvc")
    if dvc is None:
        raise VaeopsError("dvc is not on PATH; activate the project's virtual environment (.venv)")
    result = subprocess.run([dvc, "add", str(data_dir)], capture_output=True, text=True)
    if result.returncode != 0:
        raise VaeopsError(f"dvc add {data_dir} failed: {result.stderr.strip()}")
    return (
        f"recorded {data_dir}/ in {data_dir}.dvc; to keep this version: "
        f"git add {data_dir}.dvc && git commit -m 'data: new version' && dvc push"
    )
