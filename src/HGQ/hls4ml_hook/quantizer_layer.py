"""hls4ml's per-element quantizer, with a narrowing that keeps every reachable value.

hls4ml 1.3's bit-exact pass narrows each ``FixedPointQuantizer`` to what its input
can reach (``produce_kif`` in ``model/optimizer/passes/bit_exact.py``) and types the
layers after it from that. Its rule loses values in two cases found by random models:

- ``SAT``: every element is narrowed, fractional bits included, which moves the
  saturation value ``2^i - 2^-f`` onto the input's coarser grid (474 of 2,400 outputs
  of a test CNN differed far outside the calibrated range);
- a grid coarser than the input's range: truncating a small negative value gives
  ``-2^-f`` (rounding a small positive one ``+2^-f``), more than the one integer bit
  hls4ml adds, so such elements became width 0 (205 of 1,920 outputs differed).

HGQ emits its quantizers as this subclass. Its ``produce_kif`` narrows an element only
where nothing can overflow, to the exact range of the rounded input range; code
generation still casts to the calibrated formats. Everything else is hls4ml's. Under
``SAT_SYM`` a signed format's least value is ``-(2^i - 2^-f)``, not ``-2^i``: counting
``-2^i`` as representable passed it through unclipped (fuzz seed 1215: 485 of 2,560
outputs differed far outside the calibrated range).
"""

from __future__ import annotations

import numpy as np
from hls4ml.model.layers import register_layer
from hls4ml.model.optimizer.passes.bit_exact import _produce_kif, get_input_layers, produce_kif
from hls4ml.model.optimizer.passes.hgq_proxy_model import FixedPointQuantizer

from HGQ.fixed_point import exact_int_bits
from HGQ.hls4ml_hook.formats import HGQ_QUANTIZER


class HGQQuantizer(FixedPointQuantizer):
    """A ``FixedPointQuantizer`` whose bit-exact narrowing keeps every reachable value."""


# hls4ml matches templates by class name (the backend wraps this class and reports its
# base's name), so the subclass must be named like hls4ml's quantizer to share them.
HGQQuantizer.__name__ = FixedPointQuantizer.__name__
register_layer(HGQ_QUANTIZER, HGQQuantizer)


def _rounded(values: np.ndarray, frac_bits: np.ndarray, rounds: bool) -> np.ndarray:
    scale = np.exp2(frac_bits)
    return np.floor(values * scale + (0.5 if rounds else 0.0)) / scale


@_produce_kif.register
def _(layer: HGQQuantizer):
    k, width, integer = (np.asarray(a, np.float64)[0] for a in layer.mask_kbi)
    i, f = integer - k, width - integer
    in_k, in_i, in_f = (np.asarray(a, np.float64) for a in produce_kif(get_input_layers(layer)[0]))
    rounds = layer.RND != "TRN"
    # The input's extreme values, rounded as the quantizer does (it is monotonic).
    low = _rounded(-in_k * np.exp2(in_i), f, rounds)
    high = _rounded(np.exp2(in_i) - np.exp2(-in_f), f, rounds)
    top = np.exp2(i) - np.exp2(-f)
    # The format's least value: -2^i, or -top under SAT_SYM (ap_fixed keeps -2^i for a
    # 1-bit signed format, its only non-zero value).
    bottom = np.where((layer.SAT == "SAT_SYM") & (width > 1), -top, -np.exp2(i)) * k
    fits = (width > 0) & (low >= bottom) & (high <= top)
    # Where nothing overflows the output is the rounded input: on the coarser grid of
    # the two, within [low, high].
    narrow_f = np.minimum(f, in_f)
    narrow_k, narrow_i = exact_int_bits(low, high, narrow_f)
    k = np.where(fits, narrow_k, k)
    i = np.where(fits, narrow_i, i)
    f = np.where(fits, narrow_f, f)
    live = k + i + f > 0
    return tuple(np.where(live, a, 0).astype(np.int16) for a in (k, i, f))
