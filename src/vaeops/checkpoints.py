"""A trained model on disk: `model.safetensors` (weights, no pickle) beside `model.json` (spec)."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file

from vaeops.models import Autoencoder, ModelSpec, build_model

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"


def save_model(model: Autoencoder, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    save_file(state, directory / WEIGHTS_FILE)
    (directory / SPEC_FILE).write_text(model.spec.to_json() + "\n")


def read_model(spec_path: Path, weights_path: Path, device: str = "cpu") -> Autoencoder:
    if not spec_path.is_file():
        raise FileNotFoundError(f"{spec_path}: no model spec; train the variant first")
    model = build_model(ModelSpec.from_json(spec_path.read_text()))
    model.load_state_dict(load_file(weights_path, device=device))
    return model.to(device).eval()


def load_model(directory: Path, device: str = "cpu") -> Autoencoder:
    return read_model(Path(directory) / SPEC_FILE, Path(directory) / WEIGHTS_FILE, device)
