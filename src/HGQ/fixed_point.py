"""Fixed-point arithmetic shared by the quantizers, written with ``keras.ops`` only.

A format is ``(k, i, f)``: sign bit, integer bits (sign excluded), fractional bits.
Everything here is exact in float32 as long as the values involved need at most 24
significant bits, which is what lets the Keras model agree bit for bit with the
HLS C simulation.
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

LN2 = math.log(2.0)

#: Significant bits float32 holds exactly: wider sums and products may round in Keras.
FLOAT32_EXACT_BITS = 24


def pow2(exponent):
    """2**exponent, exact for integer exponents (checked by the test suite per backend)."""
    return ops.power(2.0, exponent)


def round_half_up(x):
    """``floor(x + 0.5)`` without the float32 error of adding 0.5 (Vivado's ``AP_RND``).

    ``x + 0.5`` can round up to the next integer when ``x`` sits just below a tie;
    splitting off the integer part first keeps every step exact.
    """
    whole = ops.floor(x)
    return whole + ops.cast(x - whole >= 0.5, x.dtype)


def round_to_grid_host(x: np.ndarray, frac_bits: np.ndarray, floor: bool) -> np.ndarray:
    """Inference rounding on the host, in numpy float32, for deployment.

    The twin of the ``keras.ops`` path without a device dispatch per call (which on
    JAX compiles a kernel per shape). Every step (scaling by a power of two, floor,
    the split-off round-half-up) is exact in float32, so both give identical bits.
    """
    x = np.asarray(x, dtype=np.float32)
    scale = np.ldexp(np.float32(1.0), np.asarray(frac_bits, dtype=np.int32)).astype(np.float32)
    xs = x * scale
    whole = np.floor(xs)
    if not floor:
        whole = whole + (xs - whole >= 0.5).astype(np.float32)
    return whole / scale


def wrap(q, keep_negative, int_bits):
    """Wrap ``q`` (already on its format's grid) into ``[-k*2^i, 2^i)`` (``AP_WRAP``).

    A format of zero or negative width maps every value to 0, as the hardware would.
    """
    period = pow2(int_bits + keep_negative)
    low = -keep_negative * pow2(int_bits)
    return q - period * ops.floor((q - low) / period)


def saturate(q, keep_negative, int_bits, frac_bits, symmetric: bool):
    """Clip ``q`` (already on its format's grid) to the format's range (``AP_SAT``).

    ``symmetric`` is ``AP_SAT_SYM``: a signed format's minimum becomes ``-max``, except
    that ap_fixed keeps ``-2^i`` for a 1-bit signed format (its only non-zero value).
    A format of zero or negative width holds only 0.
    """
    width = keep_negative + int_bits + frac_bits
    high = pow2(int_bits) - pow2(-frac_bits)
    low = -keep_negative * pow2(int_bits)
    if symmetric:
        low = ops.where((keep_negative > 0) & (width > 1), -high, low)
    return ops.where(width > 0, ops.minimum(ops.maximum(q, low), high), ops.zeros_like(q))


def surrogate_int_bits(vmin, vmax, frac_bits):
    """Integer bits (sign excluded) that hold ``[vmin, vmax]`` on a ``frac_bits`` grid.

    Used for the training-time EBOPs surrogate only: ``log2`` is not exact on every
    backend, so a small slack keeps exact powers of two from rounding up. The larger
    of the positive and negative requirements is taken before the one ``log2``
    (``ceil(log2(.))`` is monotonic), which keeps the training graph small.
    """
    tiny = 1e-30
    pos = ops.maximum(vmax, 0.0) + pow2(-frac_bits)
    negative = vmin < 0
    magnitude = ops.maximum(pos, ops.where(negative, -vmin, tiny))
    int_bits = ops.ceil(ops.log2(magnitude) - 1e-5)
    return ops.cast(negative, vmin.dtype), int_bits


def integer_bit_span(mantissa):
    """Bits from the highest to the lowest set bit of non-negative integers (``keras.ops``).

    ``mantissa`` holds integer values in a float tensor (a weight's ``|q| * 2^f``);
    0 spans 0 bits. The twin of ``bit_span`` for the training graph: the lowest set
    bit is split off with integer arithmetic, and ``floor(log2(.))`` of the odd part
    left is corrected by exact powers of two, since ``log2`` may round across an
    integer in float32. Values beyond 2^30 are clipped (int32; they are not exact in
    float32 anyway).
    """
    m = ops.minimum(mantissa, 2.0**30)
    as_int = ops.cast(m, "int32")
    lowest = ops.cast(ops.bitwise_and(as_int, ops.negative(as_int)), m.dtype)
    odd = m / ops.maximum(lowest, 1.0)  # exact: a division by a power of two
    exponent = ops.floor(ops.log2(ops.maximum(odd, 1.0)))
    exponent = ops.where(pow2(exponent) > odd, exponent - 1.0, exponent)
    exponent = ops.where(pow2(exponent + 1.0) <= odd, exponent + 1.0, exponent)
    return ops.where(m > 0, exponent + 1.0, ops.zeros_like(m))


def ceil_log2_exact(x: np.ndarray) -> np.ndarray:
    """``ceil(log2(x))`` for positive floats, exactly (no transcendental rounding)."""
    mantissa, exponent = np.frexp(np.asarray(x, dtype=np.float64))
    return np.where(mantissa == 0.5, exponent - 1, exponent).astype(np.int64)


def exact_int_bits(vmin: np.ndarray, vmax: np.ndarray, frac_bits: np.ndarray):
    """Smallest ``(k, i)`` such that every value in ``[vmin, vmax]`` fits ``(k, i, f)``.

    ``k = 1`` iff ``vmin < 0``; ``i`` is the least integer with
    ``vmax <= 2^i - 2^-f`` and ``vmin >= -2^i``.
    """
    vmin = np.asarray(vmin, np.float64)
    vmax = np.asarray(vmax, np.float64)
    frac_bits = np.asarray(frac_bits, np.float64)
    keep_negative = (vmin < 0).astype(np.int64)
    i_pos = ceil_log2_exact(np.maximum(vmax, 0.0) + np.exp2(-frac_bits))
    i_neg = ceil_log2_exact(np.where(vmin < 0, -vmin, 1.0))
    int_bits = np.where(vmin < 0, np.maximum(i_pos, i_neg), i_pos)
    return keep_negative, int_bits.astype(np.int64)


def bit_span(values: np.ndarray, frac_bits: np.ndarray) -> np.ndarray:
    """Bits from the highest to the lowest set bit of ``|values|`` on a ``frac_bits`` grid.

    ``0b001xx1000`` spans 4 bits; zero spans 0. This is a weight's EBOPs bitwidth.
    """
    scaled = np.abs(np.asarray(values, np.float64)) * np.exp2(np.asarray(frac_bits, np.float64))
    mantissas = np.round(scaled).astype(np.int64)
    if not np.array_equal(mantissas, scaled):
        raise ValueError("bit_span: values are not on their fractional-bit grid")
    span = np.zeros(mantissas.shape, np.int64)
    nonzero = mantissas != 0
    m = mantissas[nonzero]
    _, highest = np.frexp(m.astype(np.float64))  # m < 2**53: frexp is exact
    _, lowest = np.frexp((m & -m).astype(np.float64))
    span[nonzero] = highest - lowest + 1
    return span


def union_format(kif: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[int, int, int]:
    """One ``(k, i, f)`` that holds every value of every element format (ignoring empty ones)."""
    k, i, f = (np.asarray(a, dtype=np.int64) for a in kif)
    live = k + i + f > 0
    if not np.any(live):
        return 0, 0, 0
    return int(np.max(k[live])), int(np.max(i[live])), int(np.max(f[live]))
