"""A variant is one trained model of the study: (model kind, activation, seed), and for a point
of a claim sweep the setting it changes (e.g. `beta0.5`).

Its name is the key everywhere: the DVC outputs folder, the MLflow run name, the registry tags.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vaeops.config import ACTIVATION_NAMES, ConfigError, ModelConfig, Params
from vaeops.models import ModelSpec


@dataclass(frozen=True, order=True)
class Variant:
    kind: str
    activation: str
    seed: int
    setting: str = ""  # a claim sweep's point, e.g. "beta0.5"; empty in the main sweep

    @property
    def name(self) -> str:
        suffix = f"-{self.setting}" if self.setting else ""
        return f"{self.kind}-{self.activation}-s{self.seed}{suffix}"

    @property
    def config_name(self) -> str:
        """The config whose seeds are aggregated (when choosing a champion, in the report)."""
        suffix = f"-{self.setting}" if self.setting else ""
        return f"{self.kind}-{self.activation}{suffix}"

    def train_dir(self, params: Params) -> Path:
        return params.paths.variants / self.name

    def eval_dir(self, params: Params) -> Path:
        return params.paths.evaluation / self.name

    def model_spec(self, model: ModelConfig, image_shape: tuple[int, int, int]) -> ModelSpec:
        return ModelSpec(
            kind=self.kind,
            architecture=model.architecture,
            activation=self.activation,
            decoder_activation=model.decoder_activation,
            hidden=tuple(model.hidden),
            latent=model.latent,
            dropout=model.dropout,
            image_shape=image_shape,
        )


def sweep_variants(params: Params) -> list[Variant]:
    """Every variant of the sweep: each activation x seed as a VAE, and the baseline per seed."""
    sweep = params.sweep
    variants = [
        Variant("vae", activation, seed) for activation in sweep.activations for seed in sweep.seeds
    ]
    variants += [
        Variant(sweep.baseline.kind, sweep.baseline.activation, seed) for seed in sweep.seeds
    ]
    return variants


def check_choices(kind: str | None, activation: str | None) -> None:
    """Command-line values of a variant against the valid choices, named in the error."""
    if kind not in (None, "vae", "ae"):
        raise ConfigError(f"--kind: unknown model kind '{kind}'; valid: vae, ae")
    if activation is not None and activation not in ACTIVATION_NAMES:
        raise ConfigError(
            f"--activation: unknown activation '{activation}'; valid: {', '.join(ACTIVATION_NAMES)}"
        )


def select_variants(
    params: Params, kind: str | None = None, activation: str | None = None, seed: int | None = None
) -> list[Variant]:
    """The sweep's variants matching every given filter; an empty match is an error."""
    check_choices(kind, activation)
    chosen = [
        variant
        for variant in sweep_variants(params)
        if kind in (None, variant.kind)
        and activation in (None, variant.activation)
        and seed in (None, variant.seed)
    ]
    if not chosen:
        names = ", ".join(variant.name for variant in sweep_variants(params))
        raise ConfigError(f"no variant of the sweep matches those filters; the sweep has: {names}")
    return chosen
