"""Element-wise merges of quantized tensors, quantized per element: HAdd, HSubtract,
HMultiply."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from HGQ.layers.base import HBaseLayer
from HGQ.logic_costs import reduction_cost


def _as_shape_list(input_shape: Any) -> list[tuple[int | None, ...]]:
    """``input_shape`` as a list of tuples; a single shape is not a valid merge input."""
    if not isinstance(input_shape, (list, tuple)) or not input_shape:
        raise ValueError(f"A merge layer expects a list of input shapes, got {input_shape!r}.")
    if not isinstance(input_shape[0], (list, tuple)):
        # One shape (a tuple of ints/None): HAdd was called on a single tensor.
        return [tuple(input_shape)]
    return [tuple(shape) for shape in input_shape]


class HMergeBase(HBaseLayer):
    """Two or more inputs of one shape (no broadcasting), combined element by element.

    Every output element has its own format, so each must come from exactly one
    element of every input. There is no bias to absorb the half-LSB offset of
    round-to-nearest, so ``rnd_strategy='auto'`` truncates (``AP_TRN``) the output.
    """

    output_absorbs_rounding = False
    #: Most inputs the layer takes (None: any number from two).
    max_inputs: int | None = None

    def __init__(self, **kwargs):
        kwargs.pop("kernel_quantizer_config", None)  # nothing to multiply by
        super().__init__(**kwargs)

    def _call_hint(self) -> str:
        return (
            f"Call it as {type(self).__name__}()([a, b{'' if self.max_inputs == 2 else ', ...'}])."
        )

    def compute_output_shape(self, input_shape: Sequence[Any]) -> tuple[int | None, ...]:
        kind = type(self).__name__
        shapes = _as_shape_list(input_shape)
        if len(shapes) < 2 or (self.max_inputs is not None and len(shapes) > self.max_inputs):
            wanted = "exactly two" if self.max_inputs == 2 else "at least two"
            raise ValueError(
                f"{kind} '{self.name}' needs a list of {wanted} inputs, got {len(shapes)}. "
                f"{self._call_hint()}"
            )
        first = shapes[0]
        for index, shape in enumerate(shapes[1:], start=1):
            if len(shape) != len(first) or any(
                a is not None and b is not None and a != b
                for a, b in zip(shape[1:], first[1:], strict=True)
            ):
                raise ValueError(
                    f"{kind} '{self.name}': input {index} has shape {shape}, but input 0 has "
                    f"{first}. All inputs must have the same shape ({kind} does not "
                    "broadcast); reshape them first (e.g. PReshape) or use HDense to "
                    "match the sizes."
                )
        # Prefer known dimensions where one input knows a size another leaves open.
        merged = [
            next((s[axis] for s in shapes if s[axis] is not None), None)
            for axis in range(len(first))
        ]
        return tuple(merged)

    def _inputs(self, inputs) -> list[Any]:
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' needs a list of inputs. {self._call_hint()}"
            )
        return list(inputs)

    def _summed_widths(self, widths: list[Any], xp: Any) -> Any:
        """EBOPs of adding the inputs element by element (``HGQ.logic_costs``)."""
        total = sum(widths[1:], widths[0])
        operands = sum(
            (xp.where(w > 0, 1.0, 0.0) for w in widths[1:]), xp.where(widths[0] > 0, 1.0, 0.0)
        )
        return xp.sum(reduction_cost(total, operands, xp))

    def bops_surrogate(self):
        if self._input_source_refs is None:  # called on plain arrays: nothing to price
            return None
        widths = [self.input_bitwidth(i) for i in range(len(self._input_source_refs))]
        return self._summed_widths(widths, ops)

    def compute_exact_bops(self) -> float:
        refs = self._input_source_refs
        widths = [self.exact_input_bitwidth(i).astype(np.float64) for i in range(len(refs))]
        return float(self._summed_widths(widths, np))

    def exact_cost_parts(self) -> dict[str, float]:
        return {"adders": self.compute_exact_bops()}

    def output_varies(self):
        """An element varies where any input's does (constants fold into the rest)."""
        count = len(self._input_source_refs)
        return _any_varies(
            [self.input_varies(i) for i in range(count)], self.output_bitwidth(), ops
        )

    def exact_output_varies(self) -> np.ndarray:
        count = len(self._input_source_refs)
        masks = [self.exact_input_varies(i) for i in range(count)]
        return _any_varies(masks, self.exact_output_bitwidth(), np) > 0

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("kernel_quantizer_config", None)
        return config


@keras.saving.register_keras_serializable(package="HGQ")
class HAdd(HMergeBase):
    """``keras.layers.Add`` for HGQ: sums two or more inputs, then quantizes per element.

    Why an H-layer and not a passive one: the exact sum of fixed-point numbers of
    different formats needs the union of their formats plus carry bits, which grows
    with every residual connection; quantizing the sum lets the output bitwidths be
    learned (and penalised) like any other activation.

    Cost: the adders, priced by ``HGQ.logic_costs`` on the input widths of each
    element (the original HGQ counted 0). Ask for ``rnd_strategy='standard_round'`` to
    round half up instead of truncating.
    """

    def forward(self, inputs, training=None):
        inputs = self._inputs(inputs)
        total = inputs[0]
        for tensor in inputs[1:]:
            total = ops.add(total, tensor)
        return total


@keras.saving.register_keras_serializable(package="HGQ")
class HSubtract(HMergeBase):
    """``keras.layers.Subtract`` for HGQ: ``a - b``, quantized per element; its
    subtractors cost as ``HAdd``'s adders."""

    max_inputs = 2

    def forward(self, inputs, training=None):
        first, second = self._inputs(inputs)
        return ops.subtract(first, second)


@keras.saving.register_keras_serializable(package="HGQ")
class HMultiply(HMergeBase):
    """``keras.layers.Multiply`` for HGQ: the element-wise product, quantized per element.

    EBOPs: a product of two operands costs the product of their widths, per element.
    More inputs are multiplied in turn, each partial product exactly (its width is the
    sum of its factors' widths), as the deployed chain of two-input multipliers does.
    """

    def forward(self, inputs, training=None):
        inputs = self._inputs(inputs)
        product = inputs[0]
        for tensor in inputs[1:]:
            product = ops.multiply(product, tensor)
        return product

    def bops_surrogate(self):
        count = len(self._input_source_refs)
        operands = [self.input_operand(i) for i in range(count)]
        varies = _any_varies([v for _, v in operands], self.output_bitwidth(), ops)
        return _chained_product_bops([w for w, _ in operands], varies, ops)

    def compute_exact_bops(self) -> float:
        count = len(self._input_source_refs)
        operands = [self.exact_input_operand(i) for i in range(count)]
        varies = _any_varies([v for _, v in operands], self.exact_output_bitwidth(), np)
        widths = [w.astype(np.float64) for w, _ in operands]
        return float(_chained_product_bops(widths, varies, np))

    def exact_cost_parts(self) -> dict[str, float]:
        return {"products": self.compute_exact_bops()}


def _any_varies(masks: list[Any], like: Any, xp: Any) -> Any:
    """1.0 where any of the inputs' ``varies`` masks is set, shaped like ``like``
    (``xp``: ``keras.ops`` without gradient, or ``numpy``)."""
    shape = tuple(xp.shape(like))
    total = sum(
        xp.broadcast_to(xp.asarray(m, "float32") if xp is np else xp.cast(m, "float32"), shape)
        for m in masks
    )
    varies = xp.where(total > 0, 1.0, 0.0)
    return varies if xp is np else ops.stop_gradient(varies)


def _chained_product_bops(widths: list[Any], varies: Any, xp: Any) -> Any:
    """EBOPs of multiplying ``widths[0] * widths[1] * ...`` in turn, per element where
    ``varies`` (a constant times a variable is a constant multiplication, priced like a
    kernel's; a product of constants is folded).

    ``xp``: ``keras.ops`` (training) or ``numpy`` (exact). A partial product is as wide
    as its factors together, and 0 wide (a constant 0) when a factor is.
    """
    bops = 0.0
    partial = widths[0]
    for width in widths[1:]:
        cost = partial * width
        bops = bops + xp.sum(cost * varies)
        partial = xp.where(cost > 0, partial + width, 0.0)
    return bops
