"""The batch job: load a registered model by URI and write reconstructions, samples and
interpolations as PNG grids and one .npz of the raw arrays, logged to the `batch` experiment.

It uses the model exactly as a consumer would (`mlflow.pyfunc.load_model`), so what it shows is
what others get.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaeops.config import GenerateConfig, Params
from vaeops.errors import VaeopsError, one_line

BATCH_EXPERIMENT = "batch"
CHUNK = 256  # images per predict call: bounded memory, and a progress bar that moves


class InputError(VaeopsError):
    """An --input that cannot be read as images of the size the model takes."""


INPUT_FORMS = "give an IDX file (plain or .gz), a .npy array or a folder of PNGs"


def read_png(path: Path) -> np.ndarray:
    from torchvision.io import ImageReadMode, read_image

    try:
        return read_image(str(path), ImageReadMode.GRAY)[0].numpy()
    except RuntimeError as error:  # torchvision's decoders: not an image, truncated, corrupt
        raise InputError(
            f"--input {path}: not a readable image ({one_line(str(error))}); replace or remove it"
        ) from None


def read_png_folder(folder: Path) -> np.ndarray:
    files = sorted(folder.glob("*.png"))
    if not files:
        raise InputError(f"--input {folder}: no .png files; {INPUT_FORMS}")
    images = [read_png(path) for path in files]
    sizes = sorted({image.shape for image in images})
    if len(sizes) > 1:
        raise InputError(f"--input {folder}: PNGs of several sizes {sizes}; give one size")
    return np.stack(images)


def read_npy(path: Path) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:  # not .npy, truncated, pickled objects
        raise InputError(
            f"--input {path}: not a readable .npy array ({error}); {INPUT_FORMS}"
        ) from None
    if not isinstance(loaded, np.ndarray):  # np.load opened an .npz archive
        loaded.close()
        raise InputError(f"--input {path}: an .npz of several arrays; save one with np.save")
    return loaded


def read_input_images(path: Path) -> np.ndarray:
    """An IDX file (plain or .gz), a .npy array or a folder of PNGs -> (n, H, W) or (n, H*W)."""
    from vaeops.data.idx import IdxError, read_idx

    if not path.exists():
        raise InputError(f"--input {path}: no such file or folder; {INPUT_FORMS}")
    if path.is_dir():
        return read_png_folder(path)
    if path.suffix == ".npy":
        return read_npy(path)
    try:
        return read_idx(path)
    except IdxError as error:
        raise InputError(f"--input {error}; {INPUT_FORMS}") from None


def as_model_input(images: np.ndarray, shape: tuple[int, ...], source: Path) -> np.ndarray:
    """uint8 images, or float images in [0, 1] or [0, 255], each of `shape` (C, H, W) or
    flattened -> float32 (n, C*H*W) in [0, 1]. Anything else is an InputError."""
    pixels = int(np.prod(shape))
    expected = f"the model takes (n, {shape[-2]}, {shape[-1]}) or (n, {pixels}) images"
    if images.ndim < 2 or len(images) == 0 or images[0].size != pixels:
        raise InputError(f"--input {source}: an array of shape {images.shape}; {expected}")
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise InputError(f"--input {source}: {images.dtype} values; give numbers ({expected})")
    array = images.reshape(len(images), pixels).astype(np.float32)
    low, high = float(array.min()), float(array.max())
    if not (np.isfinite([low, high]).all() and low >= 0 and high <= 255):
        raise InputError(
            f"--input {source}: intensities from {low} to {high}; give finite values in "
            "[0, 1] or [0, 255]"
        )
    return array / 255.0 if high > 1.0 else array


def predict_in_chunks(model, inputs: np.ndarray, label: str) -> np.ndarray:
    from rich.progress import track

    chunks = [inputs[start : start + CHUNK] for start in range(0, len(inputs), CHUNK)]
    outputs = [model.predict(chunk) for chunk in track(chunks, description=label)]
    return np.concatenate(outputs)


def interpolation_pairs(labels: np.ndarray, pairs: int, seed: int) -> np.ndarray:
    """Indices of `pairs` (start, end) test digits of different classes, flattened: (2 * pairs,)."""
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    while len(chosen) < 2 * pairs:
        start, end = rng.choice(len(labels), size=2, replace=False)
        if labels[start] != labels[end]:
            chosen += [int(start), int(end)]
    return np.asarray(chosen)


def write_grids(
    arrays: dict[str, np.ndarray], shape: tuple[int, ...], config: GenerateConfig, out: Path
):
    from vaeops.images import comparison_rows, save_grid

    # A seeded spread of the inputs: splits are stored class by class.
    shown = np.random.default_rng(config.seed).permutation(len(arrays["inputs"]))
    shown = np.sort(shown[: config.n_reconstructions])

    def images(key: str) -> torch.Tensor:
        return torch.from_numpy(arrays[key][shown]).view(-1, *shape)

    shown_inputs = images("inputs")
    return {
        "reconstructions": save_grid(
            comparison_rows(shown_inputs, images("reconstructions"), 8),
            out / "reconstructions.png",
            8,
        ),
        "samples": save_grid(
            torch.from_numpy(arrays["samples"]).view(-1, *shape), out / "samples.png", 8
        ),
        "interpolations": save_grid(
            torch.from_numpy(arrays["interpolations"]).view(-1, *shape),
            out / "interpolations.png",
            config.interpolation_steps,
        ),
    }


def load_batch_model(model_uri: str):
    """The pyfunc model at `model_uri` (checked first with registry.check_model_uri); a path
    inside a run or a model that disappears meanwhile is still a RegistryError, not a trace."""
    import mlflow
    import yaml
    from mlflow.exceptions import MlflowException

    from vaeops.registry import RegistryError, is_not_found, not_found_error

    try:
        return mlflow.pyfunc.load_model(model_uri)
    except MlflowException as error:
        if not is_not_found(error):
            raise
        raise not_found_error(model_uri, error) from None
    except yaml.YAMLError as error:  # a damaged MLmodel file
        raise RegistryError(
            f"{model_uri}: its MLmodel file is not valid YAML ({one_line(str(error))}); "
            "pull or register the model again"
        ) from None


def model_version_tags(model_uri: str) -> dict[str, str]:
    """Which registered version the job used (aliases move, so record the number)."""
    from mlflow.tracking import MlflowClient

    from vaeops.registry import is_registry_uri, resolve_version
    from vaeops.tracking import Tag

    tags = {Tag.MODEL_URI: model_uri}
    if is_registry_uri(model_uri):
        version = resolve_version(MlflowClient(), model_uri)
        tags |= {
            Tag.MODEL_NAME: version.name,
            Tag.MODEL_VERSION: str(version.version),
            Tag.VARIANT: version.tags.get(Tag.VARIANT, ""),
        }
    return tags


def generate_batch(
    params: Params,
    model_uri: str,
    out_dir: Path,
    n_samples: int | None = None,
    input_path: Path | None = None,
) -> dict:
    """Run the batch job; returns the paths written and the MLflow run id."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from vaeops import tracking
    from vaeops.data.splits import load_split
    from vaeops.registry import check_model_uri

    config = params.generate
    # Every input is checked before anything is loaded, logged or written.
    test = load_split(params.paths.splits, "test")
    shape = tuple(test.images.shape[1:])
    if input_path is None:
        inputs = test.images.flatten(1).numpy()
    else:
        inputs = as_model_input(read_input_images(input_path), shape, input_path)
    tracking.configure_tracking(params.root)
    check_model_uri(MlflowClient(), model_uri)
    tags = model_version_tags(model_uri)
    model = load_batch_model(model_uri)
    pair_index = interpolation_pairs(test.labels.numpy(), config.interpolation_pairs, config.seed)
    arrays = {
        "inputs": inputs,
        "reconstructions": predict_in_chunks(model, inputs, "reconstructing"),
        "samples": model.predict(
            inputs[:1],
            params={
                "mode": "sample",
                "n_samples": n_samples or config.n_samples,
                "seed": config.seed,
            },
        ),
        "interpolations": model.predict(
            test.images.flatten(1).numpy()[pair_index],
            params={"mode": "interpolate", "steps": config.interpolation_steps},
        ),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    grids = write_grids(arrays, shape, config, out_dir)
    arrays_path = out_dir / "arrays.npz"
    np.savez_compressed(arrays_path, **arrays)
    # An explicit experiment id, not set_experiment: the process-wide default must not change
    # under later steps that run in the same process (the Prefect flow).
    batch = tracking.experiment_id(BATCH_EXPERIMENT, params.root)
    with mlflow.start_run(experiment_id=batch, run_name="generate", tags=tags) as run:
        mlflow.log_params({"n_inputs": len(inputs), "n_samples": len(arrays["samples"])})
        for path in [*grids.values(), arrays_path]:
            mlflow.log_artifact(str(path))
    return {
        **{name: str(path) for name, path in grids.items()},
        "arrays": str(arrays_path),
        "run_id": run.info.run_id,
        **tags,
    }
