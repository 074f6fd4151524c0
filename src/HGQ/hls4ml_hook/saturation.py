"""hls4ml's per-element quantizer for saturating formats, with the saturation kept.

hls4ml 1.3's bit-exact pass narrows a ``FixedPointQuantizer`` to what its input can
hold (``produce_kif`` in ``model/optimizer/passes/bit_exact.py``). For ``WRAP`` and
``SAT_SYM`` it narrows only elements whose input cannot overflow; for ``SAT`` it
narrows every element, fractional bits included, which moves the saturation value
``2^i - 2^-f`` to the input's coarser grid (measured: 474 of 2,400 outputs of a test
CNN differed far outside the calibrated range). HGQ emits ``SAT`` quantizers as this
subclass, for which the pass uses its own rule for the other modes: narrow only where
nothing can saturate. Everything else (code generation, templates) is hls4ml's.
"""

from __future__ import annotations

from hls4ml.model.layers import register_layer
from hls4ml.model.optimizer.passes.bit_exact import _produce_kif
from hls4ml.model.optimizer.passes.hgq_proxy_model import FixedPointQuantizer

from HGQ.hls4ml_hook.formats import SATURATING_QUANTIZER


class SaturatingQuantizer(FixedPointQuantizer):
    """A ``FixedPointQuantizer`` whose bit-exact narrowing keeps saturation values."""


# hls4ml matches templates by class name (the backend wraps this class and reports its
# base's name), so the subclass must be named like hls4ml's quantizer to share them.
SaturatingQuantizer.__name__ = FixedPointQuantizer.__name__
register_layer(SATURATING_QUANTIZER, SaturatingQuantizer)


@_produce_kif.register
def _(layer: SaturatingQuantizer):
    # The rule hls4ml applies to every mode but SAT: it reads the mode only to choose
    # between the two rules, so it runs with the mode set to one that takes this one.
    layer.SAT = "SAT_SYM"
    try:
        return _produce_kif.dispatch(FixedPointQuantizer)(layer)
    finally:
        layer.SAT = "SAT"
