"""PDropout: Keras dropout while training, the identity at inference."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from HGQ.layers.base import PLayerBase


@keras.saving.register_keras_serializable(package="HGQ")
class PDropout(PLayerBase):
    """``keras.layers.Dropout`` that HGQ layers can read bitwidths through.

    Dropout exists only in training; the deployed model has nothing there, so at
    inference this is the identity and the bitwidth map passes unchanged. While
    training, the kept values are scaled by ``1 / (1 - rate)`` as in Keras and so
    leave the fixed-point grid; that is harmless because the next H-layer quantizes
    again, and the EBOPs surrogate only reads bitwidths, not values.
    """

    def __init__(
        self,
        rate: float,
        noise_shape: Sequence[int | None] | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(
                f"PDropout: rate must be in [0, 1) (the fraction of inputs dropped), got {rate!r}."
            )
        self.rate = float(rate)
        self.noise_shape = (
            None
            if noise_shape is None
            else tuple(None if d is None else int(d) for d in noise_shape)
        )
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.rate > 0 else None

    def _concrete_noise_shape(self, inputs) -> tuple[Any, ...] | None:
        """``noise_shape`` with its ``None`` entries taken from ``inputs`` (as in Keras)."""
        if self.noise_shape is None:
            return None
        shape = ops.shape(inputs)
        return tuple(shape[i] if d is None else d for i, d in enumerate(self.noise_shape))

    def call(self, inputs, training=None):
        if training and self.rate > 0:
            return keras.random.dropout(
                inputs,
                self.rate,
                noise_shape=self._concrete_noise_shape(inputs),
                seed=self.seed_generator,
            )
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def transform_bitwidth(self, bitwidth):
        return bitwidth

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            rate=self.rate,
            noise_shape=None if self.noise_shape is None else list(self.noise_shape),
            seed=self.seed,
        )
        return config


__all__ = ["PDropout"]
