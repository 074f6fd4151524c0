"""How a quantizer rounds when deployed, in the words both emitters use."""

from __future__ import annotations

from HGQ.quantizer import HGQuantizer


def quantizer_rounding(quantizer: HGQuantizer) -> str:
    """``'TRN'`` for floor quantizers, ``'RND'`` (round half up) for all others at inference."""
    return "TRN" if quantizer.config["rnd_strategy"] == "floor" else "RND"
