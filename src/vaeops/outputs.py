"""The files a variant's outputs folder holds, and reading and writing them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

TRAIN_FILE = "train.json"  # the train step's summary: run id, model URI, diverged, final metrics
EVAL_FILE = "eval.json"  # the evaluate step's metrics (a DVC metrics file)
HISTORY_FILE = "history.csv"  # per-epoch curves (a DVC plots file)
IMAGES_DIR = "images"  # reconstruction and sample grids


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run the step that writes it first (dvc repro)")
    return json.loads(path.read_text())


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]) if history else ["epoch"])
        writer.writeheader()
        writer.writerows(history)
