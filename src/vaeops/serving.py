"""The MLflow pyfunc flavour of a trained autoencoder: loads without unpickling anything.

The logged model carries the modules of this package that this one imports (`code_paths`, see
`registry.log_model`), its weights as safetensors and its spec as JSON; MLflow builds it from
`pyfunc_entry.py` (models from code). Input: float32 images
flattened to (n, C*H*W), intensities in [0, 1]. `params` selects what `predict` returns:

    mode="reconstruct" (default)  (n, C*H*W) reconstruction probabilities, decoded from the
                                  posterior mean: the same input always gives the same output
    mode="encode"                 (n, latent) posterior means (the codes, for the AE)
    mode="sample"                 (n_samples, C*H*W) decoded prior samples; the input is ignored
    mode="interpolate"            rows 2i and 2i+1 are pairs; (pairs * steps, C*H*W) decoded points
                                  on the straight line between their codes
"""

from __future__ import annotations

import math
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from vaeops.checkpoints import read_model

MODES = ("reconstruct", "encode", "sample", "interpolate")
DEFAULT_PARAMS = {"mode": "reconstruct", "n_samples": 16, "steps": 10, "seed": 0}


class InvalidModelInput(MlflowException, ValueError):
    """A request the model cannot answer (shape, mode). A ValueError for Python callers; as an
    MlflowException with INVALID_PARAMETER_VALUE, `mlflow models serve` answers it with HTTP 400
    and this message (any other exception becomes a message-less "unexpected error")."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def interpolate_codes(start: torch.Tensor, end: torch.Tensor, steps: int) -> torch.Tensor:
    """(pairs, latent) x 2 -> (pairs * steps, latent), each pair's line from start to end."""
    weights = torch.linspace(0, 1, steps, device=start.device).view(1, steps, 1)
    points = start.unsqueeze(1) * (1 - weights) + end.unsqueeze(1) * weights
    return points.flatten(0, 1)


class AutoencoderPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.model = read_model(Path(context.artifacts["spec"]), Path(context.artifacts["weights"]))

    def _images(self, model_input) -> torch.Tensor:
        """(n, C*H*W) -> (n, C, H, W); any other shape is the caller's error. (A logged model's
        signature rejects a wrong width before this; the check guards the wrapper's own callers.)"""
        array = np.asarray(model_input, dtype=np.float32)
        pixels = math.prod(self.model.spec.image_shape)
        if array.ndim != 2 or array.shape[1] != pixels:
            raise InvalidModelInput(
                f"input of shape {array.shape}: expected (n, {pixels}) images flattened row by "
                f"row, float32 intensities in [0, 1]"
            )
        return torch.from_numpy(array).view(-1, *self.model.spec.image_shape)

    @torch.no_grad()
    def predict(self, context, model_input, params: dict | None = None) -> np.ndarray:
        options = DEFAULT_PARAMS | (params or {})
        mode = options["mode"]
        if mode not in MODES:
            raise InvalidModelInput(f"unknown mode '{mode}'; valid: {', '.join(MODES)}")
        generator = torch.Generator().manual_seed(int(options["seed"]))
        if mode == "sample":
            images = self.model.sample(int(options["n_samples"]), generator)
        elif mode == "encode":
            return self.model.encode(self._images(model_input))[0].numpy()
        elif mode == "interpolate":
            codes = self.model.encode(self._images(model_input))[0]
            if len(codes) % 2:
                raise InvalidModelInput("mode 'interpolate' needs an even number of rows (pairs)")
            points = interpolate_codes(codes[0::2], codes[1::2], int(options["steps"]))
            images = torch.sigmoid(self.model.decode(points))
        else:
            codes = self.model.encode(self._images(model_input))[0]
            images = torch.sigmoid(self.model.decode(codes))
        return images.flatten(1).numpy()
