"""Each HGQ layer's inference arithmetic on da4ml's symbolic fixed-point arrays.

A rule takes the layer and its inputs (``FixedVariableArray`` without batch axis, one
per input tensor) and returns the output the layer computes at inference, to the bit:
the deployed (quantized) kernel and bias, the ReLU, and the output quantizer's
per-element ``(k, i, f)`` with its rounding and overflow. da4ml then keeps every
intermediate exact (interval arithmetic), so the only rounding is where Keras rounds.

Element-wise non-linear functions become tables. Their entries are not recomputed
here: the layer's own function and quantizer are run in Keras on every value the
input can take, so a table holds exactly what the Keras model returns.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from da4ml.trace import FixedVariable, FixedVariableArray

from HGQ.deploy.formats import quantizer_rounding
from HGQ.deploy.tables import TableSpec, evaluate, table_spec
from HGQ.layers import (
    HActivation,
    HAdd,
    HConv1D,
    HConv2D,
    HDense,
    HEinsum,
    HEinsumDense,
    HMultiHeadAttention,
    HMultiply,
    HQuantize,
    HSoftmax,
    HSubtract,
    PConcatenate,
    PDropout,
    PFlatten,
    PPermute,
    PReshape,
    Signature,
)
from HGQ.layers.activation import MAX_TABLE_INPUT_BITS
from HGQ.layers.base import HBaseLayer, HKernelLayer, QLayerBase
from HGQ.layers.conv import conv_output_length, same_padding
from HGQ.layers.einsum_dense import without_batch
from HGQ.layers.pooling import _PGlobalPoolBase, _PMaxPoolBase, _PPoolBase
from HGQ.quantizer import HGQuantizer

Rule = Callable[[Any, list[FixedVariableArray], tuple[int, ...]], FixedVariableArray]


def _wrap(values: np.ndarray, like: FixedVariableArray) -> FixedVariableArray:
    return FixedVariableArray(values, like.solver_options, hwconf=like.hwconf)


def quantize_elements(
    x: FixedVariableArray,
    kif: tuple[np.ndarray, np.ndarray, np.ndarray],
    overflow: str,
    rounding: str,
) -> FixedVariableArray:
    """``x`` cast per element to ``kif`` with ap_fixed's rounding and overflow modes.

    ``SAT_SYM`` on a 1-bit signed format keeps ``-2^i`` in ap_fixed (its only non-zero
    value), which is plain saturation; da4ml's symmetric mode would give 0 there.
    """
    k, i, f = (np.broadcast_to(np.asarray(a, np.int64), x.shape) for a in kif)
    out = np.empty(x.shape, dtype=object)
    for index in np.ndindex(x.shape):
        kk, ii, ff = int(k[index]), int(i[index]), int(f[index])
        mode = "SAT" if overflow == "SAT_SYM" and kk == 1 and kk + ii + ff == 1 else overflow
        out[index] = x._vars[index].quantize(kk, ii, ff, mode, rounding)
    return _wrap(out, x)


def quantize_with(x: FixedVariableArray, quantizer: HGQuantizer) -> FixedVariableArray:
    """``x`` through a calibrated activation quantizer, as at inference."""
    overflow = quantizer.config["overflow_mode"]
    return quantize_elements(x, quantizer.exact_format(), overflow, quantizer_rounding(quantizer))


def _grid_size(variable: FixedVariable) -> int:
    """How many values ``variable`` can hold."""
    low, high, step = (float(v) for v in (variable.low, variable.high, variable.step))
    return round((high - low) / step) + 1


def _grid(variable: FixedVariable) -> np.ndarray:
    """Every value ``variable`` can hold, ascending."""
    low, step = float(variable.low), float(variable.step)
    return low + step * np.arange(_grid_size(variable), dtype=np.float64)


def apply_table(x: FixedVariableArray, spec: TableSpec) -> FixedVariableArray:
    """``spec.quantizer(spec.function(x))`` per element, as one table per distinct input range.

    The table entries come from Keras itself: the function and quantizer run on a
    batch whose column for each element walks through every value that element's
    input can take (padded with its last value); values the layer's arithmetic rules
    out (``spec.reachable``) get 0 instead.
    """
    flat = list(x._vars.ravel())
    longest = max(_grid_size(v) for v in flat)  # checked before any grid is made
    if longest > 2**MAX_TABLE_INPUT_BITS:
        raise ValueError(
            f"{spec.owner}: an input element takes {longest} values, so its table would exceed "
            f"2^{MAX_TABLE_INPUT_BITS} entries. {spec.fix}"
        )
    grids = [_grid(v) for v in flat]
    padded = np.stack([np.pad(g, (0, longest - len(g)), mode="edge") for g in grids], axis=1)
    outputs = evaluate(spec, padded.reshape((longest,) + x.shape), quantize=True)
    outputs = outputs.reshape(longest, -1)
    # A one-entry table (a constant input) gives da4ml's constant.
    pairs = enumerate(zip(flat, grids, strict=True))
    looked_up = [v.lookup(outputs[: len(g), n]) for n, (v, g) in pairs]
    return _wrap(np.array(looked_up, dtype=object).reshape(x.shape), x)


# ------------------------------------------------------------------ kernel layers
def _explicit_ellipsis(equation: str, data_rank: int) -> str:
    """``equation`` with ``...`` spelled out in letters it does not use (for da4ml)."""
    data, rest = equation.split(",", 1)
    if "..." not in data:
        return equation
    free = [c for c in "abcdefghijklmnopqrstuvwxyz" if c not in equation]
    letters = "".join(free[: data_rank - (len(data) - 3)])
    return equation.replace("...", letters)


def _linear(layer: HKernelLayer, x: FixedVariableArray, kernel: np.ndarray) -> FixedVariableArray:
    """The layer's linear map with ``kernel`` (constant multiplications, summed)."""
    if isinstance(layer, HEinsumDense):
        equation = _explicit_ellipsis(without_batch(layer.equation), x.ndim)
        return np.einsum(equation, x, kernel)
    if isinstance(layer, (HConv1D, HConv2D)):
        return _convolve(layer, x, kernel)
    if isinstance(layer, HDense):
        return x @ kernel
    raise TypeError(f"{type(layer).__name__} '{layer.name}' has no RTL linear map")


def _convolve(layer: Any, x: FixedVariableArray, kernel: np.ndarray) -> FixedVariableArray:
    """A channels-last convolution as one constant matrix product per output position."""
    window = tuple(kernel.shape[:-2])
    out_shape, members = _windows(x, window, tuple(layer.strides), layer.padding)
    zeros = np.zeros(x.shape[-1], dtype=object)
    patches = np.empty(out_shape + (math.prod(window) * x.shape[-1],), dtype=object)
    for index in np.ndindex(out_shape):
        patches[index] = np.concatenate([zeros if m is None else m for m in members[index]])
    return _wrap(patches, x) @ kernel.reshape(-1, kernel.shape[-1])


def _windows(
    x: FixedVariableArray, window: tuple[int, ...], strides: tuple[int, ...], padding: str
) -> tuple[tuple[int, ...], dict[tuple[int, ...], list[np.ndarray | None]]]:
    """The output positions' shape, and each position's window: the channel vectors
    of its inputs in window order, None where ``padding='same'`` pads (as Keras pads:
    the extra element after)."""
    spatial = x.shape[:-1]
    pads = (
        [same_padding(n, k, s) for n, k, s in zip(spatial, window, strides, strict=True)]
        if padding == "same"
        else [(0, 0)] * len(spatial)
    )
    out_shape = tuple(
        conv_output_length(n, k, s, padding)
        for n, k, s in zip(spatial, window, strides, strict=True)
    )
    members: dict[tuple[int, ...], list[np.ndarray | None]] = {}
    for out_index in np.ndindex(out_shape):
        row: list[np.ndarray | None] = []
        for offset in np.ndindex(window):
            source = tuple(
                o * s + d - before
                for o, s, d, (before, _) in zip(out_index, strides, offset, pads, strict=True)
            )
            inside = all(0 <= p < n for p, n in zip(source, spatial, strict=True))
            row.append(x._vars[source] if inside else None)
        members[out_index] = row
    return out_shape, members


def kernel_layer(layer: HKernelLayer, inputs, out_shape) -> FixedVariableArray:
    """Dense, Conv, EinsumDense (and their BatchNorm-fused forms): linear, bias, ReLU, Q."""
    kernel, bias = layer.deployed_weights()
    y = _linear(layer, inputs[0], kernel)
    if bias is not None:
        y = y + bias
    if layer.activation_name == "relu":
        y = y.relu()
    return quantize_with(y, layer.pre_activation_quantizer)


# ----------------------------------------------------------------- other H-layers
def quantize_layer(layer: HQuantize, inputs, out_shape) -> FixedVariableArray:
    """The firmware's inputs are already in HQuantize's formats (see ``trace_model``)."""
    return quantize_with(inputs[0], layer.pre_activation_quantizer)


def signature_layer(layer: Signature, inputs, out_shape) -> FixedVariableArray:
    return quantize_elements(inputs[0], layer.exact_format(), "WRAP", "TRN")


def activation_layer(layer: HActivation, inputs, out_shape) -> FixedVariableArray:
    x = inputs[0]
    if layer.activation is keras.activations.relu:
        x = x.relu()
    elif layer.uses_lookup_table():
        return apply_table(x, table_spec(layer, None))
    return quantize_with(x, layer.pre_activation_quantizer)


def merge_layer(layer: HBaseLayer, inputs, out_shape) -> FixedVariableArray:
    if isinstance(layer, HSubtract):
        y = inputs[0] - inputs[1]
    elif isinstance(layer, HMultiply):
        y = functools.reduce(lambda a, b: a * b, inputs)
    else:
        y = functools.reduce(lambda a, b: a + b, inputs)
    return quantize_with(y, layer.pre_activation_quantizer)


def einsum_layer(layer: HEinsum, inputs, out_shape) -> FixedVariableArray:
    y = np.einsum(layer.per_sample_equation, inputs[0], inputs[1])
    return quantize_with(y, layer.pre_activation_quantizer)


def softmax_layer(layer: HSoftmax, inputs, out_shape) -> FixedVariableArray:
    """``d = x - max``, ``e = Q(exp d)``, ``s = sum e``, ``r = Q(1/s)``, out ``Q(e r)``."""
    x = inputs[0]
    d = x - np.max(x, axis=-1, keepdims=True)
    e = apply_table(d, table_spec(layer, "exp"))
    s = np.sum(e, axis=-1, keepdims=True)
    r = apply_table(s, table_spec(layer, "inv"))
    return quantize_with(e * r, layer.pre_activation_quantizer)


def attention_layer(layer: HMultiHeadAttention, inputs, out_shape) -> FixedVariableArray:
    """The parts in the order ``HMultiHeadAttention.call`` applies them."""
    query, value, key = inputs
    q = kernel_layer(layer.query_dense, [query], None)
    k = kernel_layer(layer.key_dense, [key], None)
    v = kernel_layer(layer.value_dense, [value], None)
    weights = softmax_layer(layer.softmax, [einsum_layer(layer.scores, [k, q], None)], None)
    context = einsum_layer(layer.context, [weights, v], None)
    return kernel_layer(layer.output_dense, [context], None)


# ---------------------------------------------------------------- passive layers
def reshape_layer(layer: QLayerBase, inputs, out_shape) -> FixedVariableArray:
    return inputs[0].reshape(out_shape)


def permute_layer(layer: PPermute, inputs, out_shape) -> FixedVariableArray:
    return inputs[0].transpose(tuple(d - 1 for d in layer.dims))


def identity_layer(layer: QLayerBase, inputs, out_shape) -> FixedVariableArray:
    return inputs[0]


def concatenate_layer(layer: PConcatenate, inputs, out_shape) -> FixedVariableArray:
    axis = layer.axis if layer.axis < 0 else layer.axis - 1
    return _wrap(np.concatenate([x._vars for x in inputs], axis=axis), inputs[0])


def pool_layer(layer: _PPoolBase, inputs, out_shape) -> FixedVariableArray:
    """Max: the largest of each window's valid inputs. Average: their sum, shifted."""
    x = inputs[0]
    if isinstance(layer, _PGlobalPoolBase):
        window, strides, padding = x.shape[:-1], x.shape[:-1], "valid"
    else:
        window, strides, padding = tuple(layer.pool_size), tuple(layer.strides), layer.padding
    is_max = isinstance(layer, _PMaxPoolBase)
    positions, members = _windows(x, window, strides, padding)
    out = np.empty(positions + (x.shape[-1],), dtype=object)
    scale = 2.0 ** -(math.prod(window).bit_length() - 1)
    for index, row in members.items():
        valid = [m for m in row if m is not None]  # a max pool ignores padding
        for channel in range(x.shape[-1]):
            column = [m[channel] for m in valid]
            if is_max:
                out[index + (channel,)] = functools.reduce(lambda a, b: a.max_of(b), column)
            else:
                out[index + (channel,)] = functools.reduce(lambda a, b: a + b, column) * scale
    return _wrap(out, x).reshape(out_shape)


RULES: dict[type, Rule] = {
    HDense: kernel_layer,
    HConv1D: kernel_layer,
    HConv2D: kernel_layer,
    HEinsumDense: kernel_layer,
    HQuantize: quantize_layer,
    Signature: signature_layer,
    HActivation: activation_layer,
    HAdd: merge_layer,
    HSubtract: merge_layer,
    HMultiply: merge_layer,
    HEinsum: einsum_layer,
    HSoftmax: softmax_layer,
    HMultiHeadAttention: attention_layer,
    PReshape: reshape_layer,
    PFlatten: reshape_layer,
    PPermute: permute_layer,
    PDropout: identity_layer,
    PConcatenate: concatenate_layer,
    _PPoolBase: pool_layer,
}


def rule_for(layer: Any) -> Rule | None:
    """The rule of ``layer``'s class or of its nearest listed base (BatchNorm-fused
    layers are HDense/HConv children; every pool derives from ``_PPoolBase``)."""
    for cls in type(layer).__mro__:
        if cls in RULES:
            return RULES[cls]
    return None


def supported_layers() -> Sequence[str]:
    return sorted(cls.__name__ for cls in RULES if not cls.__name__.startswith("_"))


__all__ = ["RULES", "apply_table", "quantize_elements", "quantize_with", "rule_for"]
