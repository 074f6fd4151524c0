"""HEinsum: the einsum of two quantized tensors, quantized per element.

Attention multiplies activations by activations: queries by keys for the scores, the
attention weights by the values for the context. Each multiplication of the einsum is
one product of two fixed-point numbers, so its EBOPs are ``sum(einsum(equation,
bw_a, bw_b))``, the two operands' widths multiplied wherever their values are, plus
the adder tree that sums each output's products of two variables over the contracted
axes (``HGQ.logic_costs``; a kernel's product count covers its own accumulation, a
product of two variables' does not).

The equation helpers here (``split_equation``, ``check_no_direct_sum``) serve
``HEinsumDense`` too: both deploy as hls4ml einsums, with the same limits.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from HGQ.full_precision import full_precision
from HGQ.layers.base import HBaseLayer
from HGQ.logic_costs import reduction_cost


def split_equation(equation: str, owner: str) -> tuple[str, str, str]:
    """``'ab,bc->ac'`` as ``('ab', 'bc', 'ac')``, or a ValueError naming the form expected."""
    try:
        operands, output = equation.replace(" ", "").split("->")
        first, second = operands.split(",")
    except ValueError:
        raise ValueError(
            f"{owner}: equation must have the form 'ab,bc->ac' (two operands -> output, as "
            f"keras.ops.einsum), got {equation!r}."
        ) from None
    return first, second, output


def check_no_direct_sum(owner: str, equation: str, operands: tuple[str, str]) -> None:
    """Refuse letters that only one operand has and the output lacks.

    Such an axis is summed before any multiplication: an addition, not part of the
    product, which hls4ml's Einsum and EinsumDense cannot express (they assert).
    """
    first, second, output = split_equation(equation, owner)
    for letter in set(first + second) - set(output) - {"."}:
        if (letter in first) != (letter in second):
            operand = operands[0] if letter in first else operands[1]
            raise ValueError(
                f"{owner}: in {equation!r} the axis '{letter}' of the {operand} is summed "
                "without being multiplied (it is in neither the other operand nor the "
                "output), which hls4ml cannot deploy. Sum that axis first (e.g. a "
                "PGlobalAvgPool or an HDense), or keep it in the output."
            )


def split_two_operand_equation(equation: str, owner: str) -> tuple[str, str, str]:
    """An HEinsum equation's three specs: batch letter first in all, no ``...``."""
    first, second, output = split_equation(equation, owner)
    if "." in equation or not (first[:1] == second[:1] == output[:1]):
        raise ValueError(
            f"{owner}: every operand and the output must start with the batch axis, the same "
            f"letter (no '...'), e.g. 'aecd,abcd->acbe'; got {equation!r}."
        )
    check_no_direct_sum(owner, equation, ("first input", "second input"))
    return first, second, output


@keras.saving.register_keras_serializable(package="HGQ")
class HEinsum(HBaseLayer):
    """``keras.ops.einsum(equation, a, b)`` on two inputs, quantized per output element.

    Call it on a list of two tensors. The output rounds half up (the default
    ``rnd_strategy``); as for ``HMultiply``, nothing absorbs the half-LSB offset of
    rounding, so ``rnd_strategy='auto'`` truncates instead.
    """

    output_absorbs_rounding = False

    def __init__(self, equation: str, **kwargs):
        kwargs.pop("kernel_quantizer_config", None)
        super().__init__(**kwargs)
        self.equation = equation
        first, second, output = split_two_operand_equation(equation, f"HEinsum '{self.name}'")
        self.per_sample_equation = f"{first[1:]},{second[1:]}->{output[1:]}"

    def compute_output_shape(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        if len(shapes) != 2:
            raise ValueError(f"HEinsum '{self.name}' takes a list of two inputs.")
        first, second, output = split_two_operand_equation(self.equation, "HEinsum")
        sizes: dict[str, Any] = {}
        for spec, shape in ((first, shapes[0]), (second, shapes[1])):
            if len(spec) != len(shape):
                raise ValueError(
                    f"HEinsum '{self.name}': {self.equation!r} gives its operand '{spec}' "
                    f"{len(spec)} axes, but the input has shape {shape}."
                )
            for letter, size in zip(spec[1:], shape[1:], strict=True):
                if sizes.setdefault(letter, size) != size:
                    raise ValueError(
                        f"HEinsum '{self.name}': axis '{letter}' of {self.equation!r} has "
                        f"sizes {sizes[letter]} and {size} in the two inputs {shapes}."
                    )
        return (shapes[0][0],) + tuple(sizes[letter] for letter in output[1:])

    def build(self, input_shape) -> None:
        self.input_element_shapes = [tuple(int(d) for d in s[1:]) for s in input_shape]
        super().build(input_shape)

    def forward(self, inputs, training=None):
        a, b = inputs
        with full_precision():
            return ops.einsum(self.equation, a, b)

    def _operands(self, exact: bool) -> list[tuple[Any, Any]]:
        """Per input: (format widths, varies mask), shaped like one sample."""
        operands = []
        for n, shape in enumerate(self.input_element_shapes):
            if exact:
                bits, varies = self.exact_input_operand(n)
                operands.append(
                    (
                        bits.astype(np.float64).reshape(shape),
                        varies.astype(np.float64).reshape(shape),
                    )
                )
            else:
                bits, varies = self.input_operand(n)
                bits, varies = ops.cast(bits, "float32"), ops.cast(varies, "float32")
                operands.append((ops.reshape(bits, shape), ops.reshape(varies, shape)))
        return operands

    def _products(self, operands: list[tuple[Any, Any]], xp: Any) -> Any:
        """Per output element: ``Σ w_a * w_b`` over the products with a varying factor
        (a constant factor is a constant multiplication, priced like a kernel's; a
        product of two constants is folded)."""
        (bits_a, varies_a), (bits_b, varies_b) = operands
        every = xp.einsum(self.per_sample_equation, bits_a, bits_b)
        folded = xp.einsum(
            self.per_sample_equation, bits_a * (1 - varies_a), bits_b * (1 - varies_b)
        )
        return every - folded

    def _reduction(self, operands: list[tuple[Any, Any]], xp: Any) -> Any:
        """Per output element: the adder tree that sums its products of two variables
        over the contracted axes (``HGQ.logic_costs.reduction_cost``, each term
        ``w_a + w_b`` bits wide). A product with a constant factor is priced like a
        kernel's, whose count covers its accumulation; outer products sum nothing."""
        (bits_a, varies_a), (bits_b, varies_b) = operands
        live_a = varies_a * xp.where(bits_a > 0, 1.0, 0.0)
        live_b = varies_b * xp.where(bits_b > 0, 1.0, 0.0)
        equation = self.per_sample_equation
        terms = xp.einsum(equation, live_a, live_b)
        total = xp.einsum(equation, bits_a * live_a, live_b) + xp.einsum(
            equation, live_a, bits_b * live_b
        )
        return reduction_cost(total, terms, xp)

    def _cost_parts(self, exact: bool) -> dict[str, Any]:
        xp = np if exact else ops
        operands = self._operands(exact=exact)
        return {
            "products": xp.sum(self._products(operands, xp)),
            "adders": xp.sum(self._reduction(operands, xp)),
        }

    def bops_surrogate(self):
        parts = self._cost_parts(exact=False)
        return parts["products"] + parts["adders"]

    def compute_exact_bops(self) -> float:
        return sum(self.exact_cost_parts().values())

    def exact_cost_parts(self) -> dict[str, float]:
        return {kind: float(v) for kind, v in self._cost_parts(exact=True).items()}

    def output_varies(self):
        with full_precision():
            products = self._products(self._operands(exact=False), ops)
        return ops.stop_gradient(ops.cast(products > 0, "float32"))

    def exact_output_varies(self) -> np.ndarray:
        return self._products(self._operands(exact=True), np) > 0

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("kernel_quantizer_config", None)
        config["equation"] = self.equation
        return config
