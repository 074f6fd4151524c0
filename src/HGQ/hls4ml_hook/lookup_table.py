"""Exact lookup tables for non-linear HActivation functions.

A table is indexed by the raw bits of its input, so its layout depends on the input's
fixed-point type. The handler lays it out for the union of the calibrated input
formats; hls4ml's bit-exact pass may then type that input differently (narrower where
the producers cannot reach some bits, wider where elements of width 0 count as
``(0, 0, 0)``), so ``relayout_tables`` fills each table again for the type hls4ml chose.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from HGQ.deploy.tables import TableSpec, evaluate, table_spec
from HGQ.tabulated import MAX_TABLE_INPUT_BITS


def table_input_values(k: int, i: int, f: int) -> np.ndarray:
    """Every value of format ``(k, i, f)``, in the order of its raw bits as an index."""
    width = k + i + f
    codes = np.arange(2**width, dtype=np.int64)
    if k:
        codes = np.where(codes >= 2 ** (width - 1), codes - 2**width, codes)
    return codes.astype(np.float64) * 2.0**-f


def _check_width(spec: TableSpec, width: int, what: str) -> None:
    if width > MAX_TABLE_INPUT_BITS:
        raise ValueError(
            f"{spec.owner}: its input is up to {width} bits wide ({what}), so its lookup "
            f"table would have 2^{width} entries; the limit is 2^{MAX_TABLE_INPUT_BITS}. "
            f"{spec.fix}"
        )


def table_entries(spec: TableSpec, k: int, i: int, f: int) -> np.ndarray:
    """The table of ``spec`` for an input of type ``(k, i, f)``, one entry per raw code.

    Entries hold the Keras function's float32 result truncated one bit below the
    finest output format: truncating there and then rounding half up (or truncating,
    for a floor quantizer) per element gives what the quantizer gives on the float
    result directly. Codes the input can never hold get 0.
    """
    _check_width(spec, k + i + f, "as typed for the table")
    outputs = evaluate(spec, table_input_values(k, i, f), quantize=False)
    _, _, f_out = spec.quantizer.exact_format()
    table_bits = int(np.max(f_out)) + 1
    return np.floor(outputs * 2.0**table_bits) * 2.0**-table_bits


def table_step(
    layer: Any,
    stage: str | None,
    kif: tuple[int, int, int],
    source: str,
    target: str,
    n_in: int,
) -> dict[str, Any]:
    """An hls4ml ``UnaryLUT`` for the table ``stage`` of ``layer`` on inputs of type ``kif``
    (``relayout_tables`` fills it again for the type hls4ml chooses)."""
    spec = table_spec(layer, stage)
    _check_width(spec, sum(kif), "union of the per-element formats")
    return {
        "name": f"{layer.name}_{stage or 'table'}",
        "class_name": "UnaryLUT",
        "table_data": table_entries(spec, *kif),
        "n_in": n_in,
        "activation": "unary_lut",
        "hgq_table_of": layer.name,
        "hgq_table_stage": stage,
        "input_keras_tensor_names": [source],
        "output_keras_tensor_names": [target],
    }
