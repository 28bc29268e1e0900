"""A trained model on disk: `model.safetensors` (weights, no pickle) beside `model.json` (spec).

A missing, truncated or corrupt file, or weights that do not fit the spec, is a ModelFileError
naming the file; the fix is to retrain (or re-pull) the model, never to guess its contents.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vaeops.errors import MissingFileError, VaeopsError, one_line
from vaeops.models import Autoencoder, ModelSpec, build_model

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"
REPLACE = "retrain the variant (or pull the model again) to replace it"


class ModelFileError(VaeopsError):
    """A model spec or weights file that cannot be read or does not fit its spec."""


def save_model(model: Autoencoder, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    save_file(state, directory / WEIGHTS_FILE)
    (directory / SPEC_FILE).write_text(model.spec.to_json() + "\n")


def read_spec(spec_path: Path) -> ModelSpec:
    if not spec_path.is_file():
        raise MissingFileError(f"{spec_path}: no model spec; train the variant first")
    try:
        return ModelSpec.from_json(spec_path.read_text())
    # Not JSON, not text, not an object, a field missing or unknown: not a spec this code wrote.
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as error:
        raise ModelFileError(f"{spec_path}: not a model spec ({error!r}); {REPLACE}") from None


def build_from_spec(spec: ModelSpec, spec_path: Path) -> Autoencoder:
    sizes = (*spec.hidden, spec.latent, *spec.image_shape)
    if len(spec.image_shape) != 3 or not all(isinstance(n, int) and n >= 1 for n in sizes):
        raise ModelFileError(f"{spec_path}: sizes must be positive integers: {spec}; {REPLACE}")
    try:
        return build_model(spec)
    except ValueError as error:  # an unknown kind, architecture or activation
        raise ModelFileError(f"{spec_path}: {error}; {REPLACE}") from None


def read_weights(weights_path: Path, device: str) -> dict:
    if not weights_path.is_file():
        raise MissingFileError(f"{weights_path}: no model weights; {REPLACE}")
    try:
        return load_file(weights_path, device=device)
    except SafetensorError as error:  # truncated or corrupt
        raise ModelFileError(
            f"{weights_path}: not readable safetensors ({error}); {REPLACE}"
        ) from None


def read_model(spec_path: Path, weights_path: Path, device: str = "cpu") -> Autoencoder:
    model = build_from_spec(read_spec(spec_path), spec_path)
    try:
        model.load_state_dict(read_weights(weights_path, device))
    except RuntimeError as error:  # load_state_dict: missing, unexpected or mis-sized tensors
        # torch heads its list of every mismatched tensor with "Error(s) in loading state_dict".
        detail = one_line("\n".join(str(error).splitlines()[1:]) or str(error))[:200]
        raise ModelFileError(
            f"{weights_path}: weights do not fit {spec_path.name} ({detail}); {REPLACE}"
        ) from None
    return model.to(device).eval()


def load_model(directory: Path, device: str = "cpu") -> Autoencoder:
    return read_model(Path(directory) / SPEC_FILE, Path(directory) / WEIGHTS_FILE, device)
