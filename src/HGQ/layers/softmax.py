"""HSoftmax: a softmax whose inference is the deployed fixed-point arithmetic itself.

hls4ml's own softmax recomputes its tables from its own types and is not bit-exact
with any Keras softmax. Here every step of the hardware computation is a step of the
Keras layer, on the same values:

1. ``d = x - max(x)`` along the axis (exact: ``d <= 0`` on the input's grid);
2. ``e = Q_exp(exp(d))``: a lookup table indexed by ``d``, rounded per element;
3. ``s = sum(e)`` along the axis (exact; ``s >= 1``, the maximum contributes 1);
4. ``r = Q_inv(1 / s)``: a lookup table indexed by ``s``, rounded per row (at
   inference Keras rounds the rational ``1 / s`` exactly, with integer corrections:
   XLA's fused float32 division can be an ulp off, which a floor quantizer turns into
   a whole LSB at ``s = 2``);
5. ``Q_out(e * r)``: a multiplication per element, rounded per element.

Subtracting the maximum bounds every intermediate whatever the input: ``e``, ``r`` and
the output lie in ``[0, 1]``. Their formats are therefore fixed (unsigned, one integer
bit) instead of calibrated, so the layer never overflows, even far outside the
calibrated range, and only the fractional bits are learned (per element), kept >= 0.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from HGQ.config import check_config_mapping, merged_config
from HGQ.fixed_point import pow2, union_format
from HGQ.layers.base import HBaseLayer
from HGQ.logic_costs import COMPARISON_WEIGHT, reduction_cost, table_cost
from HGQ.quantizer import (
    HGQuantizer,
    deserialize_quantizer_config,
    is_calibrating,
    serialize_quantizer_config,
)
from HGQ.tabulated import input_table, tabulated

#: Defaults of the three quantizers: 8 fractional bits to start, never negative (a
#: value of 1 must stay representable so that ``s >= 1``), at most 10 (the reciprocal's
#: table, indexed by the sum, then stays within 2^16 entries for rows of up to 32).
SOFTMAX_QUANTIZER_DEFAULTS = {"init_bw": 8, "bw_clip": (0, 10)}

#: The most fractional bits of ``e`` and ``r``: with ``f_e + f_r <= 22`` the exact
#: reciprocal's integers stay within float32's 24 bits, and rounding the float32
#: ``1 / s`` of the tables gives the rational ``1 / s`` rounded (it is never within an
#: ulp of a rounding boundary it is not on).
MAX_TABLE_FRACTIONAL_BITS = 11


def difference_format(kif: tuple[int, int, int]) -> tuple[int, int, int]:
    """The format of ``x - max(x)`` for ``x`` of format ``kif``: ``<= 0``, so signed
    with one integer bit more (nothing when ``x`` is 0 bits wide)."""
    k, i, f = kif
    return (1, i + k, f) if k + i + f > 0 else (0, 0, 0)


@keras.saving.register_keras_serializable(package="HGQ")
class UnitRangeQuantizer(HGQuantizer):
    """An activation quantizer for values known to lie in ``[0, 1]``: its record is that
    range for good (not the data's), so its format is unsigned with one integer bit."""

    def build(self, shape) -> None:
        super().build(shape)
        self.reset_minmax()

    def reset_minmax(self) -> None:
        self.vmin.assign(np.zeros(self.vmin.shape, np.float32))
        self.vmax.assign(np.ones(self.vmax.shape, np.float32))

    def _update_record(self, q, training: bool) -> None:
        """The range is known; data cannot change it."""


def softmax_quantizer_config(
    config: dict[str, Any] | None, owner: str, max_bits: int | None = None
) -> dict[str, Any]:
    """A pre-activation config with the softmax defaults under the user's keys, f >= 0
    (and ``f <= max_bits`` where given)."""
    check_config_mapping(config, owner)
    merged = merged_config(
        "pre_activation",
        {**SOFTMAX_QUANTIZER_DEFAULTS, **(deserialize_quantizer_config(config) or {})},
    )
    low, high = merged["bw_clip"]
    if low < 0:
        raise ValueError(
            f"{owner}: bw_clip must start at 0 or above (got {merged['bw_clip']!r}): with "
            "negative fractional bits exp(0) = 1 could round to 0 and the sum to 0."
        )
    if max_bits is not None and high > max_bits:
        raise ValueError(
            f"{owner}: bw_clip must end at {max_bits} or below (got {merged['bw_clip']!r}): "
            "the exponential's and reciprocal's fractional bits together must fit float32's "
            "exact integers for the reciprocal to be rounded exactly."
        )
    if merged["rnd_strategy"] == "auto":
        merged["rnd_strategy"] = "standard_round"
    return merged


@keras.saving.register_keras_serializable(package="HGQ")
class HSoftmax(HBaseLayer):
    """Softmax over the last axis, computed as the firmware computes it (see the module).

    ``exp_quantizer_config``, ``inv_quantizer_config`` and
    ``pre_activation_quantizer_config`` configure the exponential's table output (per
    element), the reciprocal's (per row) and the result (per element); only their
    fractional bits matter (8 to start, clipped to 0..10). EBOPs: the products
    ``e * r``, ``sum bw_e * bw_r``; tables and sums cost none, as elsewhere.
    """

    output_absorbs_rounding = True
    output_quantizer_class = UnitRangeQuantizer

    def __init__(
        self,
        axis: int = -1,
        exp_quantizer_config: dict[str, Any] | None = None,
        inv_quantizer_config: dict[str, Any] | None = None,
        pre_activation_quantizer_config: dict[str, Any] | None = None,
        **kwargs,
    ):
        kwargs.pop("kernel_quantizer_config", None)
        owner = type(self).__name__
        super().__init__(
            pre_activation_quantizer_config=softmax_quantizer_config(
                pre_activation_quantizer_config, f"{owner}: pre_activation_quantizer_config"
            ),
            **kwargs,
        )
        self.axis = int(axis)
        self.exp_quantizer_config = softmax_quantizer_config(
            exp_quantizer_config, f"{owner}: exp_quantizer_config", MAX_TABLE_FRACTIONAL_BITS
        )
        self.inv_quantizer_config = softmax_quantizer_config(
            inv_quantizer_config, f"{owner}: inv_quantizer_config", MAX_TABLE_FRACTIONAL_BITS
        )

    def build(self, input_shape) -> None:
        rank = len(input_shape)
        if self.axis not in (-1, rank - 1):
            raise ValueError(
                f"HSoftmax '{self.name}': axis={self.axis} on inputs of shape "
                f"{tuple(input_shape)}; only the last axis is supported. Move the axis last "
                "with PPermute before the HSoftmax (and back after it)."
            )
        if rank < 2:
            raise ValueError(f"HSoftmax '{self.name}' needs an input with a feature axis.")
        self.row_length = int(input_shape[-1])
        self.exp_quantizer = UnitRangeQuantizer(
            self.exp_quantizer_config, role="activation", non_negative=True, name="exp_quantizer"
        )
        self.exp_quantizer.build(tuple(input_shape))
        self.inv_quantizer = UnitRangeQuantizer(
            self.inv_quantizer_config, role="activation", non_negative=True, name="inv_quantizer"
        )
        self.inv_quantizer.build(tuple(input_shape[:-1]) + (1,))
        super().build(input_shape)

    def output_is_non_negative(self) -> bool:
        return True

    def compute_output_shape(self, input_shape):
        return input_shape

    # The two tables, as functions of their float32 inputs: shared by the forward pass
    # and by the deployed tables so that both compute the same float32 values.
    @staticmethod
    def exponential(d):
        return ops.exp(d)

    @staticmethod
    def reciprocal(s):
        return 1.0 / ops.maximum(s, 1.0)  # s >= 1 always; the guard keeps unused codes finite

    def rounded_reciprocal(self, s):
        """``Q_inv(1 / s)`` at inference, exactly: the rational ``1 / s`` rounded (floor
        or half up) to the reciprocal's grid, as the table holds it.

        With ``s = S 2^-F`` (``F`` the finest exponential grid) it is
        ``floor(N / D) 2^-f_r`` with integers ``N = 2^(F + f_r)``, ``D = S`` (floor) or
        ``N = 2^(F + f_r + 1) + S``, ``D = 2S`` (half up). A float32 division gives the
        quotient within one; two exact integer comparisons correct it.
        """
        f_e = ops.max(ops.round(ops.convert_to_tensor(self.exp_quantizer.fractional_bits)))
        f_r = ops.round(ops.convert_to_tensor(self.inv_quantizer.fractional_bits))
        sum_integer = ops.maximum(s * pow2(f_e), pow2(f_e))  # s >= 1 always
        one = pow2(f_e + f_r)
        if self.inv_quantizer.config["rnd_strategy"] == "floor":
            numerator, denominator = ops.ones_like(sum_integer) * one, sum_integer
        else:
            numerator, denominator = 2.0 * one + sum_integer, 2.0 * sum_integer
        quotient = ops.floor(numerator / denominator)
        quotient = quotient - ops.cast(quotient * denominator > numerator, quotient.dtype)
        quotient = quotient + ops.cast((quotient + 1.0) * denominator <= numerator, s.dtype)
        return quotient / pow2(f_r)

    def prepare_table(self) -> None:
        """Tabulate ``exp`` over the grid of ``d = x - max(x)`` (signed, one integer bit
        more than the calibrated input) for inference to read (see ``HGQ.tabulated``);
        called by ``compute_bops`` and when a calibrated model is loaded."""
        self._inference_table = input_table(self, self.exponential, difference_format)

    def load_own_variables(self, store) -> None:
        super().load_own_variables(store)
        self.prepare_table()

    def forward(self, inputs, training=None):
        d = inputs - ops.max(inputs, axis=-1, keepdims=True)
        table = None if training or is_calibrating() else getattr(self, "_inference_table", None)
        exp_d = tabulated(d, self.exponential, table)
        e = self.exp_quantizer(exp_d, training=training)
        s = ops.sum(e, axis=-1, keepdims=True)
        r = self.reciprocal(s) if training else self.rounded_reciprocal(s)
        r = self.inv_quantizer(r, training=training)
        return e * r

    def cost_parts(self, bits_x, bits_e, bits_r, xp) -> dict[str, Any]:
        """EBOPs of each step on the widths of the input, ``e`` and ``r`` (rows last):
        the products ``e * r`` (the original HGQ's count) and, by ``HGQ.logic_costs``,
        the row maximum's comparisons, the adders (``x - max`` and the row sum) and the
        two tables (exponential per element, reciprocal per row)."""
        nonzero = lambda bits: xp.where(bits > 0, 1.0, 0.0)  # noqa: E731
        # A row whose inputs are all constants is a constant row: nothing is built.
        row_varies = xp.max(nonzero(bits_x), axis=-1, keepdims=True)
        bits_e, bits_r = bits_e * row_varies, bits_r * row_varies

        def row_reduction(bits):
            total, operands = xp.sum(bits, axis=-1), xp.sum(nonzero(bits), axis=-1)
            return xp.sum(reduction_cost(total, operands, xp))

        row_max = xp.max(bits_x, axis=-1, keepdims=True)
        sum_bits = xp.max(bits_e, axis=-1, keepdims=True) + math.ceil(math.log2(self.row_length))
        return {
            "products": xp.sum(bits_e * bits_r),
            "comparisons": COMPARISON_WEIGHT * row_reduction(bits_x),
            "adders": row_reduction(bits_e)
            + xp.sum(reduction_cost(bits_x + row_max, nonzero(bits_x) + 1.0, xp)),
            "tables": xp.sum(table_cost(bits_x + 1.0, bits_e, xp))
            + xp.sum(table_cost(sum_bits, bits_r, xp)),
        }

    def bops_surrogate(self):
        shape = tuple(self.exp_quantizer.element_shape)
        bits_x = ops.broadcast_to(self.input_bitwidth(), shape)
        parts = self.cost_parts(
            bits_x,
            self.exp_quantizer.surrogate_bitwidth(),
            self.inv_quantizer.surrogate_bitwidth(),
            ops,
        )
        return sum(parts.values())

    def output_varies(self):
        """Every element of a row varies if any input of the row does."""
        shape = tuple(self.exp_quantizer.element_shape)
        bits_x = ops.broadcast_to(self.input_bitwidth(), shape)
        row = ops.max(ops.cast(bits_x > 0, "float32"), axis=-1, keepdims=True)
        return ops.stop_gradient(ops.broadcast_to(row, shape))

    def exact_output_varies(self) -> np.ndarray:
        shape = tuple(self.exp_quantizer.element_shape)
        bits_x = np.broadcast_to(self.exact_input_bitwidth(), shape)
        return np.broadcast_to(np.any(bits_x > 0, axis=-1, keepdims=True), shape)

    def exact_cost_parts(self) -> dict[str, float]:
        shape = tuple(self.exp_quantizer.element_shape)
        bits_x = np.broadcast_to(self.exact_input_bitwidth(), shape).astype(np.float64)
        parts = self.cost_parts(
            bits_x,
            self.exp_quantizer.exact_bitwidth().astype(np.float64),
            self.inv_quantizer.exact_bitwidth().astype(np.float64),
            np,
        )
        return {name: float(value) for name, value in parts.items()}

    def compute_exact_bops(self) -> float:
        return sum(self.exact_cost_parts().values())

    def freeze(self, cover_factor: float = 1.0) -> None:
        """Fix the formats: the ranges are known, so ``cover_factor`` does not apply."""
        for quantizer in (self.exp_quantizer, self.inv_quantizer, self.pre_activation_quantizer):
            quantizer.freeze_int_bits(1.0)

    def table_input_bits(self) -> dict[str, int]:
        """Index widths of the two tables, from the calibrated input formats: the
        exponential's is that of ``x - max(x)``, the reciprocal's that of the sum."""
        kif = union_format(self.input_source().exact_output_format())
        f_e = int(np.max(self.exp_quantizer.rounded_fractional_bits()))
        return {
            "exp": sum(difference_format(kif)),
            "inv": 1 + math.ceil(math.log2(self.row_length)) + f_e,
        }

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("kernel_quantizer_config", None)
        config.update(
            axis=self.axis,
            exp_quantizer_config=serialize_quantizer_config(self.exp_quantizer_config),
            inv_quantizer_config=serialize_quantizer_config(self.inv_quantizer_config),
        )
        return config
