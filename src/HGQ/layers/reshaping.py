"""Passive reshaping layers: PFlatten, PReshape, PPermute.

They move values without changing them, so they cost nothing in hardware (in
``io_parallel`` designs they are wiring) and their output bitwidth map is their
input's map moved the same way: the next layer's EBOPs then pair every value with
its own bitwidth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from HGQ.layers.base import PLayerBase


def _known_size(shape: Sequence[int | None]) -> int | None:
    return None if any(d is None for d in shape) else math.prod(shape)


@keras.saving.register_keras_serializable(package="HGQ")
class PFlatten(PLayerBase):
    """``keras.layers.Flatten`` (row-major, channels_last): flattens all but the batch axis.

    ``data_format='channels_first'`` (whose Keras Flatten transposes first) is
    refused rather than silently flattening in a different order.
    """

    def __init__(self, data_format: str | None = None, **kwargs):
        super().__init__(**kwargs)
        resolved = keras.config.image_data_format() if data_format is None else data_format
        if resolved != "channels_last":
            raise ValueError(
                f"PFlatten supports only data_format='channels_last' (got {resolved!r}; "
                "with None it follows keras.config.image_data_format()). Pass "
                "data_format='channels_last'; HGQ layers are channels_last throughout."
            )
        self.data_format = resolved

    def call(self, inputs):
        shape = ops.shape(inputs)
        size = _known_size(tuple(shape[1:]))
        return ops.reshape(inputs, (shape[0], -1 if size is None else size))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], _known_size(tuple(input_shape[1:])))

    def transform_bitwidth(self, bitwidth):
        return ops.reshape(bitwidth, (-1,))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["data_format"] = self.data_format
        return config


@keras.saving.register_keras_serializable(package="HGQ")
class PReshape(PLayerBase):
    """``keras.layers.Reshape``: ``target_shape`` excludes the batch axis; one ``-1`` allowed."""

    def __init__(self, target_shape: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        target = tuple(int(d) for d in target_shape)
        if target.count(-1) > 1 or any(d < -1 or d == 0 for d in target):
            raise ValueError(
                f"PReshape: target_shape {target_shape!r} must be positive ints with at "
                "most one -1 (the inferred size)."
            )
        self.target_shape = target

    def _resolve(self, element_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        """``target_shape`` with its ``-1`` resolved for inputs of ``element_shape``."""
        size = _known_size(tuple(element_shape))
        known = math.prod(d for d in self.target_shape if d != -1)
        if size is None:
            return tuple(None if d == -1 else d for d in self.target_shape)
        if -1 in self.target_shape:
            if size % known:
                raise ValueError(self._mismatch(element_shape))
            return tuple(size // known if d == -1 else d for d in self.target_shape)
        if size != known:
            raise ValueError(self._mismatch(element_shape))
        return self.target_shape

    def _mismatch(self, element_shape: Sequence[int | None]) -> str:
        return (
            f"PReshape '{self.name}': cannot reshape inputs of shape {tuple(element_shape)} "
            f"({_known_size(tuple(element_shape))} elements) to {self.target_shape}; the "
            "number of elements must match."
        )

    def build(self, input_shape) -> None:
        self._resolved_shape = self._resolve(tuple(input_shape)[1:])
        super().build(input_shape)

    def call(self, inputs):
        return ops.reshape(inputs, (ops.shape(inputs)[0], *self.target_shape))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self._resolve(tuple(input_shape)[1:]))

    def transform_bitwidth(self, bitwidth):
        return ops.reshape(bitwidth, self.target_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["target_shape"] = list(self.target_shape)
        return config


@keras.saving.register_keras_serializable(package="HGQ")
class PPermute(PLayerBase):
    """``keras.layers.Permute``: ``dims`` permutes the non-batch axes, numbered from 1."""

    def __init__(self, dims: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        dims = tuple(int(d) for d in dims)
        if sorted(dims) != list(range(1, len(dims) + 1)):
            raise ValueError(
                f"PPermute: dims {dims!r} must be a permutation of 1..{len(dims)} (axis 0, "
                "the batch, never moves), e.g. (2, 1) to swap the two non-batch axes."
            )
        self.dims = dims

    def _check_rank(self, input_shape) -> None:
        if len(input_shape) != len(self.dims) + 1:
            raise ValueError(
                f"PPermute '{self.name}': dims {self.dims} need inputs of rank "
                f"{len(self.dims) + 1}, got shape {tuple(input_shape)}."
            )

    def build(self, input_shape) -> None:
        self._check_rank(input_shape)
        super().build(input_shape)

    def call(self, inputs):
        return ops.transpose(inputs, (0, *self.dims))

    def compute_output_shape(self, input_shape):
        self._check_rank(input_shape)
        return (input_shape[0], *(input_shape[d] for d in self.dims))

    def transform_bitwidth(self, bitwidth):
        return ops.transpose(bitwidth, tuple(d - 1 for d in self.dims))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["dims"] = list(self.dims)
        return config


__all__ = ["PFlatten", "PPermute", "PReshape"]
