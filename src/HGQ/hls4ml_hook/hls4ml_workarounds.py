"""Every correction HGQ makes to hls4ml's own conversion, in one file.

Checked on hls4ml 1.3.0 (``CHECKED_ON``). Each workaround below names the hls4ml
function it corrects and the wrong design it prevents (found by random models and
hls4ml's C simulation). On an hls4ml upgrade, review this file against the new
release's source; the bit-exact tests (``tests/test_hls4ml_*.py``, the fuzzer's cases
in ``tests/test_fuzz.py``) show whether a workaround is still needed. Outside this
file HGQ uses hls4ml's public converter, its layer dictionaries and its bit-exact
flow only.

1. ``HGQQuantizer``: hls4ml's ``FixedPointQuantizer`` with a bit-exact narrowing
   (``produce_kif``) that keeps every reachable value;
2. ``conversion_flows``: quantizer folding passes taken out of the flows (hls4ml
   ignores ``SkipOptimizers``) and its "propagated multiple times" warning made an
   error;
3. ``widen_quantizer_inputs``: tensors that feed quantizers typed wide enough;
4. ``sign_padded_max_pool_inputs``: padded max pools read signed types;
5. ``relayout_tables``: tables filled again for the input type hls4ml chose.

``after_conversion`` applies 3-5 to a converted graph, in that order.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from hls4ml.model.layers import register_layer
from hls4ml.model.optimizer.passes.bit_exact import _produce_kif, get_input_layers, produce_kif
from hls4ml.model.optimizer.passes.hgq_proxy_model import FixedPointQuantizer

from HGQ.deploy.tables import table_spec
from HGQ.fixed_point import exact_int_bits
from HGQ.hls4ml_hook.formats import HGQ_QUANTIZER
from HGQ.hls4ml_hook.lookup_table import table_entries

if TYPE_CHECKING:  # hls4ml imports this module while it is itself being imported
    from hls4ml.model import ModelGraph

#: The hls4ml release every workaround here was checked against.
CHECKED_ON = "1.3.0"


def check_version() -> None:
    """Warn when the installed hls4ml is not the minor release checked here."""
    import hls4ml

    checked_minor = CHECKED_ON.rsplit(".", 1)[0]
    installed = getattr(hls4ml, "__version__", "unknown")
    if not installed.startswith(checked_minor + "."):
        warnings.warn(
            f"HGQ's corrections to hls4ml's conversion were checked on hls4ml {CHECKED_ON}; "
            f"hls4ml {installed} is installed. Convert and compare with its C simulation "
            "(model_hls.compile(); model_hls.predict(x)) before trusting the design, or "
            f"install hls4ml {checked_minor}.x.",
            stacklevel=4,  # the caller of convert_from_hgq_model
        )


# 1. The quantizer layer ---------------------------------------------------------------
#
# hls4ml 1.3's bit-exact pass narrows each ``FixedPointQuantizer`` to what its input
# can reach (``produce_kif`` in ``model/optimizer/passes/bit_exact.py``) and types the
# layers after it from that. Its rule loses values in two cases found by random models:
#
# - ``SAT``: every element is narrowed, fractional bits included, which moves the
#   saturation value ``2^i - 2^-f`` onto the input's coarser grid (474 of 2,400 outputs
#   of a test CNN differed far outside the calibrated range);
# - a grid coarser than the input's range: truncating a small negative value gives
#   ``-2^-f`` (rounding a small positive one ``+2^-f``), more than the one integer bit
#   hls4ml adds, so such elements became width 0 (205 of 1,920 outputs differed).
#
# HGQ emits its quantizers as this subclass. Its ``produce_kif`` narrows an element only
# where nothing can overflow, to the exact range of the rounded input range; code
# generation still casts to the calibrated formats. Everything else is hls4ml's. Under
# ``SAT_SYM`` a signed format's least value is ``-(2^i - 2^-f)``, not ``-2^i``: counting
# ``-2^i`` as representable passed it through unclipped (fuzz seed 1215: 485 of 2,560
# outputs differed far outside the calibrated range).


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


# 2. The flows ------------------------------------------------------------------------

#: hls4ml's pass that folds a one-format FixedPointQuantizer into the layer before it.
#: Passes that fold an HGQ quantizer into a neighbouring layer, by the flow holding them.
QUANTIZER_FUSION_PASSES = {
    "convert": "fuse_fixed_point_quantizer",
    # With strategy='distributed_arithmetic': casts the kernel's inputs inside the DA
    # kernel from hls4ml's reading of the formats, then drops the quantizer.
    "vivado:optimize": "vivado:fuse_quantizer_into_d_a_layers",
}


@contextlib.contextmanager
def _quantizer_fusion_disabled() -> Iterator[None]:
    """Run hls4ml's flows without folding quantizers into other layers.

    The fold (``FuseFixedPointQuantizer``) replaces a quantizer whose elements share one
    format by that format on the previous layer's result, which loses a format when two
    quantizers follow each other, turns a width-0 format into a 1-bit rounding type, and
    defines the input twice in C++ when the quantizer's tensor is a model output. Keeping
    every quantizer costs no hardware: a cast is wiring. hls4ml 1.3 parses the
    ``SkipOptimizers`` config key but never applies it (``ModelGraph._parse_hls_config``),
    so the passes are taken out of their flows for the duration of the conversion.
    """
    from hls4ml.model.flow import get_flow

    removed = []
    for flow_name, pass_name in QUANTIZER_FUSION_PASSES.items():
        optimizers = get_flow(flow_name).optimizers
        if pass_name in optimizers:
            removed.append((optimizers, optimizers.index(pass_name), pass_name))
    for optimizers, position, _ in reversed(removed):
        optimizers.pop(position)
    try:
        yield
    finally:
        for optimizers, position, pass_name in removed:
            optimizers.insert(position, pass_name)


@contextlib.contextmanager
def conversion_flows() -> Iterator[None]:
    """hls4ml's flows as HGQ converts with them: no quantizer folding, and a fold hls4ml
    warns about ("propagated multiple times", a wrong design) raised as an error."""
    with _quantizer_fusion_disabled(), warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*propagated multiple times.*")
        yield


# 3-5. Types and tables after conversion ----------------------------------------------


def _is_placeholder(precision: Any) -> bool:
    """hls4ml's stand-in for a type of width < 1 (``to_hls4ml_fixed`` in bit_exact.py)."""
    return (precision.width, precision.integer, precision.signed) == (2, 32, False)


def widen_quantizer_inputs(model_hls: ModelGraph) -> None:
    """Give every tensor feeding a quantizer room for what the quantizer keeps of it.

    hls4ml's bit-exact pass (``default_register_precision``) types a tensor read only by
    non-saturating quantizers with the quantizers' sign and fractional bits but
    ``min(produced, requested)`` integer bits. Two results are wrong:

    - unsigned with fewer integer bits than a quantizer element: a signed producer's
      negative value is stored modulo ``2^produced`` instead of ``2^requested`` (a
      table into unsigned formats: 1,385 of 1,536 outputs differed);
    - a width below 1, when the quantizer's grid is coarser than the produced range
      (truncating -0.5 to a multiple of 16 gives -16): hls4ml then puts a placeholder
      type that holds only 0 (398 of 512 outputs differed).

    Storing modulo ``2^I`` on a grid at least as fine as the quantizers' is exact when
    ``I`` is at least every element's integer bits (ap_fixed's, sign included): each
    element then wraps modulo a divisor of ``2^I`` and rounds as from the value itself.
    Signed tensors of width >= 1 are safe: they hold the producer's whole range.
    hls4ml applies its rule through reshapes, so the chain of reshapes is followed.
    """
    from hls4ml.model.layers import Reshape
    from hls4ml.model.optimizer.passes.hgq_proxy_model import FixedPointQuantizer

    for node in model_hls.graph.values():
        if not isinstance(node, FixedPointQuantizer):
            continue
        keep_negative, width, integer = (np.asarray(a) for a in node.mask_kbi)
        live = width > 0
        if not np.any(live):
            continue
        needed_integer = int(np.max(integer[live]))
        rounding_bit = 0 if node.RND == "TRN" else 1
        needed_fraction = int(np.max((width - integer)[live])) + rounding_bit
        producer = model_hls.graph[node.inputs[0]]
        while True:
            precision = producer.get_output_variable().type.precision
            if _is_placeholder(precision):
                precision.signed = bool(np.any(keep_negative[live]))
                precision.integer = needed_integer
                precision.width = needed_integer + needed_fraction
            elif not precision.signed and precision.integer < needed_integer:
                precision.width += needed_integer - precision.integer
                precision.integer = needed_integer
            if not isinstance(producer, Reshape):
                break
            producer = model_hls.graph[producer.inputs[0]]


def sign_padded_max_pool_inputs(model_hls: ModelGraph) -> None:
    """Make the input type of every padded max pool signed.

    hls4ml fills a max pool's padding with the input type's most significant bit set
    (``pad_val``), meant as the most negative value. Keras ignores padded cells. For a
    signed type the two agree; for an unsigned one (a ReLU output, say) that pattern is
    ``2^(I-1)``, a large positive value, which wins every window it is in (seed 1319
    of the fuzzer: all 1,024 outputs wrong). One more bit, as a sign, makes the
    pattern the most negative value again and changes no stored value.
    """
    from hls4ml.model.layers import Pooling1D, Pooling2D

    for node in model_hls.graph.values():
        if not isinstance(node, (Pooling1D, Pooling2D)) or node.get_attr("pool_op") != "Max":
            continue
        padding = [node.get_attr(f"pad_{side}", 0) for side in ("top", "bottom", "left", "right")]
        if not any(padding):
            continue
        producer = model_hls.graph[node.inputs[0]]
        precision = producer.get_output_variable().type.precision
        if not precision.signed:
            precision.signed = True
            precision.width += 1
            precision.integer += 1


def relayout_tables(model_hls: Any, model: keras.Model) -> None:
    """Fill every HGQ table again for the input type hls4ml's bit-exact pass chose.

    Reachable codes get the same entries as in the handler's layout (every reachable
    value is in both types), so the table and result types hls4ml derived from that
    layout still hold them.
    """
    for node in model_hls.graph.values():
        layer_name = node.attributes.get("hgq_table_of")
        if layer_name is None:
            continue
        precision = node.get_input_variable().type.precision
        k = int(precision.signed)
        layer = next(
            layer for layer in model._flatten_layers(include_self=False) if layer.name == layer_name
        )  # parts of composite layers (HMultiHeadAttention's softmax) are not top-level
        spec = table_spec(layer, node.attributes.get("hgq_table_stage"))
        entries = table_entries(
            spec,
            k,
            precision.integer - k,
            precision.width - precision.integer,
        )
        table = node.get_weights("table")
        table.data = entries
        table.shape = list(entries.shape)
        table.data_length = int(entries.size)
        table.nonzeros = int(np.count_nonzero(entries))
        table.nzeros = table.data_length - table.nonzeros
        table.min, table.max = float(entries.min()), float(entries.max())
        node.attributes["table_data"] = entries
        node.attributes["table_size"] = int(entries.size)


def after_conversion(model_hls: ModelGraph, model: keras.Model) -> None:
    """Workarounds 3-5 on a graph hls4ml converted from ``model``."""
    widen_quantizer_inputs(model_hls)
    sign_padded_max_pool_inputs(model_hls)
    relayout_tables(model_hls, model)
