"""What each deployed lookup table computes, for both emitters (hls4ml and RTL).

An element-wise non-linear function (an ``HActivation``'s, an ``HSoftmax``'s
exponential and reciprocal) is deployed as a table indexed by its input's bits. The
hls4ml path lays a table out over every code of one input type; the RTL path over
every value alkaid's interval arithmetic allows. Both are supersets of the values the
input can take, so a table is only *evaluated* where the input can really be (``d <=
0`` for the exponential of ``x - max(x)``, sums ``0 <= s <= n`` for the reciprocal,
the calibrated formats for an activation) and holds 0 elsewhere. The values are
``HGQ.tabulated``'s standalone evaluations, which Keras's inference reads too. A function that is
not finite on a value the input can take is refused, naming the layer: no table ever
holds inf or NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import keras
import numpy as np

from HGQ.fixed_point import union_format
from HGQ.layers.activation import HActivation
from HGQ.layers.softmax import HSoftmax
from HGQ.quantizer import HGQuantizer
from HGQ.tabulated import standalone_values


def representable(values: np.ndarray, k: int, i: int, f: int) -> np.ndarray:
    """Which ``values`` format ``(k, i, f)`` holds exactly (a width <= 0 holds only 0)."""
    if k + i + f <= 0:
        return values == 0
    on_grid = np.floor(values * 2.0**f) == values * 2.0**f
    return on_grid & (values >= -k * 2.0**i) & (values <= 2.0**i - 2.0**-f)


class TableSpec(NamedTuple):
    """What one table computes: ``function`` on float32 inputs, rounded per element by
    ``quantizer``, for input values where ``reachable`` is true (others hold 0)."""

    owner: str
    function: Callable[[Any], Any]
    quantizer: HGQuantizer
    reachable: Callable[[np.ndarray], np.ndarray]
    fix: str


def table_spec(layer: HActivation | HSoftmax, stage: str | None) -> TableSpec:
    """The table ``stage`` of ``layer``: an HActivation's (``None``), or an HSoftmax's
    ``'exp'`` or ``'inv'``."""
    if isinstance(layer, HSoftmax):
        fix = (
            "Give the HSoftmax fewer fractional bits (exp_quantizer_config's bw_clip) or "
            "narrow its input (bw_clip or a larger bops_reg_factor on the previous layer)."
        )
        if stage == "exp":  # d = x - max(x) <= 0
            return TableSpec(
                f"HSoftmax '{layer.name}' (exponential)",
                layer.exponential,
                layer.exp_quantizer,
                lambda d: d <= 0,
                fix,
            )
        n = layer.row_length  # s = sum(e): n values in [0, 1] (the row's maximum gives 1)
        return TableSpec(
            f"HSoftmax '{layer.name}' (reciprocal)",
            layer.reciprocal,
            layer.inv_quantizer,
            lambda s: (s >= 0) & (s <= n),
            fix,
        )
    union = union_format(layer.input_source().exact_output_format())
    return TableSpec(
        f"HActivation '{layer.name}'",
        layer.activation,
        layer.pre_activation_quantizer,
        lambda values: representable(values, *union),
        "Narrow the previous layer's output (bw_clip or a larger bops_reg_factor) or use a "
        "ReLU/linear activation.",
    )


def evaluate(spec: TableSpec, inputs: np.ndarray, quantize: bool) -> np.ndarray:
    """``spec``'s function (then its quantizer if ``quantize``) on ``inputs``, 0 where
    the input is unreachable; float64.

    ``inputs`` holds float64 values; with ``quantize`` its trailing axes must be the
    quantizer's shape (one column of values per element). Unreachable values are
    replaced by 0 before the function sees them, so a function that overflows there
    (``exp`` of a large positive ``d``) cannot leak inf or NaN into the table; a
    non-finite value on a reachable input is an error naming the layer.
    """
    reachable = np.asarray(spec.reachable(inputs), dtype=bool)
    as_float32 = np.where(reachable, inputs, 0.0).astype(np.float32)
    if not np.array_equal(as_float32[reachable], inputs[reachable]):
        raise ValueError(f"{spec.owner}: a table's input is wider than float32's 24 exact bits.")
    raw_values = standalone_values(spec.function, as_float32).astype(np.float64)
    bad = reachable & ~np.isfinite(raw_values)
    if np.any(bad):
        where = float(inputs[bad][0])
        raise ValueError(
            f"{spec.owner}: the function is not finite at input {where!r}, a value the "
            f"input can take, so its lookup table would hold {raw_values[bad][0]!r}. "
            f"{spec.fix}"
        )
    values = np.where(reachable, raw_values, 0.0)
    if quantize:
        quantized = spec.quantizer(
            keras.ops.convert_to_tensor(values.astype(np.float32)), training=False
        )
        values = np.asarray(keras.ops.convert_to_numpy(quantized), dtype=np.float64)
    return np.where(reachable, values, 0.0)


__all__ = ["TableSpec", "evaluate", "representable", "table_spec"]
