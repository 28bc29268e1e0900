"""Fixtures shared by every test tier.

Outputs of every fixture live under pytest's `tmp_path`; nothing here touches the repository's
`data/`, `outputs/` or `mlruns/`. Tools that phone home are told not to, for the whole session
(and for every subprocess a test starts, which inherits this environment).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

REPO_ROOT = Path(__file__).resolve().parents[1]
# Every 20th digit of the embedded, label-sorted 5k set: 250 images, 25 per class.
TINY_STRIDE = 20


@pytest.fixture(scope="session")
def session_sys_path() -> list[str]:
    return list(sys.path)


@pytest.fixture(autouse=True)
def restore_sys_path(session_sys_path):
    """Loading a registered model in-process puts its `code/` folder (a partial copy of vaeops)
    first on sys.path; a later test's spawned worker processes would import that copy."""
    yield
    sys.path[:] = session_sys_path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The project root (where the repository's params.yaml lives)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def mnist_5k_dir(tmp_path_factory) -> Path:
    """A data folder holding the embedded 5,000 real MNIST digits, fetched once per session.

    `vaeops.data.sources.fetch_dataset("mnist-5k", ...)`: the IDX pool a fresh `vaeops data
    fetch` writes. Treat it as read-only. Fetching parses the bundled CSV, which takes seconds,
    so every fixture that needs real digits reads them from here.
    """
    from vaeops.data.sources import fetch_dataset

    folder = tmp_path_factory.mktemp("mnist-5k")
    fetch_dataset("mnist-5k", folder)
    return folder


@pytest.fixture(scope="session")
def mnist_5k(mnist_5k_dir) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits of `load_mnist_5k()` (sorted by label) as read-only uint8 arrays,
    (5000, 28, 28) and (5000,)."""
    from vaeops.data.sources import read_pool

    images, labels = read_pool(mnist_5k_dir)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


@pytest.fixture
def tiny_images(mnist_5k):
    """250 real digits (25 per class) as a fresh float32 tensor (250, 1, 28, 28) in [0, 1]."""
    import torch

    images = mnist_5k[0][::TINY_STRIDE]
    return torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255.0)


@pytest.fixture
def tiny_labels(mnist_5k):
    """The labels of `tiny_images`, int64 (250,)."""
    import torch

    return torch.from_numpy(mnist_5k[1][::TINY_STRIDE].astype(np.int64))


@pytest.fixture
def tiny_spec():
    """A small MLP VAE: one hidden layer of 16 ReLU units and 4 latent dimensions."""
    from vaeops.models import ModelSpec

    return ModelSpec(kind="vae", architecture="mlp", activation="relu", hidden=(16,), latent=4)


# A small but complete study: 2 activations (relu, tanh) x 1 seed (0) plus the default AE
# baseline (relu); 2 epochs on CPU of an MLP with hidden [32] and latent 4; 8 importance samples.
TINY_PARAMS = {
    "data": {"dataset": "mnist-5k"},
    "model": {"architecture": "mlp", "hidden": [32], "latent": 4},
    "train": {"epochs": 2, "device": "cpu"},
    "sweep": {"activations": ["relu", "tanh"], "seeds": [0]},
    "evaluate": {"iwae_samples": 8},
    "classifier": {"epochs": 1},
    "sample_quality": {"n_samples": 100},
    # One point per claim sweep: beta for relu, dropout and latent size for the best config.
    "claims": {
        "beta_activations": ["relu"],
        "betas": [2.0],
        "dropouts": [0.3],
        "latents": [2],
    },
}


def merged(base: dict, changes: dict) -> dict:
    """`base` with `changes` applied section by section (nested mappings merge, values replace)."""
    result = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            value = merged(result[key], value)
        result[key] = value
    return result


def write_params(folder: Path, **changes: dict) -> Path:
    """Write TINY_PARAMS, with `changes` merged in (e.g. train={"epochs": 1}), as
    `folder/params.yaml`, check that `load_params` accepts it, and return its path."""
    from vaeops.config import load_params

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(merged(TINY_PARAMS, changes), sort_keys=False))
    load_params(path)  # fail here, loudly, if the config schema no longer accepts the file
    return path


@pytest.fixture(scope="session")
def params_writer():
    """`write_params(folder, **changes)`: a tiny params file (TINY_PARAMS) with changes."""
    return write_params


@pytest.fixture
def tiny_params_file(tmp_path: Path) -> Path:
    """Write a small but complete `params.yaml` (TINY_PARAMS) into `tmp_path`; its Path.

    It has no `paths` section: every default path (data/, outputs/, metrics/, plots/) resolves
    against the file's folder, `tmp_path`, so a test can run the whole pipeline (`vaeops data
    fetch --params ...`, `prepare`, `train`, ...) without touching the repository. Nothing is
    fetched or created besides the file itself. The file is validated with
    `vaeops.config.load_params` before it is returned.
    """
    return write_params(tmp_path)
