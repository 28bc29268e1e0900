"""Typed, frozen configuration for `params.yaml`: one model per pipeline step.

`load_params` is the only way the rest of the package reads `params.yaml`; unknown keys and
bad values raise `ConfigError` with a message that names the key and the valid choices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from vaeops.errors import VaeopsError
from vaeops.project import PARAMS_FILE, find_root

ActivationName = Literal[
    "identity",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "prelu",
    "elu",
    "selu",
    "gelu",
    "silu",
    "mish",
    "softplus",
    "exp",
]
ACTIVATION_NAMES: tuple[str, ...] = get_args(ActivationName)
ModelKind = Literal["vae", "ae"]
Architecture = Literal["mlp", "conv"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["fp32", "bf16"]
PromotionMetric = Literal["val/iwae_nll", "val/neg_elbo", "val/reconstruction"]
# numpy and torch both take seeds in this range (torch.manual_seed stops at 2**64 - 1).
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
# The names vaeops.data.sources reads (kept equal by a unit test; importing it here would make
# every stage depend on the data readers), besides `idx:DIR`.
DATASET_NAMES = ("mnist-5k", "mnist", "fashion-mnist", "kmnist")


class ConfigError(VaeopsError, ValueError):
    """A params file or option that cannot be used; the message says what and how to fix."""


class StrictModel(BaseModel):
    # No NaN or infinity: every float here is a size, a rate or a threshold.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PathsConfig(StrictModel):
    """Relative paths are resolved against the project root (the folder of params.yaml)."""

    data: Path = Path("data")
    splits: Path = Path("outputs/splits.npz")
    variants: Path = Path("outputs/variants")  # the train step: one folder per variant
    evaluation: Path = Path("outputs/evaluation")  # the evaluate step: one folder per variant
    summary: Path = Path("outputs/summary")
    generated: Path = Path("outputs/generated")
    # Versioned by git (small, deterministic): what `dvc metrics` and `dvc plots` compare.
    metrics: Path = Path("metrics")
    plots: Path = Path("plots")
    # The promote step's variant -> registered version map. Deliberately not in git: a fresh
    # clone lacks it, so its first `dvc repro` runs promote and fills its own registry.
    registered_versions: Path = Path("outputs/registered_versions.json")
    # Resumable training state; not a pipeline output, deleted when a variant finishes.
    checkpoints: Path = Path("outputs/checkpoints")
    # The digit classifier whose features score samples, and the scores of every variant.
    classifier: Path = Path("outputs/classifier")
    sample_quality: Path = Path("outputs/sample_quality")
    # The claim sweeps (beta, dropout, latent size): `variants/` and `evaluation/` inside.
    claim_sweeps: Path = Path("outputs/claim_sweeps")
    reports: Path = Path("reports")

    @property
    def data_dvc(self) -> Path:
        """The .dvc file that records the version of `data` (`dvc add data` writes it)."""
        return self.data.with_name(self.data.name + ".dvc")

    def resolved(self, root: Path) -> PathsConfig:
        return self.model_copy(
            update={name: root / value for name, value in self if isinstance(value, Path)}
        )


class DataConfig(StrictModel):
    dataset: str = "mnist-5k"

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if name not in DATASET_NAMES and not (name.startswith("idx:") and len(name) > 4):
            raise ValueError(f"unknown dataset; valid: {', '.join(DATASET_NAMES)}, idx:DIR")
        return name


class PrepareConfig(StrictModel):
    seed: Seed = 0
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    # Stochastic binarization (Salakhutdinov & Murray 2008) makes the Bernoulli decoder a proper
    # likelihood; off by default to match the classic PyTorch VAE example (continuous targets).
    binarize: bool = False


class ModelConfig(StrictModel):
    architecture: Architecture = "mlp"
    hidden: tuple[int, ...] = (400,)
    latent: int = Field(20, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    # None means "the same activation as the encoder".
    decoder_activation: ActivationName | None = None

    @model_validator(mode="after")
    def _hidden_sizes_positive(self) -> ModelConfig:
        if not self.hidden or any(size < 1 for size in self.hidden):
            raise ValueError("model.hidden must be a non-empty list of positive layer sizes")
        return self


class TrainConfig(StrictModel):
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    beta: float = Field(1.0, ge=0)
    # Divergence guard: a batch loss above this (nats per image) or non-finite stops the variant.
    max_loss: float = Field(1e5, gt=0)
    device: Device = "auto"
    precision: Precision = "fp32"


class BaselineConfig(StrictModel):
    kind: ModelKind = "ae"
    activation: ActivationName = "relu"


class SweepConfig(StrictModel):
    # `exp` is in the registry but not in the default sweep: it diverges.
    activations: tuple[ActivationName, ...] = tuple(
        name for name in ACTIVATION_NAMES if name != "exp"
    )
    seeds: tuple[Seed, ...] = (0, 1, 2)
    baseline: BaselineConfig = BaselineConfig()

    @model_validator(mode="after")
    def _non_empty_unique(self) -> SweepConfig:
        for key in ("activations", "seeds"):
            values = getattr(self, key)
            if not values:
                raise ValueError(f"sweep.{key} must list at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"sweep.{key} lists a value twice: {list(values)}")
        return self


class EvaluateConfig(StrictModel):
    iwae_samples: int = Field(500, ge=1)
    seed: Seed = 0
    # Burda et al. 2015, section 5.2: a latent unit is active if Cov_x(E_q[z_i]) > 0.01.
    active_unit_threshold: float = Field(0.01, gt=0)
    # A hidden unit whose output barely varies over the validation set carries no information.
    dead_unit_threshold: float = Field(1e-3, gt=0)
    batch_size: int = Field(500, ge=1)


class ClassifierConfig(StrictModel):
    """The small CNN whose penultimate features define the Frechet distance of samples."""

    epochs: int = Field(4, ge=1)
    batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    seed: Seed = 0


class SampleQualityConfig(StrictModel):
    n_samples: int = Field(1000, ge=2)  # prior samples per variant scored against the test split
    seed: Seed = 0


class ClaimsConfig(StrictModel):
    """The sweeps that put the published claims to the test, run by `dvc repro` after the main
    sweep: beta for two activations (rate-distortion curves), and dropout and latent size for
    the best config. Each point is trained for every seed here; the main sweep's variants are
    the points at `train.beta`, `model.dropout` and `model.latent`."""

    seeds: tuple[Seed, ...] | None = None  # None: the main sweep's seeds
    beta_activations: tuple[ActivationName, ...] = ("relu", "silu")
    betas: tuple[float, ...] = (0.5, 2.0, 4.0)
    dropouts: tuple[float, ...] = (0.1, 0.3)
    latents: tuple[int, ...] = (2, 5, 10, 40)
    # Family-wise error rate of the paired comparisons with the best config (Holm correction).
    alpha: float = Field(0.05, gt=0, lt=1)

    @model_validator(mode="after")
    def _valid_points(self) -> ClaimsConfig:
        if any(beta <= 0 for beta in self.betas):
            raise ValueError(f"claims.betas must be positive: {list(self.betas)}")
        if any(not 0 <= dropout < 1 for dropout in self.dropouts):
            raise ValueError(f"claims.dropouts must lie in [0, 1): {list(self.dropouts)}")
        if any(latent < 1 for latent in self.latents):
            raise ValueError(f"claims.latents must be positive sizes: {list(self.latents)}")
        return self


class TrackingConfig(StrictModel):
    experiment: str = Field("vae-activation-study", min_length=1)


class PromoteConfig(StrictModel):
    # It goes into URIs (models:/NAME@ALIAS, models:/NAME/VERSION): no '/', '@' or ':'.
    registered_model: str = Field("vae-mnist", pattern=r"^[^/@:]+$")
    metric: PromotionMetric = "val/iwae_nll"
    # The challenger must be better than the champion by at least this much (nats per image).
    min_margin: float = Field(0.5, ge=0)


class GenerateConfig(StrictModel):
    n_samples: int = Field(64, ge=1)
    n_reconstructions: int = Field(32, ge=1)
    interpolation_pairs: int = Field(8, ge=1)
    interpolation_steps: int = Field(10, ge=2)
    seed: Seed = 0


class Params(StrictModel):
    paths: PathsConfig = PathsConfig()
    data: DataConfig = DataConfig()
    prepare: PrepareConfig = PrepareConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    sweep: SweepConfig = SweepConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tracking: TrackingConfig = TrackingConfig()
    promote: PromoteConfig = PromoteConfig()
    generate: GenerateConfig = GenerateConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    sample_quality: SampleQualityConfig = SampleQualityConfig()
    claims: ClaimsConfig = ClaimsConfig()
    # The project root: the folder of the params file (set by `load_params`).
    _root: Path = PrivateAttr(default=Path("."))

    @property
    def root(self) -> Path:
        return self._root

    @property
    def claim_seeds(self) -> tuple[int, ...]:
        return self.claims.seeds if self.claims.seeds is not None else self.sweep.seeds

    @model_validator(mode="after")
    def _claim_seeds_in_sweep(self) -> Params:
        # A claim curve's point at the study's own setting is the main sweep's variant.
        missing = sorted(set(self.claims.seeds or ()) - set(self.sweep.seeds))
        if missing:
            raise ValueError(
                f"claims.seeds {missing} are not in sweep.seeds {list(self.sweep.seeds)}; "
                "use seeds of the main sweep"
            )
        return self


def valid_keys(location: tuple) -> list[str]:
    """The keys the section at `location` (e.g. ("sweep", "baseline")) accepts."""
    model: type[BaseModel] = Params
    for part in location:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return list(model.model_fields)


def _printable(text: str) -> str:
    """`text` with control characters escaped, so a key like 'a\\nb' cannot break the line."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _describe(error: dict, source: str) -> str:
    key = _printable(".".join(str(part) for part in error["loc"])) or "(top level)"
    if error["type"] == "extra_forbidden":
        valid = ", ".join(valid_keys(error["loc"][:-1]))
        return f"{source}: unknown key '{key}'; valid keys here: {valid}"
    if error["type"] == "value_error":  # a validator's own message names the values
        return f"{source}: {key}: {error['msg'].removeprefix('Value error, ')}"
    got = repr(error.get("input"))
    got = got if len(got) <= 80 else got[:77] + "..."
    return f"{source}: {key}: {error['msg']} (got {got})"


def parse_params(raw: dict, source: str = "params") -> Params:
    """Validate a params mapping; every problem becomes one line of the ConfigError."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as error:
        lines = [_describe(detail, source) for detail in error.errors()]
        raise ConfigError("\n".join(lines)) from None


def load_params(path: Path | str | None = None) -> Params:
    """The validated params of the project; relative paths in it resolved against its folder.

    Without `path`, the project's params.yaml, found by walking up from the current folder.
    """
    path = Path(path) if path is not None else find_root() / PARAMS_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: no such params file; pass an existing file with --params")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; params files are UTF-8 YAML") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    root = path.resolve().parent
    params = parse_params(raw, source=str(path))
    params = params.model_copy(update={"paths": params.paths.resolved(root)})
    params._root = root
    return params
