"""PConcatenate: joins two or more quantized tensors along one non-batch axis."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from HGQ.layers.base import PLayerBase


@keras.saving.register_keras_serializable(package="HGQ")
class PConcatenate(PLayerBase):
    """``keras.layers.Concatenate`` for HGQ: values and bitwidth maps are concatenated.

    Concatenation is wiring in hardware (no cost, no change of values), so every
    output element keeps the format of the input element it came from; the output
    bitwidth map is the inputs' maps concatenated along the same axis. Unlike the
    one-input passive layers, the map is gathered from every input
    (``input_bitwidth(i)`` for each ``i``).
    """

    def __init__(self, axis: int = -1, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)
        if self.axis == 0:
            raise ValueError(
                "PConcatenate: axis=0 is the batch axis; concatenate along a feature "
                "axis (axis >= 1 or negative, e.g. -1)."
            )
        self._num_inputs: int | None = None

    # ---------------------------------------------------------------- shapes
    def _shapes(self, input_shape: Any) -> list[tuple[int | None, ...]]:
        if (
            not isinstance(input_shape, (list, tuple))
            or not input_shape
            or not isinstance(input_shape[0], (list, tuple))
            or len(input_shape) < 2
        ):
            raise ValueError(
                f"PConcatenate '{self.name}' needs a list of at least two inputs; call it "
                "as PConcatenate()([a, b, ...])."
            )
        return [tuple(shape) for shape in input_shape]

    def _axis_for_rank(self, rank: int) -> int:
        """The concatenation axis of a batched tensor of ``rank``, non-negative."""
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(
                f"PConcatenate '{self.name}': axis {self.axis} is the batch axis or out of "
                f"range for inputs of rank {rank}; use a feature axis (1..{rank - 1} or "
                "negative)."
            )
        return self.axis % rank

    def compute_output_shape(self, input_shape):
        shapes = self._shapes(input_shape)
        rank = len(shapes[0])
        axis = self._axis_for_rank(rank)
        for index, shape in enumerate(shapes):
            if len(shape) != rank or any(
                a != b and a is not None and b is not None
                for d, (a, b) in enumerate(zip(shape, shapes[0], strict=True))
                if d != axis
            ):
                raise ValueError(
                    f"PConcatenate '{self.name}': input {index} has shape {shape}, input 0 "
                    f"{shapes[0]}; all sizes except along axis {self.axis} must match."
                )
        sizes = [shape[axis] for shape in shapes]
        out = list(shapes[0])
        out[axis] = None if any(s is None for s in sizes) else sum(sizes)
        return tuple(out)

    def build(self, input_shape) -> None:
        self.compute_output_shape(input_shape)  # validates
        shapes = self._shapes(input_shape)
        self._num_inputs = len(shapes)
        self._bitwidth_axis = self._axis_for_rank(len(shapes[0])) - 1  # maps have no batch
        super().build(input_shape)

    def call(self, inputs):
        return ops.concatenate(list(inputs), axis=self.axis)

    # ------------------------------------------------------------- bitwidths
    def transform_bitwidth(self, bitwidths: Sequence[Any]):
        """Concatenate the inputs' bitwidth maps (a sequence, one per input)."""
        return ops.concatenate(list(bitwidths), axis=self._bitwidth_axis)

    def _check_built(self) -> int:
        if self._num_inputs is None:
            raise ValueError(
                f"PConcatenate '{self.name}' has not been called on its inputs yet, so its "
                "output bitwidths are unknown."
            )
        return self._num_inputs

    def output_bitwidth(self):
        # Inputs can come as different dtypes (Signature's maps are ints), which not
        # every backend concatenates: use floats, as the EBOPs surrogate does.
        floatx = keras.backend.floatx()
        return self.transform_bitwidth(
            [ops.cast(self.input_bitwidth(i), floatx) for i in range(self._check_built())]
        )

    def exact_output_bitwidth(self) -> np.ndarray:
        maps = [
            np.asarray(self.exact_input_bitwidth(i), np.int64) for i in range(self._check_built())
        ]
        return np.concatenate(maps, axis=self._bitwidth_axis)

    def operand_bitwidth(self, varies: Any = None):
        count = self._check_built()
        return self.transform_bitwidth(
            [ops.cast(self.input_operand(i)[0], "float32") for i in range(count)]
        )

    def exact_operand_bitwidth(self, varies: np.ndarray | None = None) -> np.ndarray:
        maps = [self.exact_input_operand(i)[0] for i in range(self._check_built())]
        return np.concatenate(maps, axis=self._bitwidth_axis)

    def output_varies(self):
        maps = [ops.cast(self.input_varies(i), "float32") for i in range(self._check_built())]
        return ops.stop_gradient(self.transform_bitwidth(maps))

    def exact_output_varies(self) -> np.ndarray:
        maps = [self.exact_input_varies(i) for i in range(self._check_built())]
        return np.concatenate(maps, axis=self._bitwidth_axis)

    def exact_output_format(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        formats = [self.input_source(i).exact_output_format() for i in range(self._check_built())]
        return tuple(
            np.concatenate([np.asarray(f[c], np.int64) for f in formats], axis=self._bitwidth_axis)
            for c in range(3)
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["axis"] = self.axis
        return config


__all__ = ["PConcatenate"]
