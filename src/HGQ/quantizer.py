"""The heterogeneous quantizer: trainable fractional bits per element or per group.

One ``HGQuantizer`` owns the fractional-bit tensor ``f`` of one quantized tensor, and
for activations also the running min/max record and the integer bits frozen by
calibration. It is a Keras layer so its state is tracked, saved and loaded with the
layer that owns it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from HGQ.config import merged_config
from HGQ.fixed_point import (
    LN2,
    bit_span,
    exact_int_bits,
    integer_bit_span,
    pow2,
    round_half_up,
    round_to_grid_host,
    saturate,
    surrogate_int_bits,
    wrap,
)
from HGQ.full_precision import float32_dtype_policy, full_precision

_calibration_depth = 0


@contextlib.contextmanager
def calibrating() -> Iterator[None]:
    """Inside this block, inference-mode calls record min/max and do not wrap.

    Read at trace time: whoever traces a function inside it (``compute_bops``)
    must drop that function afterwards.
    """
    global _calibration_depth
    _calibration_depth += 1
    try:
        yield
    finally:
        _calibration_depth -= 1


def is_calibrating() -> bool:
    return _calibration_depth > 0


def _over_replicas(batch_extreme: Any, reduce: Callable[..., Any]) -> Any:
    """``batch_extreme`` (a ``(1, ...)`` min or max of one replica's batch) over all replicas.

    Under ``tf.distribute`` (e.g. ``MirroredStrategy``) each replica runs the step on
    its own slice of the batch and a record variable, created with the default
    aggregation ``'none'``, silently keeps a different value per replica; reading it
    (EBOPs, calibration, conversion) gives the first replica's, a range that misses
    the data the others saw (measured: 160 EBOPs instead of 361 on a small MLP). The
    replicas' extremes are gathered and reduced with ``reduce`` (``ops.min`` or
    ``ops.max``; ``tf.distribute`` has no MIN/MAX all-reduce) so every replica
    records the range of the whole batch, as one device would. JAX's
    ``keras.distribution`` needs nothing: its step is one program over the global
    batch, so the reduction over the batch axis is already global.
    """
    if keras.backend.backend() != "tensorflow":
        return batch_extreme
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return batch_extreme  # cross-replica context or no strategy: one device's batch
    return reduce(context.all_gather(batch_extreme, axis=0), axis=0, keepdims=True)


def _round_to_grid(x, f, strategy: str, exact: bool, noise=None):
    """Round ``x`` onto the grid ``2^-f`` with ``strategy``.

    ``exact`` uses the tie-exact round-half-up of inference; training may use the
    cheaper ``floor(x + 0.5)``, whose rare float32 error near ties does not matter
    for gradients but would for bit-exactness.
    """
    scale = pow2(f)
    xs = x * scale
    if strategy == "floor":
        qi = ops.floor(xs)
    elif strategy == "standard_round":
        qi = round_half_up(xs) if exact else ops.floor(xs + 0.5)
    elif strategy == "stochastic_round":
        qi = ops.floor(xs + noise)
    else:  # fast_uniform_noise_injection
        qi = ops.where(ops.abs(xs) <= 0.5, ops.zeros_like(xs), xs + noise)
    return qi / scale  # exact: scale is a power of two


# Below this many summed rows a plain reduction is as fast, and it fuses into the
# kernel that computes ``values``, one compiled kernel fewer (measured on XLA:CPU:
# equal speed at 1024 and 4096 rows, the product 10-15% faster at 16384).
_MIN_ROWS_FOR_MATMUL_SUM = 8192


def _sum_to_shape(values, axes: tuple[int, ...], shape: tuple[int, ...]):
    """``sum(values, axes, keepdims=True)``, as a product with a row of ones for long sums.

    XLA:CPU sums over the leading (batch) axis of a row-major tensor one strided column
    at a time; for large batches the same sum as a matrix product is faster, and it is
    the reduction in every step of training (the bitwidth gradient of each activation).
    """
    static = all(dim is not None for dim in values.shape)
    leading_and_static = static and axes == tuple(range(len(axes)))
    rows = (
        int(np.prod([values.shape[a] for a in axes], dtype=np.int64)) if leading_and_static else 0
    )
    if rows < _MIN_ROWS_FOR_MATMUL_SUM:
        return ops.sum(values, axis=axes, keepdims=True)
    columns = int(np.prod(values.shape[len(axes) :], dtype=np.int64))
    ones = ops.ones((1, rows), dtype=values.dtype)
    with full_precision():
        summed = ops.matmul(ones, ops.reshape(values, (rows, columns)))
    return ops.reshape(summed, shape)


def resolve_skip_dims(skip_dims: Any, rank: int, is_activation: bool) -> tuple[int, ...]:
    """The axes along which one bitwidth is shared, as non-negative ints."""
    if skip_dims is None or skip_dims == "none":
        axes: tuple[int, ...] = ()
    elif skip_dims == "all":
        axes = tuple(range(rank))
    elif skip_dims == "batch":
        axes = (0,)
    elif skip_dims == "except_last":
        axes = tuple(range(rank - 1))
    elif skip_dims == "except_1st":
        axes = tuple(a for a in range(rank) if a != 1)
    else:
        axes = tuple(int(a) for a in skip_dims)
    normalised = []
    for axis in axes:
        if not -rank <= axis < rank:
            raise ValueError(f"skip_dims axis {axis} is out of range for a tensor of rank {rank}.")
        normalised.append(axis % rank)
    if is_activation:
        normalised.append(0)  # activations never get a bitwidth per sample
    return tuple(sorted(set(normalised)))


@keras.saving.register_keras_serializable(package="HGQ")
class BitwidthClip(keras.constraints.Constraint):
    """Keeps the fractional bits inside ``bw_clip`` after every optimizer update."""

    def __init__(self, low: float, high: float):
        self.low = float(low)
        self.high = float(high)

    def __call__(self, w):
        return ops.clip(w, self.low, self.high)

    def get_config(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high}


def serialize_quantizer_config(config: dict[str, Any]) -> dict[str, Any]:
    out = dict(config)
    if isinstance(out.get("skip_dims"), (tuple, list)):
        out["skip_dims"] = list(out["skip_dims"])
    if out.get("bw_clip") is not None:
        out["bw_clip"] = list(out["bw_clip"])
    if out.get("regularizer") is not None:
        out["regularizer"] = keras.regularizers.serialize(out["regularizer"])
    return out


def deserialize_quantizer_config(config: dict[str, Any] | None) -> dict[str, Any] | None:
    if config is None:
        return None
    out = dict(config)
    if isinstance(out.get("skip_dims"), list):
        out["skip_dims"] = tuple(out["skip_dims"])
    if isinstance(out.get("bw_clip"), list):
        out["bw_clip"] = tuple(out["bw_clip"])
    if isinstance(out.get("regularizer"), dict):
        out["regularizer"] = keras.regularizers.deserialize(out["regularizer"])
    return out


class HGQuantizer(keras.layers.Layer):
    """Quantizes a tensor to per-group trainable fixed-point formats.

    ``role='kernel'``: a weight tensor (no batch axis); integer bits follow the
    values, so there is no record. ``role='activation'``: a batch of activations;
    the batch axis always shares one bitwidth, min/max are recorded per element and
    calibration freezes the integer bits, after which inference wraps on overflow
    exactly as the deployed ``ap_fixed`` does.
    """

    def __init__(self, config: dict[str, Any], role: str, non_negative: bool = False, **kwargs):
        """Computes in float32 under any global dtype policy (``float32_dtype_policy``)."""
        kwargs["dtype"] = float32_dtype_policy("HGQuantizer", kwargs.get("dtype"))
        super().__init__(**kwargs)
        if role not in ("kernel", "activation"):
            raise ValueError(f"role must be 'kernel' or 'activation', got {role!r}")
        kind = "kernel" if role == "kernel" else "pre_activation"
        self.config = merged_config(kind, config)
        float32_dtype_policy(f"{self.name}: quantizer config", self.config["dtype"])
        if self.config["rnd_strategy"] == "auto":
            raise ValueError("rnd_strategy='auto' must be resolved by the owning layer")
        self.role = role
        self.is_activation = role == "activation"
        # Set by layers whose output cannot be negative (ReLU, sigmoid): the record
        # then keeps 0 as the minimum for good, a bound that gives the same (k, i) as
        # the true minimum, and training neither reduces nor updates the minimum.
        self.non_negative = bool(non_negative)

    # ----------------------------------------------------------------- state
    def build(self, shape: Sequence[int | None]) -> None:
        shape = tuple(shape)
        rank = len(shape)
        self.shared_axes = resolve_skip_dims(self.config["skip_dims"], rank, self.is_activation)
        for axis, dim in enumerate(shape):
            if dim is None and axis not in self.shared_axes:
                raise ValueError(
                    f"Axis {axis} of shape {shape} has unknown size and cannot have its "
                    "own bitwidths; add it to skip_dims."
                )
        group_shape = tuple(1 if a in self.shared_axes else shape[a] for a in range(rank))
        self.element_shape = shape[1:] if self.is_activation else shape
        per_element_axes = range(1, rank) if self.is_activation else range(rank)
        self.group_size = int(
            np.prod([shape[a] for a in per_element_axes if a in self.shared_axes], dtype=np.int64)
        )
        low, high = self.config["bw_clip"]
        self.fractional_bits = self.add_weight(
            name="fractional_bits",
            shape=group_shape,
            initializer=keras.initializers.Constant(float(self.config["init_bw"])),
            regularizer=self.config["regularizer"],
            constraint=BitwidthClip(low, high),
            trainable=bool(self.config["trainable"]),
        )
        if self.is_activation:
            elem = (1,) + tuple(self.element_shape)
            self.vmin = self.add_weight(
                name="min_record",
                shape=elem,
                initializer=keras.initializers.Constant(self._empty_min_record()),
                trainable=False,
            )
            self.vmax = self.add_weight(
                name="max_record",
                shape=elem,
                initializer=keras.initializers.Constant(-np.inf),
                trainable=False,
            )
            self.keep_negative = self.add_weight(
                name="keep_negative", shape=elem, initializer="zeros", trainable=False
            )
            self.int_bits = self.add_weight(
                name="int_bits", shape=elem, initializer="zeros", trainable=False
            )
            self.calibrated = self.add_weight(
                name="calibrated", shape=(), initializer="zeros", trainable=False
            )
        if self.config["rnd_strategy"] in ("stochastic_round", "fast_uniform_noise_injection"):
            self.seed_generator = keras.random.SeedGenerator()
        super().build(shape)

    def start_from_magnitudes(self, values) -> None:
        """``init_mode='magnitude'``: give each weight ``init_bw`` bits below its leading bit.

        ``f = init_bw - floor(log2|w|) - 1``, so a weight of 0.01 is not rounded to 0
        (and cut off from training) before it has had a chance to grow; weights sharing
        a bitwidth take the coarsest of their values (the largest weight gets
        ``init_bw`` bits). Zero weights keep ``init_bw``. Kept inside ``bw_clip``.
        """
        magnitude = ops.abs(ops.convert_to_tensor(values))
        leading = ops.floor(ops.log2(ops.maximum(magnitude, 1e-30)))
        init_bw = float(self.config["init_bw"])
        f = ops.where(magnitude > 0, init_bw - leading - 1.0, init_bw)
        if self.shared_axes:
            f = ops.min(f, axis=self.shared_axes, keepdims=True)
        low, high = self.config["bw_clip"]
        self.fractional_bits.assign(ops.clip(f, low, high))

    def _empty_min_record(self) -> float:
        """The minimum recorded before any value: +inf, or 0 for a non-negative output."""
        return 0.0 if self.non_negative else np.inf

    def reset_minmax(self) -> None:
        """Forget the recorded range (the frozen integer bits stay until recalibrated)."""
        if self.is_activation:
            # numpy values: an eager ops.full would compile a kernel per shape.
            self.vmin.assign(np.full(self.vmin.shape, self._empty_min_record(), np.float32))
            self.vmax.assign(np.full(self.vmax.shape, -np.inf, np.float32))

    # --------------------------------------------------------------- forward
    def effective_fractional_bits(self, training: bool):
        """``round(f)`` where the config or inference asks for it, gradient straight through."""
        f = ops.convert_to_tensor(self.fractional_bits)
        if training and not self.config["exact_q_value"]:
            return f
        return f + ops.stop_gradient(ops.round(f) - f)

    def call(self, x, training=None):
        training = bool(training)
        if training:
            q = self._quantize_for_training(x)
        else:
            strategy = "floor" if self.config["rnd_strategy"] == "floor" else "standard_round"
            f = ops.round(ops.convert_to_tensor(self.fractional_bits))
            q = _round_to_grid(x, f, strategy, exact=True)
        if self.is_activation:
            if training or is_calibrating():
                self._update_record(q, training)
            else:
                q = ops.where(self.calibrated > 0, self._overflow(q, f), q)
            if training:
                self.calibrated.assign(ops.zeros(()))
        return q

    def _overflow(self, q, f):
        """What the deployed format does to ``q`` (on its grid): wrap or saturate."""
        mode = self.config["overflow_mode"]
        if mode == "WRAP":
            return wrap(q, self.keep_negative, self.int_bits)
        return saturate(q, self.keep_negative, self.int_bits, f, symmetric=mode == "SAT_SYM")

    def quantize_host(self, x: np.ndarray) -> np.ndarray:
        """Inference quantization of a weight tensor in numpy (same bits as ``call``)."""
        if self.is_activation:
            raise TypeError("quantize_host is for kernels; activations also wrap.")
        floor = self.config["rnd_strategy"] == "floor"
        f = np.round(np.asarray(self.fractional_bits.numpy(), dtype=np.float32))
        return round_to_grid_host(x, f, floor)

    def _quantize_for_training(self, x):
        """Quantize with the training strategy; d/dx = 1, d/df = -ln2 * (q - x)."""
        strategy = self.config["rnd_strategy"]
        round_f = bool(self.config["exact_q_value"])
        # A tensor, not the variable: tf.custom_gradient treats variable arguments
        # specially (it would want their gradients through a `variables` keyword).
        f_raw = ops.add(self.fractional_bits, 0.0)
        if strategy in ("stochastic_round", "fast_uniform_noise_injection"):
            low = 0.0 if strategy == "stochastic_round" else -0.5
            noise = keras.random.uniform(
                ops.shape(x),
                minval=low,
                maxval=low + 1.0,
                seed=self.seed_generator,
                dtype=x.dtype,
            )
        else:
            noise = ops.zeros((), dtype=x.dtype)
        f_shape = tuple(self.fractional_bits.shape)
        x_shape = tuple(x.shape)
        shared = tuple(a for a in range(len(f_shape)) if f_shape[a] == 1 and x_shape[a] != 1)

        def forward(x, f_raw, noise):
            f = ops.round(f_raw) if round_f else f_raw
            return _round_to_grid(x, f, strategy, exact=False, noise=noise)

        if keras.backend.backend() == "torch":  # no ops.custom_gradient there
            q = forward(x, ops.stop_gradient(f_raw), noise)
            error = ops.stop_gradient(q - x)
            return (
                ops.stop_gradient(q)
                + (x - ops.stop_gradient(x))
                - LN2 * error * (f_raw - ops.stop_gradient(f_raw))
            )

        @ops.custom_gradient
        def quantize(x, f_raw, noise):
            q = forward(x, f_raw, noise)

            def grad(*args, upstream=None):
                if upstream is None:
                    (upstream,) = args
                grad_f = -LN2 * (q - x) * upstream
                if shared:
                    grad_f = _sum_to_shape(grad_f, shared, f_shape)
                return upstream, grad_f, ops.zeros_like(noise)

            return q, grad

        return quantize(x, f_raw, noise)

    def _update_record(self, q, training: bool) -> None:
        q = ops.stop_gradient(q)
        batch_max = _over_replicas(ops.max(q, axis=0, keepdims=True), ops.max)
        # No running record: the surrogate follows the current batch alone.
        running = not training or self.config["minmax_record"]
        self.vmax.assign(ops.maximum(self.vmax, batch_max) if running else batch_max)
        if self.non_negative:
            return  # the minimum stays 0
        batch_min = _over_replicas(ops.min(q, axis=0, keepdims=True), ops.min)
        self.vmin.assign(ops.minimum(self.vmin, batch_min) if running else batch_min)

    # ------------------------------------------------------------- bitwidths
    def _scaled_gradient(self, f):
        """Value ``f``; its EBOPs gradient divided by sqrt(elements sharing it)."""
        if self.group_size <= 1:
            return f
        factor = 1.0 / math.sqrt(self.group_size)
        return f * factor + ops.stop_gradient(f * (1.0 - factor))

    def surrogate_bitwidth(self, values=None):
        """Bitwidth per element for the training-time EBOPs: exact value, gradient in ``f``.

        The value is what ``compute_bops`` will count for the same state, so the
        penalty has no free zone: for activations ``max(k + i + round(f), 0)`` with
        ``k, i`` from the min/max record; for kernels the bit span of each weight of
        ``values`` as deployed (``round(f)``, inference rounding), 0 for a weight that
        quantizes to 0. The gradient is 1 per fractional bit (scaled for shared
        bitwidths) wherever the width is positive; none flows through ``k``, ``i`` or
        the span.
        """
        f = self._scaled_gradient(ops.convert_to_tensor(self.fractional_bits))
        f_rounded = ops.stop_gradient(ops.round(f))
        slope = f - ops.stop_gradient(f)  # value 0, gradient that of f
        if self.is_activation:
            k, i = surrogate_int_bits(
                ops.convert_to_tensor(self.vmin), ops.convert_to_tensor(self.vmax), f_rounded
            )
            width = ops.stop_gradient(k + i) + f_rounded
            bw = ops.where(width > 0, width + slope, ops.zeros_like(width))
            return ops.broadcast_to(bw, (1,) + tuple(self.element_shape))[0]
        return self._value_span(values, f_rounded, slope)

    def _value_span(self, values, f_rounded, slope):
        scaled = ops.stop_gradient(values) * pow2(f_rounded)
        floor = self.config["rnd_strategy"] == "floor"
        mantissa = ops.abs(ops.floor(scaled) if floor else round_half_up(scaled))
        span = integer_bit_span(mantissa)
        return ops.where(span > 0, span + slope, ops.zeros_like(span))

    def surrogate_constant_bitwidth(self):
        """For an activation quantizer: the bit span of the recorded maximum on this
        grid, as ``surrogate_bitwidth`` gives a weight's: the width of the deployed
        value where the element is a constant (its minimum equals its maximum)."""
        f = self._scaled_gradient(ops.convert_to_tensor(self.fractional_bits))
        f_rounded = ops.stop_gradient(ops.round(f))
        vmax = ops.convert_to_tensor(self.vmax)
        vmax = ops.where(ops.isfinite(vmax), vmax, ops.zeros_like(vmax))  # nothing recorded
        span = self._value_span(vmax, f_rounded, f - ops.stop_gradient(f))
        return ops.broadcast_to(span, (1,) + tuple(self.element_shape))[0]

    def exact_constant_bitwidth(self) -> np.ndarray:
        """``surrogate_constant_bitwidth`` after calibration (numpy ints)."""
        f = self.rounded_fractional_bits()
        floor = self.config["rnd_strategy"] == "floor"
        vmax = np.asarray(self.vmax.numpy(), np.float64)
        vmax = np.where(np.isfinite(vmax), vmax, 0.0)  # nothing recorded
        span = bit_span(round_to_grid_host(vmax, f, floor), f)
        return np.broadcast_to(span, (1,) + tuple(self.element_shape))[0]

    # ------------------------------------------------- calibration (host side)
    def rounded_fractional_bits(self) -> np.ndarray:
        """Integer fractional bits per element, as deployed (numpy)."""
        f = np.round(self.fractional_bits.numpy()).astype(np.int64)
        if self.is_activation:
            return np.broadcast_to(f, (1,) + tuple(self.element_shape))[0]
        return np.broadcast_to(f, tuple(self.element_shape))

    def freeze_int_bits(self, cover_factor: float = 1.0) -> None:
        """Fix ``(k, i)`` per element from the record; inference then wraps (or saturates).

        ``cover_factor`` scales the recorded range first, a margin for values beyond
        those seen in calibration (1 = the range exactly as recorded).
        """
        k, i = self.int_bits_from_record(cover_factor)
        self.keep_negative.assign(k[None].astype("float32"))
        self.int_bits.assign(i[None].astype("float32"))
        self.calibrated.assign(1.0)

    @contextlib.contextmanager
    def assuming_recorded_format(self) -> Iterator[None]:
        """Inside, ``exact_format`` answers from the record as ``freeze_int_bits`` would,
        without writing any variable (``CalibratedBOPs``: nothing to restore after)."""
        k, i = self.int_bits_from_record()
        object.__setattr__(self, "_assumed_format", (k, i, self.rounded_fractional_bits()))
        try:
            yield
        finally:
            object.__setattr__(self, "_assumed_format", None)

    def int_bits_from_record(self, cover_factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """``(k, i)`` per element that hold the recorded range scaled by ``cover_factor``."""
        vmin = self.vmin.numpy()[0]
        vmax = self.vmax.numpy()[0]
        if np.any(vmax == -np.inf):  # the maximum starts at -inf; any value lifts it
            raise RuntimeError(
                f"{self.path}: no values were recorded; run compute_bops on non-empty data."
            )
        if not (np.all(np.isfinite(vmin)) and np.all(np.isfinite(vmax))):
            raise RuntimeError(
                f"{self.path}: the recorded range holds NaN or inf, so this layer computed "
                "non-finite values on the calibration data (weights that are NaN, or an "
                "overflow earlier in the model). Check the model's outputs on that data."
            )
        return exact_int_bits(
            vmin * np.float64(cover_factor),
            vmax * np.float64(cover_factor),
            self.rounded_fractional_bits(),
        )

    def is_calibrated(self) -> bool:
        return bool(self.is_activation and float(self.calibrated.numpy()) > 0)

    def exact_format(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-element ``(k, i, f)`` int arrays of a calibrated activation quantizer."""
        assumed = getattr(self, "_assumed_format", None)
        if assumed is not None:
            return tuple(a.copy() for a in assumed)
        if not self.is_calibrated():
            raise RuntimeError(
                f"{self.path} is not calibrated: call HGQ.bops.compute_bops(model, X) first."
            )
        k = self.keep_negative.numpy()[0].astype(np.int64)
        i = self.int_bits.numpy()[0].astype(np.int64)
        return k, i, self.rounded_fractional_bits().copy()

    def exact_bitwidth(self) -> np.ndarray:
        """``k + i + f`` per element (0 where that is not positive), after calibration."""
        k, i, f = self.exact_format()
        return np.maximum(k + i + f, 0)

    def compute_output_shape(self, shape):
        return shape

    def get_config(self) -> dict[str, Any]:
        base = super().get_config()
        base.update(
            config=serialize_quantizer_config(self.config),
            role=self.role,
            non_negative=self.non_negative,
        )
        return base

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HGQuantizer:
        config = dict(config)
        config["config"] = deserialize_quantizer_config(config["config"])
        return cls(**config)
