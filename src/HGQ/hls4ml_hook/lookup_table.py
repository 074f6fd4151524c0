"""Exact lookup tables for non-linear HActivation functions.

A table is indexed by the raw bits of its input, so its layout depends on the input's
fixed-point type. The handler lays it out for the union of the calibrated input
formats; hls4ml's bit-exact pass may then type that input differently (narrower where
the producers cannot reach some bits, wider where elements of width 0 count as
``(0, 0, 0)``), so ``relayout_tables`` fills each table again for the type hls4ml chose.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from HGQ.hls4ml_hook.formats import union_format
from HGQ.layers.activation import MAX_TABLE_INPUT_BITS, HActivation


def table_input_values(k: int, i: int, f: int) -> np.ndarray:
    """Every value of format ``(k, i, f)``, in the order of its raw bits as an index."""
    width = k + i + f
    codes = np.arange(2**width, dtype=np.int64)
    if k:
        codes = np.where(codes >= 2 ** (width - 1), codes - 2**width, codes)
    return codes.astype(np.float64) * 2.0**-f


def _representable(values: np.ndarray, k: int, i: int, f: int) -> np.ndarray:
    """Which ``values`` format ``(k, i, f)`` holds exactly (a width <= 0 holds only 0)."""
    if k + i + f <= 0:
        return values == 0
    on_grid = np.floor(values * 2.0**f) == values * 2.0**f
    return on_grid & (values >= -k * 2.0**i) & (values <= 2.0**i - 2.0**-f)


def _check_width(layer: HActivation, width: int, what: str) -> None:
    if width > MAX_TABLE_INPUT_BITS:
        raise ValueError(
            f"HActivation '{layer.name}': its input is up to {width} bits wide ({what}), so "
            f"its lookup table would have 2^{width} entries; the limit is "
            f"2^{MAX_TABLE_INPUT_BITS}. Narrow the previous layer's output (bw_clip or a "
            "larger bops_reg_factor) or use a ReLU/linear activation."
        )


def table_entries(layer: HActivation, k: int, i: int, f: int) -> np.ndarray:
    """The table of ``layer`` for an input of type ``(k, i, f)``, one entry per raw code.

    Entries hold the Keras function's float32 result truncated one bit below the
    finest output format: truncating there and then rounding half up per element gives
    what rounding the float result directly gives. Codes the layer's input can never
    hold (outside the union of its calibrated formats) get 0.
    """
    _check_width(layer, k + i + f, "as typed for the table")
    inputs = table_input_values(k, i, f)
    outputs = np.asarray(
        keras.ops.convert_to_numpy(
            layer.activation(keras.ops.convert_to_tensor(inputs.astype(np.float32)))
        ),
        dtype=np.float64,
    )
    _, _, f_out = layer.pre_activation_quantizer.exact_format()
    table_bits = int(np.max(f_out)) + 1
    table = np.floor(outputs * 2.0**table_bits) * 2.0**-table_bits
    reachable = _representable(inputs, *union_format(layer.input_source().exact_output_format()))
    return np.where(reachable, table, 0.0)


def lookup_table_step(layer: HActivation, source: str, target: str, n_in: int) -> dict[str, Any]:
    """An hls4ml ``UnaryLUT`` reproducing ``layer.activation`` on its quantized inputs."""
    k, i, f = union_format(layer.input_source().exact_output_format())
    _check_width(layer, k + i + f, "union of the per-element formats")
    return {
        "name": f"{layer.name}_table",
        "class_name": "UnaryLUT",
        "table_data": table_entries(layer, k, i, f),
        "n_in": n_in,
        "activation": "unary_lut",
        "hgq_table_of": layer.name,
        "input_keras_tensor_names": [source],
        "output_keras_tensor_names": [target],
    }


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
        entries = table_entries(
            model.get_layer(layer_name),
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
