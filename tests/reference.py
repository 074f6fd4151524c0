"""An independent fixed-point reference in exact rational arithmetic.

It shares no code with the library: values are Python Fractions, rounding is
``floor(v * 2^f + 1/2)`` in integers, and overflow wraps modulo ``2^width``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def to_fractions(a) -> np.ndarray:
    return np.vectorize(lambda v: Fraction(float(v)), otypes=[object])(np.asarray(a))


def round_half_up(v: Fraction, f: int) -> Fraction:
    scale = Fraction(2) ** int(f)
    return Fraction(math.floor(v * scale + Fraction(1, 2))) / scale


def truncate(v: Fraction, f: int) -> Fraction:
    scale = Fraction(2) ** int(f)
    return Fraction(math.floor(v * scale)) / scale


def wrap(v: Fraction, k: int, i: int, f: int) -> Fraction:
    """Two's-complement wrap of ``v`` (on the 2^-f grid) into width k+i+f."""
    width = k + i + f
    if width <= 0:
        return Fraction(0)
    m = int(v * Fraction(2) ** f)  # integer mantissa
    m %= 2**width
    if k and m >= 2 ** (width - 1):
        m -= 2**width
    return Fraction(m) / Fraction(2) ** f


def integer_bits(vmin: Fraction, vmax: Fraction, f: int) -> tuple[int, int]:
    """Smallest (k, i) with every value of [vmin, vmax] representable, by search."""
    k = 1 if vmin < 0 else 0
    i = -f - 64
    lsb = Fraction(1, 2**f) if f >= 0 else Fraction(2**-f)
    while not (vmax <= Fraction(2) ** i - lsb and vmin >= -k * Fraction(2) ** i):
        i += 1
    return k, i


def quantize_array(values, f, rounding=round_half_up):
    f = np.broadcast_to(f, values.shape)
    out = np.empty(values.shape, dtype=object)
    for idx in np.ndindex(values.shape):
        out[idx] = rounding(values[idx], int(f[idx]))
    return out


def wrap_array(values, k, i, f):
    k, i, f = (np.broadcast_to(a, values.shape[1:]) for a in (k, i, f))
    out = np.empty(values.shape, dtype=object)
    for idx in np.ndindex(values.shape):
        e = idx[1:]
        out[idx] = wrap(values[idx], int(k[e]), int(i[e]), int(f[e]))
    return out


def calibrate(values, f):
    """Per-element (k, i) from a batch of quantized values (batch on axis 0)."""
    k = np.zeros(values.shape[1:], np.int64)
    i = np.zeros(values.shape[1:], np.int64)
    f = np.broadcast_to(f, values.shape[1:])
    for e in np.ndindex(values.shape[1:]):
        column = values[(slice(None), *e)]
        k[e], i[e] = integer_bits(min(column), max(column), int(f[e]))
    return k, i


def significant_bits(values) -> int:
    """Most significant bits any of ``values`` (dyadic Fractions) needs, sign excluded."""
    widest = 0
    for v in np.asarray(values, dtype=object).ravel():
        n = abs(v.numerator)
        if n:
            widest = max(widest, (n // (n & -n)).bit_length())
    return widest


def saturate(v: Fraction, k: int, i: int, f: int, symmetric: bool) -> Fraction:
    """Clip ``v`` (on the 2^-f grid) to [min, max] of width k+i+f, as ap_fixed's
    AP_SAT / AP_SAT_SYM do: the symmetric minimum of a signed format is -max, but a
    1-bit signed format keeps its only non-zero value, -2^i."""
    width = k + i + f
    if width <= 0:
        return Fraction(0)
    high = Fraction(2) ** i - Fraction(2) ** -f
    low = -k * Fraction(2) ** i
    if symmetric and k and width > 1:
        low = -high
    return min(max(v, low), high)
