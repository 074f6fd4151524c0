"""Passive pooling layers: max and average pooling, 1D and 2D, channels_last.

Pooling multiplies nothing, but its adders (average) and comparisons (max) take LUTs:
they are priced by ``HGQ.logic_costs`` on the window's input bitwidths, and added to
the training loss with the β of the HGQ layer that feeds the pool. What pooling must
also get right is the bitwidth map it hands to the next layer, and (for the average)
that the Keras result is exactly what fixed-point hardware computes.

- Max pooling outputs one of the window's inputs, so its output bitwidth is the
  max of the window's input bitwidths (the EBOPs convention; the deployed type
  must hold the union of the window's formats, which can be wider when they are
  heterogeneous, e.g. ``(0, 4, 0)`` and ``(0, 0, 4)`` are 4 bits each, 8 together).
- Average pooling outputs ``sum / n``. In fixed point that is exact only if the
  division is a shift, so the pool area ``n`` must be a power of two. The sum of
  ``n`` values of width ``b`` needs ``b + log2(n)`` bits (``log2 n`` carry bits);
  the shift turns those carry bits into ``log2 n`` extra fractional bits without
  changing the width. So the output bitwidth is ``max(window bits) + log2(n)``,
  which covers both the accumulator's integer growth and the quotient's extra
  fractional bits (they are the same bits, relabelled by the shift).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from HGQ.layers.base import PLayerBase
from HGQ.logic_costs import COMPARISON_WEIGHT, reduction_cost

_PADDINGS = ("valid", "same")


def _tuple_of(value: int | Sequence[int], rank: int, what: str, layer: str) -> tuple[int, ...]:
    """``value`` as a tuple of ``rank`` positive ints (an int is repeated)."""
    if isinstance(value, (int, np.integer)):
        out = (int(value),) * rank
    else:
        out = tuple(int(v) for v in value)
    if len(out) != rank or any(v < 1 for v in out):
        raise ValueError(
            f"{layer}: {what} must be a positive int or a tuple of {rank} positive ints, "
            f"got {value!r}."
        )
    return out


def _resolve_data_format(data_format: str | None, layer: str) -> str:
    """Only channels_last is supported (it is what hls4ml's io_parallel layers use)."""
    resolved = keras.config.image_data_format() if data_format is None else data_format
    if resolved != "channels_last":
        source = "keras.config.image_data_format()" if data_format is None else "data_format"
        raise ValueError(
            f"{layer} supports only data_format='channels_last' ({source} is "
            f"{resolved!r}). Pass data_format='channels_last' and give the input as "
            "(batch, ..., channels), e.g. transposed once with PPermute."
        )
    return resolved


class _PPoolBase(PLayerBase):
    """Shared machinery of the four pooling layers (``rank`` spatial axes)."""

    rank: int = 0  # number of spatial axes; set by children
    kind: str = ""  # 'max' or 'average'

    def __init__(
        self,
        pool_size: int | Sequence[int] = 2,
        strides: int | Sequence[int] | None = None,
        padding: str = "valid",
        data_format: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        cls = type(self).__name__
        self.pool_size = _tuple_of(pool_size, self.rank, "pool_size", cls)
        self.strides = (
            self.pool_size if strides is None else _tuple_of(strides, self.rank, "strides", cls)
        )
        padding = str(padding).lower()
        if padding not in _PADDINGS:
            raise ValueError(f"{cls}: padding must be 'valid' or 'same', got {padding!r}.")
        self.padding = padding
        self.data_format = _resolve_data_format(data_format, cls)

    # ---------------------------------------------------------------- shapes
    def _check_input_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        shape = tuple(input_shape)
        if len(shape) != self.rank + 2:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects inputs of rank {self.rank + 2} "
                f"(batch, {'spatial, ' * self.rank}channels), got shape {shape}."
            )
        return shape

    def _output_spatial(self, spatial: Sequence[int | None]) -> tuple[int | None, ...]:
        out = []
        for size, pool, stride in zip(spatial, self.pool_size, self.strides, strict=True):
            if size is None:
                out.append(None)
            elif self.padding == "valid":
                out.append(max((size - pool) // stride + 1, 0))
            else:
                out.append(-(-size // stride))
        return tuple(out)

    def build(self, input_shape) -> None:
        shape = self._check_input_shape(input_shape)
        if any(d is None for d in shape[1:]):
            raise ValueError(
                f"{type(self).__name__} '{self.name}': input shape {shape} has unknown "
                "non-batch sizes; HGQ needs them to assign one bitwidth per element."
            )
        if any(d == 0 for d in self._output_spatial(shape[1:-1])):
            raise ValueError(
                f"{type(self).__name__} '{self.name}': pool_size {self.pool_size} is larger "
                f"than the input {shape[1:-1]} with padding='valid'."
            )
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        shape = self._check_input_shape(input_shape)
        return (shape[0], *self._output_spatial(shape[1:-1]), shape[-1])

    # ------------------------------------------------------------- bitwidths
    def _pool(self, x):
        """The pooling of this layer applied to a batch ``x`` (channels_last)."""
        pool = ops.max_pool if self.kind == "max" else ops.average_pool
        return pool(
            x,
            pool_size=self.pool_size,
            strides=self.strides,
            padding=self.padding,
            data_format="channels_last",
        )

    def call(self, inputs, training=None):
        if training:
            self.add_cost_to_loss()
        return self._pool(inputs)

    def _window_sums(self, bitwidth):
        """Per output element (no batch axis): the sum of the input widths in its
        window and the number of inputs that are not constant zero (0 bits)."""
        bw = ops.cast(ops.convert_to_tensor(bitwidth), keras.backend.floatx())
        ones = ops.ones((*self.pool_size, int(bw.shape[-1]), 1), dtype=bw.dtype)
        sums = [
            ops.depthwise_conv(
                ops.expand_dims(a, 0),
                ones,
                strides=self.strides,
                padding=self.padding,
                data_format="channels_last",
            )[0]
            for a in (bw, ops.cast(bw > 0, bw.dtype))
        ]
        return sums[0], sums[1]

    def logic_cost(self, bitwidth, xp):
        """EBOPs of the window sums (average) or comparisons (max) on ``bitwidth``."""
        total, operands = self._window_sums(bitwidth)
        if xp is np:  # the window sums are small integers: exact in float32
            total, operands = (
                np.asarray(ops.convert_to_numpy(a), np.float64) for a in (total, operands)
            )
        weight = COMPARISON_WEIGHT if self.kind == "max" else 1.0
        return weight * xp.sum(reduction_cost(total, operands, xp))

    def bops_surrogate(self):
        return self.logic_cost(self.input_bitwidth(), ops)

    def compute_exact_bops(self) -> float:
        return float(self.logic_cost(self.exact_input_bitwidth(), np))

    def exact_cost_parts(self) -> dict[str, float]:
        kind = "comparisons" if self.kind == "max" else "adders"
        return {kind: self.compute_exact_bops()}

    def _window_max(self, bitwidth):
        """Max of ``bitwidth`` (no batch axis) over every pooling window.

        'same' padding pads with -inf for the max, so padded positions never win.
        """
        bw = ops.cast(ops.convert_to_tensor(bitwidth), keras.backend.floatx())
        pooled = ops.max_pool(
            ops.expand_dims(bw, 0),
            pool_size=self.pool_size,
            strides=self.strides,
            padding=self.padding,
            data_format="channels_last",
        )
        return pooled[0]

    def exact_output_bitwidth(self) -> np.ndarray:
        bw = ops.convert_to_numpy(self.transform_bitwidth(self.exact_input_bitwidth()))
        return np.rint(np.asarray(bw, np.float64)).astype(np.int64)  # small ints: exact

    #: Fractional bits the pooling adds to every output (the average's shift).
    extra_fractional_bits: int = 0

    def exact_output_format(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per window, one format holding every input format: max of each of k, i, f."""
        k, i, f = (
            np.rint(ops.convert_to_numpy(self._window_max(a))).astype(np.int64)
            for a in self.input_source().exact_output_format()
        )
        return k, i, f + self.extra_fractional_bits

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            pool_size=list(self.pool_size),
            strides=list(self.strides),
            padding=self.padding,
            data_format=self.data_format,
        )
        return config


class _PMaxPoolBase(_PPoolBase):
    """Max pooling: the output is one of the window's inputs."""

    kind = "max"

    def transform_bitwidth(self, bitwidth):
        return self._window_max(bitwidth)


class _PAvgPoolBase(_PPoolBase):
    """Average pooling restricted to what is exact in fixed point.

    The pool area must be a power of two (the division is then a shift), and with
    ``padding='same'`` the input must need no padding: Keras divides border windows
    by their count of valid elements, which is generally not a power of two.
    """

    kind = "average"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        area = math.prod(self.pool_size)
        if area & (area - 1):
            raise ValueError(
                f"{type(self).__name__}: pool_size {self.pool_size} averages {area} values; "
                "dividing by a number that is not a power of two is not exact in fixed "
                "point. Use a pool whose area is a power of two (e.g. 2, 4, (2, 2), "
                "(2, 4)) or PMaxPool instead."
            )
        #: log2 of the pool area: the extra bits of the sum, fractional after the shift.
        self.extra_bits = int(area).bit_length() - 1
        self.extra_fractional_bits = self.extra_bits

    def build(self, input_shape) -> None:
        super().build(input_shape)
        if self.padding == "same":
            spatial = tuple(input_shape)[1:-1]
            for size, pool, stride in zip(spatial, self.pool_size, self.strides, strict=True):
                out = -(-size // stride)
                if (out - 1) * stride + pool > size:
                    raise ValueError(
                        f"{type(self).__name__} '{self.name}': padding='same' on input "
                        f"{spatial} with pool_size {self.pool_size} and strides "
                        f"{self.strides} pads the borders, where Keras averages over fewer "
                        "(not a power of two) elements, which is not exact in fixed point. "
                        "Use padding='valid', or sizes where 'same' needs no padding "
                        "(e.g. strides == pool_size dividing the input sizes), or PMaxPool."
                    )

    def transform_bitwidth(self, bitwidth):
        return self._window_max(bitwidth) + float(self.extra_bits)

    def transform_varies(self, varies):
        return self.transform_bitwidth(varies) - float(self.extra_bits)


@keras.saving.register_keras_serializable(package="HGQ")
class PMaxPool1D(_PMaxPoolBase):
    """``keras.layers.MaxPooling1D`` (channels_last); output bits: max over the window."""

    rank = 1


@keras.saving.register_keras_serializable(package="HGQ")
class PMaxPool2D(_PMaxPoolBase):
    """``keras.layers.MaxPooling2D`` (channels_last); output bits: max over the window."""

    rank = 2


@keras.saving.register_keras_serializable(package="HGQ")
class PAvgPool1D(_PAvgPoolBase):
    """``keras.layers.AveragePooling1D`` with a power-of-two pool, exact in fixed point.

    Output bits: max over the window plus ``log2(pool_size)``.
    """

    rank = 1


@keras.saving.register_keras_serializable(package="HGQ")
class PAvgPool2D(_PAvgPoolBase):
    """``keras.layers.AveragePooling2D`` with a power-of-two pool area, exact in fixed point.

    Output bits: max over the window plus ``log2(pool_height * pool_width)``.
    """

    rank = 2


# Keras-style names.
PMaxPooling1D = PMaxPool1D
PMaxPooling2D = PMaxPool2D
PAveragePooling1D = PAvgPool1D
PAveragePooling2D = PAvgPool2D

__all__ = [
    "PAveragePooling1D",
    "PAveragePooling2D",
    "PAvgPool1D",
    "PAvgPool2D",
    "PMaxPool1D",
    "PMaxPool2D",
    "PMaxPooling1D",
    "PMaxPooling2D",
]


class _PGlobalPoolBase(_PPoolBase):
    """A pool whose window is the whole spatial extent (``keras.layers.Global*Pooling``).

    The window is known at build; until then ``pool_size`` is a placeholder. With
    ``keepdims=False`` (Keras's default) the spatial axes are dropped.
    """

    def __init__(self, data_format: str | None = None, keepdims: bool = False, **kwargs):
        super().__init__(pool_size=1, data_format=data_format, **kwargs)
        self.keepdims = bool(keepdims)

    def build(self, input_shape) -> None:
        spatial = tuple(self._check_input_shape(input_shape))[1:-1]
        if all(d is not None for d in spatial):
            self.pool_size = self.strides = tuple(int(d) for d in spatial)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        shape = self._check_input_shape(input_shape)
        if self.keepdims:
            return (shape[0], *(1,) * self.rank, shape[-1])
        return (shape[0], shape[-1])

    def _drop_spatial(self, x, batch: bool):
        if self.keepdims:
            return x
        return ops.reshape(x, (-1, x.shape[-1]) if batch else (x.shape[-1],))

    def call(self, inputs, training=None):
        if training:
            self.add_cost_to_loss()
        return self._drop_spatial(self._pool(inputs), batch=True)

    def transform_bitwidth(self, bitwidth):
        return self._drop_spatial(super().transform_bitwidth(bitwidth), batch=False)

    def exact_output_format(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(
            a if self.keepdims else a.reshape(a.shape[-1]) for a in super().exact_output_format()
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        for key in ("pool_size", "strides", "padding"):
            config.pop(key)
        config["keepdims"] = self.keepdims
        return config


class _PGlobalMaxPoolBase(_PGlobalPoolBase, _PMaxPoolBase):
    """Global max pooling: the output is one of the inputs of its channel."""


class _PGlobalAvgPoolBase(_PGlobalPoolBase, _PAvgPoolBase):
    """Global average pooling: exact when the spatial size is a power of two."""

    def build(self, input_shape) -> None:
        spatial = tuple(self._check_input_shape(input_shape))[1:-1]
        area = math.prod(int(d) for d in spatial if d is not None)
        if area & (area - 1):
            raise ValueError(
                f"{type(self).__name__} '{self.name}': averages {area} values per channel "
                f"(input {spatial}); dividing by a number that is not a power of two is not "
                "exact in fixed point. Pad or crop the positions to a power of two (e.g. 16 "
                "particles), or use the global max pool."
            )
        self.extra_bits = self.extra_fractional_bits = int(area).bit_length() - 1
        super().build(input_shape)


@keras.saving.register_keras_serializable(package="HGQ")
class PGlobalMaxPool1D(_PGlobalMaxPoolBase):
    """``keras.layers.GlobalMaxPooling1D`` (channels_last): max over the steps (particles)."""

    rank = 1


@keras.saving.register_keras_serializable(package="HGQ")
class PGlobalMaxPool2D(_PGlobalMaxPoolBase):
    """``keras.layers.GlobalMaxPooling2D`` (channels_last): max over height and width."""

    rank = 2


@keras.saving.register_keras_serializable(package="HGQ")
class PGlobalAvgPool1D(_PGlobalAvgPoolBase):
    """``keras.layers.GlobalAveragePooling1D`` over a power-of-two number of steps.

    Output bits: max over the steps plus ``log2(steps)`` (the division is a shift).
    """

    rank = 1


@keras.saving.register_keras_serializable(package="HGQ")
class PGlobalAvgPool2D(_PGlobalAvgPoolBase):
    """``keras.layers.GlobalAveragePooling2D`` over a power-of-two area."""

    rank = 2


PGlobalMaxPooling1D = PGlobalMaxPool1D
PGlobalMaxPooling2D = PGlobalMaxPool2D
PGlobalAveragePooling1D = PGlobalAvgPool1D
PGlobalAveragePooling2D = PGlobalAvgPool2D

__all__ += [
    "PGlobalAvgPool1D",
    "PGlobalAvgPool2D",
    "PGlobalAveragePooling1D",
    "PGlobalAveragePooling2D",
    "PGlobalMaxPool1D",
    "PGlobalMaxPool2D",
    "PGlobalMaxPooling1D",
    "PGlobalMaxPooling2D",
]
