"""Element-wise functions at inference, with the values their deployed tables hold.

A non-linear function (an ``HActivation``'s, ``HSoftmax``'s exponential) is deployed
as a table: one float32 evaluation of the function per value its input can take,
computed once, outside any compiled program. Keras's own inference evaluates the same
function inside a compiled step, where XLA fuses it with its neighbours; a fused
``exp`` or division can differ from the standalone evaluation by an ulp (measured on
XLA:CPU: 452 of 16,384 ``exp(d - max(d))`` values; ``1/2`` gave 0.49999997 inside
HSoftmax's fused step). Rounding hides that almost always, but a floor quantizer turns
0.49999997 into a whole LSB less. So at inference HGQ layers read the function from a
table of those standalone values over the grid of the input's calibrated format;
inputs off that grid (formats changed since) fall back to the function itself.

Keras's JAX trainer traces ``predict`` with the model's variables taken out of them,
so a layer cannot read its input's formats while it is traced: it prepares its table
when they are known (``compute_bops``, and loading a calibrated model) and keeps it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from HGQ.fixed_point import union_format

#: Widest input a table may be indexed by (2^16 entries): the deployment limit too.
MAX_TABLE_INPUT_BITS = 16


def format_grid(k: int, i: int, f: int) -> np.ndarray:
    """Every value of format ``(k, i, f)`` (``i`` excluding the sign), ascending."""
    width = k + i + f
    if width <= 0:
        return np.zeros(1)
    low = -(2 ** (width - 1)) if k else 0
    return (low + np.arange(2**width, dtype=np.float64)) * 2.0**-f


@contextlib.contextmanager
def outside_traces() -> Iterator[None]:
    """Operations run eagerly, even while a compiled step is being traced (JAX's and
    TensorFlow's; PyTorch's steps are eager)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        with jax.ensure_compile_time_eval():
            yield
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.init_scope():
            yield
    else:
        yield


#: Evaluations run on flat arrays of a multiple of this length: XLA:CPU's vectorised
#: loops give the last elements of other lengths other values (measured: 11 of a few
#: thousand ``exp`` values differed between slices of one array).
_EVALUATION_BLOCK = 1024


def standalone_values(function: Callable[[Any], Any], values: np.ndarray) -> np.ndarray:
    """``function`` on the float32 ``values`` (any shape), evaluated eagerly as one
    operation on its own, on a flat array padded to a whole number of blocks: the same
    value for the same input wherever it sits. What a deployed table holds; float32."""
    flat = np.asarray(values, dtype=np.float32).ravel()
    padded = np.zeros(-(-max(flat.size, 1) // _EVALUATION_BLOCK) * _EVALUATION_BLOCK, np.float32)
    padded[: flat.size] = flat
    with outside_traces():
        result = ops.convert_to_numpy(function(ops.convert_to_tensor(padded)))
    return np.asarray(result, dtype=np.float32)[: flat.size].reshape(np.shape(values))


class FunctionTable(NamedTuple):
    """A function's standalone values on every value of a format ``kif``."""

    kif: tuple[int, int, int]
    values: np.ndarray

    @classmethod
    def of(cls, function: Callable[[Any], Any], kif: tuple[int, int, int]) -> FunctionTable:
        return cls(kif, standalone_values(function, format_grid(*kif)))


def input_table(
    layer: Any,
    function: Callable[[Any], Any],
    kif_of: Callable[[tuple[int, int, int]], tuple[int, int, int]] = lambda kif: kif,
) -> FunctionTable | None:
    """``function`` tabulated over ``kif_of`` (the union of ``layer``'s calibrated input
    formats), or None before those formats are known or beyond the table limit."""
    if layer._input_source_refs is None:
        return None
    try:
        kif = kif_of(union_format(layer.input_source().exact_output_format()))
    except RuntimeError:  # not calibrated
        return None
    return FunctionTable.of(function, kif) if sum(kif) <= MAX_TABLE_INPUT_BITS else None


def tabulated(x, function: Callable[[Any], Any], table: FunctionTable | None):
    """``function(x)``, read from ``table`` where ``x`` lies on its grid and computed
    directly elsewhere (everywhere when ``table`` is None)."""
    if table is None:
        return function(x)
    kif = table.kif
    grid = format_grid(*kif)
    values = ops.convert_to_tensor(table.values)
    code = (x - float(grid[0])) * float(2.0 ** kif[2])  # exact: a power-of-two scale
    on_grid = (code == ops.floor(code)) & (code >= 0) & (code <= len(grid) - 1)
    index = ops.cast(ops.clip(ops.where(on_grid, code, 0.0), 0, len(grid) - 1), "int32")
    return ops.where(on_grid, ops.take(values, index), function(x))


__all__ = [
    "MAX_TABLE_INPUT_BITS",
    "FunctionTable",
    "format_grid",
    "input_table",
    "outside_traces",
    "standalone_values",
    "tabulated",
]
