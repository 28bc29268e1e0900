"""Where the project is: found like git and dvc find theirs, by walking up from a folder.

Every default path (params.yaml, data/, outputs/, the local MLflow store) is resolved against the
project root, never against the current folder, so a command run from a subfolder reads and
writes the same files as one run from the root, and a command run outside a project creates
nothing.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from vaeops.errors import VaeopsError

PARAMS_FILE = "params.yaml"
PIPELINE_FILE = "dvc.yaml"


class ProjectNotFound(VaeopsError):
    """No folder from here up holds dvc.yaml and params.yaml."""


def find_root(start: Path | None = None) -> Path:
    """The nearest folder from `start` (default: the current one) up that holds both files."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PIPELINE_FILE).is_file() and (folder / PARAMS_FILE).is_file():
            return folder
    raise ProjectNotFound(
        f"{here}: not inside a vaeops project (no folder up from here holds {PIPELINE_FILE} and "
        f"{PARAMS_FILE}); cd into the project, or pass --params"
    )


def store_root(root: Path) -> Path:
    """Where the project's shared state lives (the local MLflow store).

    DVC runs a queued or `--temp` experiment in a temporary copy of the workspace and gives its
    commands the parent repository's root as DVC_ROOT; state kept there outlives the copy, so
    the experiment's runs land in the same store as `dvc repro`'s.
    """
    dvc_root = os.environ.get("DVC_ROOT")
    if dvc_root and (Path(dvc_root) / PIPELINE_FILE).is_file():
        return Path(dvc_root).resolve()
    return root


def tool_path() -> str:
    """PATH with this Python's own bin folder first: the project's dvc and vaeops commands are
    found there even when the caller's PATH (a scheduler's, a test runner's) lacks the venv."""
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def find_tool(name: str) -> str:
    found = shutil.which(name, path=tool_path())
    if found is None:
        raise VaeopsError(f"{name} is not installed beside {sys.executable} nor on PATH")
    return found
