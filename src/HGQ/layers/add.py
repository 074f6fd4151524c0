"""HAdd: element-wise sum of two or more quantized tensors, quantized per element."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from HGQ.layers.base import HBaseLayer


def _as_shape_list(input_shape: Any) -> list[tuple[int | None, ...]]:
    """``input_shape`` as a list of tuples; a single shape is not a valid HAdd input."""
    if not isinstance(input_shape, (list, tuple)) or not input_shape:
        raise ValueError(f"HAdd expects a list of input shapes, got {input_shape!r}.")
    if not isinstance(input_shape[0], (list, tuple)):
        # One shape (a tuple of ints/None): HAdd was called on a single tensor.
        return [tuple(input_shape)]
    return [tuple(shape) for shape in input_shape]


@keras.saving.register_keras_serializable(package="HGQ")
class HAdd(HBaseLayer):
    """``keras.layers.Add`` for HGQ: sums two or more inputs, then quantizes per element.

    Why an H-layer and not a passive one: the exact sum of fixed-point numbers of
    different formats needs the union of their formats plus carry bits, which grows
    with every residual connection; quantizing the sum lets the output bitwidths be
    learned (and penalised) like any other activation.

    Cost: adders are free in the EBOPs model (only multiplications count), so this
    layer's EBOPs are 0; it still exposes its output bitwidth map for the layers it
    feeds.

    Rounding: there is no bias to absorb the half-LSB offset of round-to-nearest
    (it would cost an extra adder per element in hardware), so
    ``rnd_strategy='auto'`` truncates (``AP_TRN``) the output. Ask for
    ``'standard_round'`` explicitly to round half up instead.

    All inputs must have the same shape (no broadcasting): every output element has
    its own format, so each must come from exactly one element of every input.
    """

    output_absorbs_rounding = False

    def __init__(self, **kwargs):
        kwargs.pop("kernel_quantizer_config", None)  # nothing to multiply by
        super().__init__(**kwargs)

    def compute_output_shape(self, input_shape: Sequence[Any]) -> tuple[int | None, ...]:
        shapes = _as_shape_list(input_shape)
        if len(shapes) < 2:
            raise ValueError(
                f"HAdd '{self.name}' needs a list of at least two inputs, got "
                f"{len(shapes)}. Call it as HAdd()([a, b, ...])."
            )
        first = shapes[0]
        for index, shape in enumerate(shapes[1:], start=1):
            if len(shape) != len(first) or any(
                a is not None and b is not None and a != b
                for a, b in zip(shape[1:], first[1:], strict=True)
            ):
                raise ValueError(
                    f"HAdd '{self.name}': input {index} has shape {shape}, but input 0 has "
                    f"{first}. All inputs must have the same shape (HAdd does not "
                    "broadcast); reshape them first (e.g. PReshape) or use HDense to "
                    "match the sizes."
                )
        # Prefer known dimensions where one input knows a size another leaves open.
        merged = [
            next((s[axis] for s in shapes if s[axis] is not None), None)
            for axis in range(len(first))
        ]
        return tuple(merged)

    def forward(self, inputs, training=None):
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
            raise ValueError(
                f"HAdd '{self.name}' needs a list of at least two inputs; call it as "
                "HAdd()([a, b, ...])."
            )
        total = inputs[0]
        for tensor in inputs[1:]:
            total = ops.add(total, tensor)
        return total

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("kernel_quantizer_config", None)
        return config
