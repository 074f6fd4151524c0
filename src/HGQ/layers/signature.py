"""Signature: declares that the model input already is fixed point."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from HGQ.fixed_point import pow2, wrap
from HGQ.layers.base import QLayerBase


@keras.saving.register_keras_serializable(package="HGQ")
class Signature(QLayerBase):
    """Marks inputs as fixed point of a known format; learns nothing, costs nothing.

    ``keep_negative`` (sign bit, 0/1), ``bits`` (total width) and ``int_bits``
    (integer bits, sign excluded) are scalars or arrays broadcastable to one input
    sample. Values are truncated and wrapped to that format, as an ``ap_fixed``
    input port would store them, so inputs that already conform pass unchanged.
    """

    requires_input_bitwidth = False

    def __init__(self, keep_negative: Any, bits: Any, int_bits: Any, **kwargs):
        super().__init__(**kwargs)
        self.keep_negative = np.asarray(keep_negative, dtype=np.int64)
        self.bits = np.asarray(bits, dtype=np.int64)
        self.int_bits = np.asarray(int_bits, dtype=np.int64)
        if np.any((self.keep_negative != 0) & (self.keep_negative != 1)):
            raise ValueError("Signature: keep_negative must be 0 or 1.")
        if np.any(self.bits < 0):
            raise ValueError("Signature: bits must be >= 0.")

    def build(self, input_shape) -> None:
        element_shape = tuple(input_shape[1:])
        try:
            self._k, self._i, self._bits = (
                np.broadcast_to(a, element_shape).astype(np.float32)
                for a in (self.keep_negative, self.int_bits, self.bits)
            )
        except ValueError:
            raise ValueError(
                f"Signature '{self.name}': keep_negative/bits/int_bits shapes "
                f"{self.keep_negative.shape}/{self.bits.shape}/{self.int_bits.shape} do not "
                f"broadcast to one input sample of shape {element_shape}."
            ) from None
        self._f = self._bits - self._k - self._i

    def call(self, inputs, training=None):
        scale = pow2(ops.convert_to_tensor(self._f))
        q = ops.floor(inputs * scale) / scale
        q = wrap(q, ops.convert_to_tensor(self._k), ops.convert_to_tensor(self._i))
        return ops.stop_gradient(q) + (inputs - ops.stop_gradient(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def output_bitwidth(self):
        return ops.convert_to_tensor(np.maximum(self._bits, 0))

    def exact_output_bitwidth(self) -> np.ndarray:
        return np.maximum(self._bits, 0).astype(np.int64)

    def exact_output_format(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.exact_format()

    def exact_format(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-element ``(k, i, f)`` ints, like a calibrated quantizer's."""
        return (
            self._k.astype(np.int64),
            self._i.astype(np.int64),
            self._f.astype(np.int64),
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("bops_reg_factor", None)
        config.update(
            keep_negative=self.keep_negative.tolist(),
            bits=self.bits.tolist(),
            int_bits=self.int_bits.tolist(),
        )
        return config
