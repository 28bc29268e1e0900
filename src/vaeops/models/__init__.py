"""Architectures: the activation registry and the VAE / AE family."""

from vaeops.models.autoencoder import Autoencoder, ForwardOutput, ModelSpec, build_model

__all__ = ["Autoencoder", "ForwardOutput", "ModelSpec", "build_model"]
