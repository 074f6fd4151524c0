"""Exact lookup tables for non-linear HActivation functions."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from HGQ.hls4ml_hook.formats import union_format
from HGQ.layers import HActivation

#: Widest input a table may be indexed by (2^16 entries).
MAX_TABLE_INPUT_BITS = 16


def table_input_values(k: int, i: int, f: int) -> np.ndarray:
    """Every value of format ``(k, i, f)``, in the order of its raw bits as an index."""
    width = k + i + f
    codes = np.arange(2**width, dtype=np.int64)
    if k:
        codes = np.where(codes >= 2 ** (width - 1), codes - 2**width, codes)
    return codes.astype(np.float64) * 2.0**-f


def lookup_table_step(layer: HActivation, source: str, target: str, n_in: int) -> dict[str, Any]:
    """An hls4ml ``UnaryLUT`` reproducing ``layer.activation`` on its quantized inputs."""
    k, i, f = union_format(layer.input_source().exact_output_format())
    width = k + i + f
    if width > MAX_TABLE_INPUT_BITS:
        raise ValueError(
            f"HActivation '{layer.name}': its input is up to {width} bits wide (union of the "
            f"per-element formats), so its lookup table would have 2^{width} entries; the "
            f"limit is 2^{MAX_TABLE_INPUT_BITS}. Narrow the previous layer's output "
            "(bw_clip or a larger bops_reg_factor) or use a ReLU/linear activation."
        )
    inputs = table_input_values(k, i, f).astype(np.float32)
    outputs = np.asarray(
        keras.ops.convert_to_numpy(layer.activation(keras.ops.convert_to_tensor(inputs))),
        dtype=np.float64,
    )
    _, _, f_out = layer.pre_activation_quantizer.exact_format()
    table_bits = int(np.max(f_out)) + 1
    table = np.floor(outputs * 2.0**table_bits) * 2.0**-table_bits
    return {
        "name": f"{layer.name}_table",
        "class_name": "UnaryLUT",
        "table_data": table,
        "n_in": n_in,
        "activation": "unary_lut",
        "hgq_table_input": (k, k + i + f, k + i),
        "input_keras_tensor_names": [source],
        "output_keras_tensor_names": [target],
    }
