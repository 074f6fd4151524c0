"""The vocabulary of deployed arithmetic: steps over named tensors.

A layer's deployment is a short list of these steps (``HGQ.deploy.descriptions``). Each
step reads the tensors named in ``inputs`` and writes the one named ``output``, whose
shape (without the batch axis) is ``shape``; names are unique within a model. The
emitters (``HGQ.hls4ml_hook``: hls4ml layer dictionaries; ``HGQ.rtl``: an alkaid
circuit) each implement every step kind once and know no layer class.

Every value is a fixed-point number. A step's result is exact (as wide as its
operands require) unless the step says otherwise: only ``Quantize`` and ``Table``
round, and only ``Quantize`` overflows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from HGQ.deploy.tables import TableSpec

#: A per-element fixed-point format: keep-negative, integer and fractional bit arrays.
KIF = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True, kw_only=True)
class Step:
    """One operation: ``output = op(*inputs)``, ``output`` of element shape ``shape``."""

    name: str
    inputs: tuple[str, ...]
    output: str
    shape: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class Dense(Step):
    """``x @ kernel + bias`` over the last axis, at every position of the others.
    ``parallel_factor`` is how many positions have their own kernel instance."""

    kernel: np.ndarray
    bias: np.ndarray | None
    parallel_factor: int


@dataclass(frozen=True, kw_only=True)
class Conv(Step):
    """A channels-last convolution (``kernel``: window axes, in, out), then ``bias``;
    ``padding`` is Keras's ``'valid'`` or ``'same'``."""

    kernel: np.ndarray
    bias: np.ndarray | None
    strides: tuple[int, ...]
    padding: str
    parallel_factor: int


@dataclass(frozen=True, kw_only=True)
class EinsumDense(Step):
    """``einsum(equation, x, kernel) + bias`` (``equation`` without the batch axis;
    ``bias`` broadcast to the output, or None)."""

    equation: str
    kernel: np.ndarray
    bias: np.ndarray | None
    parallel_factor: int


@dataclass(frozen=True, kw_only=True)
class Scale(Step):
    """``x * factors``, element by element (``factors``: constants of ``x``'s shape)."""

    factors: np.ndarray


@dataclass(frozen=True, kw_only=True)
class Einsum(Step):
    """``einsum(equation, a, b)`` of two tensors (``equation`` without the batch axis)."""

    equation: str


@dataclass(frozen=True, kw_only=True)
class Merge(Step):
    """``op`` (``'add'``, ``'subtract'``, ``'multiply'``) of tensors of equal shape,
    folded left to right (``'subtract'`` takes two)."""

    op: str


@dataclass(frozen=True, kw_only=True)
class Relu(Step):
    """``max(x, 0)``."""


@dataclass(frozen=True, kw_only=True)
class Quantize(Step):
    """Each element to its own format ``kif``: ``rounding`` ``'TRN'`` (floor) or
    ``'RND'`` (half up), ``overflow`` ``'WRAP'``, ``'SAT'`` or ``'SAT_SYM'``."""

    kif: KIF
    rounding: str
    overflow: str


@dataclass(frozen=True, kw_only=True)
class Table(Step):
    """``spec.quantizer(spec.function(x))`` per element, as a lookup table indexed by
    the input's bits (``HGQ.deploy.tables``). ``owner`` and ``stage`` name the table
    (``HGQ.deploy.tables.table_spec``); ``layout`` is the one input format an
    emitter that needs one lays it out for. Its result is in the quantizer's formats."""

    spec: TableSpec
    owner: Any
    stage: str | None
    layout: tuple[int, int, int]


@dataclass(frozen=True, kw_only=True)
class Pool(Step):
    """The maximum (``kind='max'``) or mean (``'average'``: the sum, shifted; the area is
    a power of two) of each window, channels last; a max ignores padded cells."""

    kind: str
    pool_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: str


@dataclass(frozen=True, kw_only=True)
class RowMax(Step):
    """The maximum along the last axis, kept as an axis of size 1."""


@dataclass(frozen=True, kw_only=True)
class RowSum(Step):
    """The sum along the last axis, kept as an axis of size 1."""


@dataclass(frozen=True, kw_only=True)
class Broadcast(Step):
    """A last axis of size 1 repeated to ``shape``."""


@dataclass(frozen=True, kw_only=True)
class Reshape(Step):
    """The same values in ``shape`` (row-major). ``kif``: their formats."""

    kif: KIF


@dataclass(frozen=True, kw_only=True)
class Transpose(Step):
    """The axes reordered by ``perm`` (over the element axes). ``kif``: the formats."""

    perm: tuple[int, ...]
    kif: KIF


@dataclass(frozen=True, kw_only=True)
class Concatenate(Step):
    """The inputs joined along ``axis`` (negative: counted from the last element axis)."""

    axis: int


@dataclass(frozen=True, kw_only=True)
class Identity(Step):
    """The input unchanged. ``kif``: its formats."""

    kif: KIF
