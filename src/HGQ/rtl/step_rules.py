"""The RTL emitter: HGQ's deployment steps on alkaid's symbolic fixed-point arrays.

Each rule takes one step (``HGQ.deploy.steps``) and its inputs (``FixedVariableArray``
without batch axis, one per input tensor) and returns the step's output, to the bit:
alkaid keeps every intermediate exact (interval arithmetic), so the only rounding is
where a ``Quantize`` or ``Table`` step rounds. Nothing here knows a layer class.

Tables are not recomputed here: the layer's own function and quantizer are run in
Keras on every value the input can take, so a table holds exactly what the Keras
model returns.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from alkaid.trace import FVariable as FixedVariable
from alkaid.trace import FVArray as FixedVariableArray

from HGQ.deploy import steps as s
from HGQ.deploy.tables import TableSpec, evaluate
from HGQ.tabulated import MAX_TABLE_INPUT_BITS
from HGQ.windows import conv_output_length, same_padding

Rule = Callable[[Any, list[FixedVariableArray]], FixedVariableArray]


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
    value), which is plain saturation; alkaid's symmetric mode would give 0 there.
    """
    k, i, f = (np.broadcast_to(np.asarray(a, np.int64), x.shape) for a in kif)
    raw = np.asarray(x)
    out = np.empty(x.shape, dtype=object)
    for index in np.ndindex(x.shape):
        kk, ii, ff = int(k[index]), int(i[index]), int(f[index])
        mode = "SAT" if overflow == "SAT_SYM" and kk == 1 and kk + ii + ff == 1 else overflow
        out[index] = raw[index].quantize(kk, ii, ff, mode, rounding)
    return _wrap(out, x)


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
    flat = list(np.asarray(x).ravel())
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
    # A one-entry table (a constant input) gives alkaid's constant.
    pairs = enumerate(zip(flat, grids, strict=True))
    looked_up = [v.lookup(outputs[: len(g), n]) for n, (v, g) in pairs]
    return _wrap(np.array(looked_up, dtype=object).reshape(x.shape), x)


# ------------------------------------------------------------------- step rules
def _explicit_ellipsis(equation: str, data_rank: int) -> str:
    """``equation`` with ``...`` spelled out in letters it does not use."""
    data, rest = equation.split(",", 1)
    if "..." not in data:
        return equation
    free = [c for c in "abcdefghijklmnopqrstuvwxyz" if c not in equation]
    letters = "".join(free[: data_rank - (len(data) - 3)])
    return equation.replace("...", letters)


def _windows(
    x: FixedVariableArray, window: tuple[int, ...], strides: tuple[int, ...], padding: str
) -> tuple[tuple[int, ...], dict[tuple[int, ...], list[np.ndarray | None]]]:
    """The output positions' shape, and each position's window: the channel vectors
    of its inputs in window order, None where ``padding='same'`` pads (as Keras pads:
    the extra element after)."""
    spatial = x.shape[:-1]
    raw = np.asarray(x)
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
            row.append(raw[source] if inside else None)
        members[out_index] = row
    return out_shape, members


def _quantize(step: s.Quantize, inputs) -> FixedVariableArray:
    return quantize_elements(inputs[0], step.kif, step.overflow, step.rounding)


def _with_bias(y: FixedVariableArray, bias: np.ndarray | None) -> FixedVariableArray:
    return y if bias is None else y + bias


def _matmul(x: FixedVariableArray, kernel: np.ndarray) -> FixedVariableArray:
    """``x @ kernel`` row by row, with constant inputs and inputs whose kernel row is 0
    folded on the host: alkaid 0.8.2's constant-matrix solver fails on a row in which
    no input both varies and has a non-zero weight."""
    raw = np.asarray(x)
    rows = raw.reshape(-1, raw.shape[-1])
    out = np.empty((rows.shape[0], kernel.shape[-1]), dtype=object)
    used = np.any(kernel != 0, axis=1)
    for r, row in enumerate(rows):
        constant = np.array([float(v.low) == float(v.high) for v in row])
        base = np.zeros(kernel.shape[-1])
        for j in np.flatnonzero(constant & used):
            base = base + float(row[j].low) * kernel[j]
        live = np.flatnonzero(~constant & used)
        if live.size == 0:
            out[r] = base
            continue
        out[r] = np.asarray(_wrap(row[live], x) @ kernel[live] + base)
    return _wrap(out.reshape(raw.shape[:-1] + (kernel.shape[-1],)), x)


def _dense(step: s.Dense, inputs) -> FixedVariableArray:
    return _with_bias(_matmul(inputs[0], step.kernel), step.bias)


def _conv(step: s.Conv, inputs) -> FixedVariableArray:
    """A channels-last convolution as one constant matrix product per output position."""
    x, kernel = inputs[0], step.kernel
    window = tuple(kernel.shape[:-2])
    out_shape, members = _windows(x, window, step.strides, step.padding)
    zeros = np.zeros(x.shape[-1], dtype=object)
    patches = np.empty(out_shape + (math.prod(window) * x.shape[-1],), dtype=object)
    for index in np.ndindex(out_shape):
        patches[index] = np.concatenate([zeros if m is None else m for m in members[index]])
    y = _matmul(_wrap(patches, x), kernel.reshape(-1, kernel.shape[-1]))
    return _with_bias(y, step.bias)


def _einsum_dense(step: s.EinsumDense, inputs) -> FixedVariableArray:
    x = inputs[0]
    return _with_bias(
        np.einsum(_explicit_ellipsis(step.equation, x.ndim), x, step.kernel), step.bias
    )


def _scale(step: s.Scale, inputs) -> FixedVariableArray:
    return inputs[0] * np.asarray(step.factors, np.float64)


def _einsum(step: s.Einsum, inputs) -> FixedVariableArray:
    return np.einsum(step.equation, inputs[0], inputs[1])


MERGES = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
}


def _merge(step: s.Merge, inputs) -> FixedVariableArray:
    return functools.reduce(MERGES[step.op], inputs)


def _relu(step: s.Relu, inputs) -> FixedVariableArray:
    return inputs[0].relu()


def _table(step: s.Table, inputs) -> FixedVariableArray:
    return apply_table(inputs[0], step.spec)


def _pool(step: s.Pool, inputs) -> FixedVariableArray:
    """Max: the largest of each window's valid inputs. Average: their sum, shifted."""
    x = inputs[0]
    positions, members = _windows(x, step.pool_size, step.strides, step.padding)
    out = np.empty(positions + (x.shape[-1],), dtype=object)
    scale = 2.0 ** -(math.prod(step.pool_size).bit_length() - 1)
    for index, row in members.items():
        valid = [m for m in row if m is not None]  # a max pool ignores padding
        for channel in range(x.shape[-1]):
            column = [m[channel] for m in valid]
            if step.kind == "max":
                out[index + (channel,)] = functools.reduce(lambda a, b: a.max_of(b), column)
            else:
                out[index + (channel,)] = functools.reduce(lambda a, b: a + b, column) * scale
    return _wrap(out, x).reshape(step.shape)


def _row_max(step: s.RowMax, inputs) -> FixedVariableArray:
    return np.max(inputs[0], axis=-1, keepdims=True)


def _row_sum(step: s.RowSum, inputs) -> FixedVariableArray:
    return np.sum(inputs[0], axis=-1, keepdims=True)


def _broadcast(step: s.Broadcast, inputs) -> FixedVariableArray:
    x = inputs[0]
    return _wrap(np.broadcast_to(np.asarray(x), step.shape).copy(), x)


def _reshape(step: s.Reshape, inputs) -> FixedVariableArray:
    return inputs[0].reshape(step.shape)


def _transpose(step: s.Transpose, inputs) -> FixedVariableArray:
    return inputs[0].transpose(step.perm)


def _identity(step: s.Identity, inputs) -> FixedVariableArray:
    return inputs[0]


def _concatenate(step: s.Concatenate, inputs) -> FixedVariableArray:
    return _wrap(np.concatenate([np.asarray(x) for x in inputs], axis=step.axis), inputs[0])


#: One rule per step kind: ``(step, inputs) -> output``.
RULES: dict[type, Rule] = {
    s.Quantize: _quantize,
    s.Dense: _dense,
    s.Conv: _conv,
    s.EinsumDense: _einsum_dense,
    s.Scale: _scale,
    s.Einsum: _einsum,
    s.Merge: _merge,
    s.Relu: _relu,
    s.Table: _table,
    s.Pool: _pool,
    s.RowMax: _row_max,
    s.RowSum: _row_sum,
    s.Broadcast: _broadcast,
    s.Reshape: _reshape,
    s.Transpose: _transpose,
    s.Identity: _identity,
    s.Concatenate: _concatenate,
}


def run_steps(steps: list[s.Step], values: dict[str, FixedVariableArray]) -> None:
    """Apply ``steps`` in turn, reading and writing ``values`` by tensor name."""
    for step in steps:
        values[step.output] = RULES[type(step)](step, [values[x] for x in step.inputs])


__all__ = ["RULES", "apply_table", "quantize_elements", "run_steps"]
