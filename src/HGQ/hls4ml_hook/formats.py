"""Per-element fixed-point formats as hls4ml layer dictionaries.

HGQ formats are ``(k, i, f)`` with ``i`` excluding the sign bit; hls4ml's
``FixedPointQuantizer`` takes ``(k, B, I)`` with the total width ``B`` and the
``ap_fixed`` integer bits ``I = k + i``, as int arrays with a leading batch axis.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The hls4ml layer name of HGQ's quantizers (``HGQ.hls4ml_hook.hls4ml_workarounds``
#: registers it; this module stays free of hls4ml imports).
HGQ_QUANTIZER = "HGQFixedPointQuantizer"


def fixed_point_quantizer(
    name: str,
    kif: tuple[np.ndarray, np.ndarray, np.ndarray],
    rounding: str,
    source: str,
    target: str,
    overflow: str = "WRAP",
) -> dict[str, Any]:
    """An hls4ml ``FixedPointQuantizer`` casting every element to its own format.

    ``overflow`` is ap_fixed's mode for values outside a format: ``WRAP``, ``SAT`` or
    ``SAT_SYM`` (the quantizer config's ``overflow_mode``).

    Elements whose width is not positive always hold 0; they get width 0, which
    hls4ml emits as a constant 0 instead of an invalid type.
    """
    k, i, f = (np.asarray(a, dtype=np.int64) for a in kif)
    width = np.maximum(k + i + f, 0)
    int_bits = np.where(width > 0, k + i, 0)
    k = np.where(width > 0, k, 0)
    mask = tuple(a[None].astype(np.int16) for a in (k, width, int_bits))
    return {
        "name": name,
        # hls4ml narrows some formats wrongly; see HGQ.hls4ml_hook.hls4ml_workarounds.
        "class_name": HGQ_QUANTIZER,
        "mask_kbi": mask,
        "SAT": overflow,
        "RND": rounding,
        "fusible": None,
        "overrides": {},
        "input_keras_tensor_names": [source],
        "output_keras_tensor_names": [target],
    }
