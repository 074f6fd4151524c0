"""The original HGQ's import path for EBOPs, calibration and the callbacks.

``from HGQ.bops import compute_bops, trace_minmax, ResetMinMax, FreeBOPs,
CalibratedBOPs`` keeps working: the functions live in ``HGQ.calibration``, the
callbacks in ``HGQ.callbacks``, the model walk in ``HGQ.model_layers``. Nothing in the
library imports this module.
"""

from HGQ.calibration import calibrated_ebops, compute_bops, trace_minmax
from HGQ.callbacks import CalibratedBOPs, FreeBOPs, ResetMinMax
from HGQ.model_layers import hgq_layers, uncalibrated_layers

__all__ = [
    "CalibratedBOPs",
    "FreeBOPs",
    "ResetMinMax",
    "calibrated_ebops",
    "compute_bops",
    "hgq_layers",
    "trace_minmax",
    "uncalibrated_layers",
]
