"""Bad input fails loudly: each case is the project's own error (one line: what, where, how to
fix), raised before anything is written. The CLI and DVC entry points are in
tests/integration/test_bad_input_entrypoints.py."""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from vaeops.checkpoints import SPEC_FILE, WEIGHTS_FILE, ModelFileError, load_model, save_model
from vaeops.config import DATASET_NAMES, ConfigError, load_params, parse_params
from vaeops.data.idx import IdxError, parse_idx, read_idx, write_idx
from vaeops.data.sources import (
    DATASET_CHOICES,
    IMAGES_FILE,
    LABELS_FILE,
    DatasetError,
    load_idx_folder,
    read_pool,
)
from vaeops.data.splits import SplitError, check_batch_fits, load_split, prepare_splits
from vaeops.errors import MissingFileError, VaeopsError, hide_user_error_tracebacks, one_line
from vaeops.models import build_model
from vaeops.registry import RegistryError, check_model_uri, parse_registry_uri, resolve_version
from vaeops.steps.generate import InputError, as_model_input, read_input_images
from vaeops.steps.prepare import prepare

IMAGE_SHAPE = (1, 28, 28)


def single_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and message.strip() == message
    return message


# --- data: IDX files and the pool in data/ --------------------------------------------------


def idx_bytes(array: np.ndarray, tmp_path: Path) -> bytes:
    path = tmp_path / "scratch-idx"
    write_idx(path, array)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda raw: raw[:-5], "truncated: the header says shape (2, 3, 3) (18 values)"),
        (lambda raw: raw + b"\x00\x00", "bytes after the data"),
        (lambda raw: raw[:10], "truncated IDX header (3 dimensions, 10 bytes)"),
        (lambda raw: b"\x00\x00\x0d" + raw[3:], "bad magic number 00000d03"),
        (lambda raw: raw[:3] + b"\x00" + raw[4:], "declares 0 dimensions"),
        (lambda raw: b"PK" + raw[2:], "bad magic number 504b"),
    ],
    ids=["short-body", "long-body", "short-header", "float-type", "no-dimensions", "zip"],
)
def test_given_a_damaged_idx_file_when_read_then_idx_error_says_what_is_wrong(
    tmp_path, damage, says
):
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(damage(idx_bytes(np.zeros((2, 3, 3), np.uint8), tmp_path)))

    with pytest.raises(IdxError) as caught:
        read_idx(path)

    message = single_line(caught.value)
    assert message.startswith(f"{path}: ")
    assert says in message
    assert isinstance(caught.value, VaeopsError) and isinstance(caught.value, ValueError)


def test_given_a_header_whose_sizes_overflow_int64_when_parsed_then_idx_error_not_a_crash():
    # 4 dimensions of 2**32 - 1: their product overflows numpy's int64, not Python's int.
    raw = bytes([0, 0, 8, 4]) + b"\xff\xff\xff\xff" * 4 + b"\x00" * 16

    with pytest.raises(IdxError, match="truncated"):
        parse_idx(raw, "huge")


def test_given_a_missing_or_folder_path_when_read_then_idx_error_names_it(tmp_path):
    with pytest.raises(IdxError, match=f"{tmp_path / 'absent'}: cannot read"):
        read_idx(tmp_path / "absent")
    with pytest.raises(IdxError, match="cannot read"):
        read_idx(tmp_path)


def write_pool(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / IMAGES_FILE, images)
    write_idx(folder / LABELS_FILE, labels)
    return folder


@pytest.mark.parametrize("damaged", [IMAGES_FILE, LABELS_FILE])
def test_given_a_truncated_pool_file_when_read_then_dataset_error_says_how_to_restore(
    tmp_path, damaged
):
    data = write_pool(
        tmp_path / "data", np.zeros((4, 28, 28), np.uint8), np.arange(4, dtype=np.uint8)
    )
    (data / damaged).write_bytes((data / damaged).read_bytes()[:-3])

    with pytest.raises(DatasetError) as caught:
        read_pool(data)

    message = single_line(caught.value)
    assert message.startswith(f"{data / damaged}: truncated")
    assert "dvc checkout data.dvc" in message


@pytest.mark.parametrize(
    ("images", "labels", "says"),
    [
        (np.zeros((4, 784), np.uint8), np.zeros(4, np.uint8), "expected (n, H, W) grayscale"),
        (np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8), "got shape (0, 28, 28)"),
        (np.zeros((4, 28, 28), np.uint8), np.zeros(3, np.uint8), "4 images but 3 labels"),
        (np.zeros((4, 28, 28), np.uint8), np.zeros((4, 2), np.uint8), "labels (shape (4, 2))"),
    ],
    ids=["flat-images", "no-images", "fewer-labels", "2d-labels"],
)
def test_given_a_pool_of_the_wrong_shape_when_read_then_dataset_error(
    tmp_path, images, labels, says
):
    data = write_pool(tmp_path / "data", images, labels)

    with pytest.raises(DatasetError) as caught:
        read_pool(data)

    assert says in single_line(caught.value)


def test_given_an_idx_folder_with_flat_images_when_loaded_then_dataset_error(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 784), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))

    with pytest.raises(DatasetError, match="expected \\(n, H, W\\)"):
        load_idx_folder(tmp_path)


# --- the split file and the prepare step -----------------------------------------------------


def test_given_too_few_images_for_a_split_when_prepared_then_split_error_and_no_file(tmp_path):
    data = write_pool(
        tmp_path / "data", np.zeros((4, 28, 28), np.uint8), np.arange(4, dtype=np.uint8)
    )
    out = tmp_path / "splits.npz"

    with pytest.raises(SplitError) as caught:
        prepare_splits(data, out, parse_params({}).prepare)

    assert "leave the val split empty" in single_line(caught.value)
    assert not out.exists()


@pytest.fixture
def good_split_file(tmp_path) -> Path:
    labels = np.repeat(np.arange(10, dtype=np.uint8), 10)
    data = write_pool(tmp_path / "data", np.zeros((100, 28, 28), np.uint8), labels)
    out = tmp_path / "splits.npz"
    prepare_splits(data, out, parse_params({}).prepare)
    return out


def drop_member(path: Path, member: str) -> None:
    with zipfile.ZipFile(path) as source:
        kept = {name: source.read(name) for name in source.namelist() if name != member}
    with zipfile.ZipFile(path, "w") as target:
        for name, data in kept.items():
            target.writestr(name, data)


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(path.read_bytes()[:200]),
        lambda path: path.write_bytes(b"not a zip at all"),
        lambda path: drop_member(path, "train_images.npy"),
    ],
    ids=["truncated", "not-zip", "member-missing"],
)
def test_given_a_damaged_split_file_when_loaded_then_split_error_says_rerun_prepare(
    good_split_file, damage
):
    damage(good_split_file)

    with pytest.raises(SplitError) as caught:
        load_split(good_split_file, "train")

    message = single_line(caught.value)
    assert message.startswith(f"{good_split_file}: ")
    assert "vaeops prepare" in message


def test_given_no_split_file_when_loaded_then_missing_file_error_is_still_file_not_found(tmp_path):
    with pytest.raises(MissingFileError) as caught:
        load_split(tmp_path / "splits.npz", "train")

    assert isinstance(caught.value, FileNotFoundError)
    assert "vaeops prepare" in str(caught.value)


def test_given_a_batch_larger_than_its_split_when_checked_then_error_names_key_sizes_and_fix():
    check_batch_fits("train.batch_size", 4000, "train", 4000)  # equal fits

    with pytest.raises(SplitError) as caught:
        check_batch_fits("train.batch_size", 4001, "train", 4000)

    assert single_line(caught.value) == (
        "params.yaml: train.batch_size: 4001 is larger than the train split (4000 images); "
        "set train.batch_size to at most 4000"
    )


def test_given_a_batch_larger_than_the_train_split_when_preparing_then_nothing_is_written(
    tmp_path, mnist_5k_dir, params_writer
):
    params = load_params(params_writer(tmp_path, train={"batch_size": 4001}))
    shutil.copytree(mnist_5k_dir, params.paths.data)

    with pytest.raises(SplitError, match="4001 is larger than the train split \\(4000 images\\)"):
        prepare(params)

    assert not params.paths.splits.exists()


# --- model files: model.safetensors and model.json -------------------------------------------


@pytest.fixture
def saved_model(tiny_spec, tmp_path) -> Path:
    folder = tmp_path / "model"
    save_model(build_model(tiny_spec), folder)
    return folder


def rewrite_spec(folder: Path, **changes) -> None:
    spec = json.loads((folder / SPEC_FILE).read_text())
    (folder / SPEC_FILE).write_text(json.dumps(spec | changes))


@pytest.mark.parametrize(
    ("damage", "file", "says"),
    [
        (lambda f: (f / WEIGHTS_FILE).write_bytes((f / WEIGHTS_FILE).read_bytes()[:100]),
         WEIGHTS_FILE, "not readable safetensors"),
        (lambda f: (f / WEIGHTS_FILE).write_bytes(b"\x00" * 64), WEIGHTS_FILE,
         "not readable safetensors"),
        (lambda f: (f / SPEC_FILE).write_text('{"kind": "vae", '), SPEC_FILE, "not a model spec"),
        (lambda f: (f / SPEC_FILE).write_bytes(b"\xff\xfe\x00"), SPEC_FILE, "not a model spec"),
        (lambda f: (f / SPEC_FILE).write_text("[1, 2]"), SPEC_FILE, "not a model spec"),
        (lambda f: rewrite_spec(f, activation="swishy"), SPEC_FILE, "unknown activation 'swishy'"),
        (lambda f: rewrite_spec(f, latent=0), SPEC_FILE, "sizes must be positive integers"),
        (lambda f: rewrite_spec(f, colour=True), SPEC_FILE, "not a model spec"),
        (lambda f: rewrite_spec(f, latent=5), WEIGHTS_FILE, "weights do not fit model.json"),
    ],
    ids=["truncated-weights", "zero-weights", "truncated-spec", "binary-spec", "list-spec",
         "unknown-activation", "latent-0", "unknown-field", "spec-weights-mismatch"],
)  # fmt: skip
def test_given_a_damaged_model_file_when_loaded_then_model_file_error_names_it(
    saved_model, damage, file, says
):
    damage(saved_model)

    with pytest.raises(ModelFileError) as caught:
        load_model(saved_model)

    message = single_line(caught.value)
    assert message.startswith(f"{saved_model / file}: ")
    assert says in message
    assert message.endswith("retrain the variant (or pull the model again) to replace it")


def test_given_model_weights_missing_when_loaded_then_missing_file_error(saved_model):
    (saved_model / WEIGHTS_FILE).unlink()

    with pytest.raises(MissingFileError, match=f"{saved_model / WEIGHTS_FILE}: no model weights"):
        load_model(saved_model)


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"train": {"epochs": 0}}, "train.epochs: Input should be greater than or equal to 1"),
        ({"train": {"epochs": -3}}, "train.epochs: Input should be greater than or equal to 1"),
        ({"train": {"epochs": "many"}}, "train.epochs: Input should be a valid integer"),
        ({"train": {"epochs": 1.5}}, "train.epochs: Input should be a valid integer"),
        ({"train": {"batch_size": 0}}, "train.batch_size: Input should be greater than"),
        ({"train": {"learning_rate": float("nan")}}, "train.learning_rate: Input should be a "
                                                       "finite number"),
        ({"train": {"max_loss": float("inf")}}, "train.max_loss: Input should be a finite"),
        ({"train": "fast"}, "train: Input should be a valid dictionary"),
        ({"model": {"latent": 0}}, "model.latent: Input should be greater than or equal to 1"),
        ({"model": {"hidden": [0]}}, "model.hidden must be a non-empty list of positive"),
        ({"evaluate": {"iwae_samples": 0}}, "evaluate.iwae_samples: Input should be greater"),
        ({"prepare": {"val_fraction": 0.5, "test_fraction": 0.1}},
         "prepare.val_fraction: Input should be less than 0.5"),
        ({"prepare": {"seed": -1}}, "prepare.seed: Input should be greater than or equal to 0"),
        ({"sweep": {"seeds": [2**64]}}, "sweep.seeds.0: Input should be less than or equal to"),
        ({"sweep": {"activations": ["swish"]}}, "sweep.activations.0: Input should be 'identity'"),
        ({"model": {"decoder_activation": "cosine"}}, "model.decoder_activation: Input should be"),
        ({"data": {"dataset": "cifar-10"}}, "data.dataset: unknown dataset; valid: mnist-5k"),
        ({"data": {"dataset": "idx:"}}, "data.dataset: unknown dataset; valid: mnist-5k"),
        ({"promote": {"registered_model": "team/vae"}}, "promote.registered_model: String should"),
        ({"tracking": {"experiment": ""}}, "tracking.experiment: String should have at least 1"),
    ],
)  # fmt: skip
def test_given_an_out_of_range_or_mistyped_value_when_parsed_then_config_error_names_the_key(
    raw, says
):
    with pytest.raises(ConfigError) as caught:
        parse_params(raw, source="params.yaml")

    message = single_line(caught.value)
    assert message.startswith("params.yaml: ")
    assert says in message


def test_given_the_fractions_each_below_half_then_validation_and_test_never_reach_one():
    parse_params({"prepare": {"val_fraction": 0.49, "test_fraction": 0.49}})  # accepted

    with pytest.raises(ConfigError):
        parse_params({"prepare": {"val_fraction": 0.9, "test_fraction": 0.05}})


def test_given_a_dataset_folder_when_parsed_then_idx_names_are_accepted():
    assert (
        parse_params({"data": {"dataset": "idx:/some/folder"}}).data.dataset == "idx:/some/folder"
    )


def test_the_dataset_names_the_config_accepts_are_the_ones_the_sources_read():
    assert (*DATASET_NAMES, "idx:DIR") == DATASET_CHOICES


def test_given_a_binary_params_file_when_loaded_then_config_error_says_not_text(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81")

    with pytest.raises(ConfigError, match="not a text file"):
        load_params(path)


def test_given_several_problems_when_printed_then_one_line_lists_them_all():
    with pytest.raises(ConfigError) as caught:
        parse_params({"train": {"epochs": 0, "batch_size": 0}}, source="p.yaml")

    line = one_line(str(caught.value))
    assert "\n" not in line
    assert "train.epochs" in line and "; p.yaml: train.batch_size" in line


# --- the batch job's --input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "says"),
    [
        (np.zeros((3, 10), np.uint8), "an array of shape (3, 10); the model takes (n, 28, 28)"),
        (np.zeros((3, 32, 32), np.uint8), "an array of shape (3, 32, 32)"),
        (np.zeros(784, np.uint8), "an array of shape (784,)"),
        (np.zeros((0, 784), np.uint8), "an array of shape (0, 784)"),
        (np.full((2, 784), np.nan, np.float32), "intensities from nan to nan"),
        (np.full((2, 784), -1.0), "intensities from -1.0 to -1.0"),
        (np.full((2, 784), 300.0), "give finite values in [0, 1] or [0, 255]"),
        (np.array([["a"] * 784]), "<U1 values; give numbers"),
    ],
    ids=["few-pixels", "too-large", "one-flat-image", "empty", "nan", "negative", "over-255",
         "text"],
)  # fmt: skip
def test_given_images_the_model_cannot_take_when_converted_then_input_error(images, says):
    with pytest.raises(InputError) as caught:
        as_model_input(images, IMAGE_SHAPE, Path("digits.npy"))

    message = single_line(caught.value)
    assert message.startswith("--input digits.npy: ")
    assert says in message


def test_given_uint8_or_unit_float_images_when_converted_then_float32_in_unit_range():
    digits = np.full((2, 28, 28), 255, np.uint8)

    np.testing.assert_array_equal(as_model_input(digits, IMAGE_SHAPE, Path("x")), np.ones((2, 784)))
    unit = np.full((2, 784), 0.5, np.float64)
    assert as_model_input(unit, IMAGE_SHAPE, Path("x")).dtype == np.float32


def save_png(path: Path, size: int) -> None:
    from torchvision.io import write_png

    write_png(torch.zeros((1, size, size), dtype=torch.uint8), str(path))


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p.write_bytes(b"garbage"), "not a readable .npy array"),
        (lambda p: p.write_bytes(np.lib.format.magic(1, 0) + b"\x10\x00{'descr'"),
         "not a readable .npy array"),
        (lambda p: np.savez(p.with_suffix(".npz"), a=np.zeros(3)) or
         p.with_suffix(".npz").rename(p), "an .npz of several arrays"),
        (lambda p: np.save(p, np.array([{"a": 1}], dtype=object)), "not a readable .npy array"),
    ],
    ids=["garbage", "truncated-header", "npz", "pickled-objects"],
)  # fmt: skip
def test_given_a_npy_input_that_is_not_an_array_when_read_then_input_error(tmp_path, make, says):
    path = tmp_path / "digits.npy"
    make(path)

    with pytest.raises(InputError) as caught:
        read_input_images(path)

    assert says in single_line(caught.value)


def test_given_a_png_folder_with_a_broken_or_odd_sized_image_when_read_then_input_error(tmp_path):
    save_png(tmp_path / "a.png", 28)
    save_png(tmp_path / "b.png", 32)
    with pytest.raises(InputError, match="PNGs of several sizes \\[\\(28, 28\\), \\(32, 32\\)\\]"):
        read_input_images(tmp_path)

    (tmp_path / "b.png").write_bytes(b"not a png")
    with pytest.raises(InputError) as caught:
        read_input_images(tmp_path)
    assert single_line(caught.value).startswith(f"--input {tmp_path / 'b.png'}: not a readable")


def test_given_a_file_that_is_not_idx_when_read_as_input_then_input_error_lists_the_forms(tmp_path):
    path = tmp_path / "digits.txt"
    path.write_text("7 2 1 0 4\n")

    with pytest.raises(InputError) as caught:
        read_input_images(path)

    message = single_line(caught.value)
    assert message.startswith(f"--input {path}: not an unsigned-byte IDX file")
    assert message.endswith("give an IDX file (plain or .gz), a .npy array or a folder of PNGs")


# --- model URIs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    ["runs:/abc/model", "models:/m-0123", "models:/", "models:/@champion", "models:/vae@",
     "models:/vae/latest", "models:/vae/1.5", "vae-mnist"],
)  # fmt: skip
def test_given_a_uri_that_is_not_name_and_version_or_alias_when_parsed_then_registry_error(uri):
    with pytest.raises(RegistryError) as caught:
        parse_registry_uri(uri)

    assert "models:/NAME@ALIAS or models:/NAME/VERSION" in single_line(caught.value)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [("models:/vae-mnist@champion", ("vae-mnist", None, "champion")),
     ("models:/vae-mnist/12", ("vae-mnist", "12", None)),
     ("models:/vae-mnist", ("vae-mnist", None, None))],
)  # fmt: skip
def test_given_a_registry_uri_when_parsed_then_name_version_and_alias(uri, expected):
    assert parse_registry_uri(uri) == expected


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> MlflowClient:
    """A real, empty MLflow store (sqlite): lookups answer "not found" as a server would."""
    folder = tmp_path_factory.mktemp("store")
    return MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("models:/vae-mnist@champion", "cannot resolve models:/vae-mnist@champion: Registered "
                                       "Model with name=vae-mnist not found"),
        ("models:/vae-mnist/3", "registered models: none"),
        ("models:/vae-mnist", "names no version or alias; e.g. models:/vae-mnist@champion"),
        ("models:/m-0123abc", "Logged model with ID 'm-0123abc' not found"),
        ("runs:/0123abc/model", "Run with id=0123abc not found"),
        ("runs:/0123abc", "use runs:/RUN_ID/PATH"),
        ("ftp2://host/model", "not a model URI; use models:/NAME@ALIAS"),
    ],
)  # fmt: skip
def test_given_a_model_uri_that_does_not_resolve_when_checked_then_registry_error(
    empty_store, uri, says
):
    with pytest.raises(RegistryError) as caught:
        check_model_uri(empty_store, uri)

    assert says in single_line(caught.value)


def test_given_a_folder_without_an_mlmodel_when_checked_then_registry_error(empty_store, tmp_path):
    with pytest.raises(RegistryError, match="no MLmodel file"):
        check_model_uri(empty_store, str(tmp_path))
    with pytest.raises(RegistryError, match="no such model folder"):
        check_model_uri(empty_store, f"file://{tmp_path / 'absent'}")
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    check_model_uri(empty_store, str(tmp_path))  # exists: loading decides the rest


def test_given_an_alias_that_does_not_exist_when_resolved_then_the_error_says_how_to_fix(
    empty_store,
):
    empty_store.create_registered_model("vae-mnist")

    with pytest.raises(RegistryError) as caught:
        resolve_version(empty_store, "models:/vae-mnist@champion")

    message = single_line(caught.value)
    assert "(registered models: vae-mnist)" in message
    assert message.endswith("run `vaeops promote` to register one, or name an existing version "
                            "or alias")  # fmt: skip


# --- orchestrator logs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "traceback_logged"),
    [(VaeopsError("data/x: truncated"), False), (KeyError("x"), True)],
)
def test_given_a_run_logger_when_it_logs_an_exception_then_only_user_errors_lose_the_traceback(
    caplog, error, traceback_logged
):
    hide_user_error_tracebacks("vaeops-test.task_runs")
    logger = logging.getLogger("vaeops-test.task_runs")

    with caplog.at_level(logging.ERROR, logger="vaeops-test.task_runs"):
        try:
            raise error
        except (VaeopsError, KeyError):
            logger.error("Task run failed with exception: %r", error, exc_info=True)

    (record,) = caplog.records
    assert repr(error) in record.getMessage()
    assert ("Traceback" in caplog.text) is traceback_logged
