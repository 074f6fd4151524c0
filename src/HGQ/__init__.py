"""HGQ for Keras 3: High Granularity Quantization with bit-exact FPGA deployment.

Every weight and activation learns its own fixed-point bitwidth under a penalty on
hardware cost (EBOPs). Importing this package picks JAX as the Keras backend when
the user chose none and TensorFlow is not installed.
"""

import sys

from HGQ._backend import select_backend

select_backend()

from HGQ.calibration import compute_bops, trace_minmax  # noqa: E402
from HGQ.callbacks import CalibratedBOPs, FreeBOPs, ResetMinMax  # noqa: E402
from HGQ.config import (  # noqa: E402
    get_default_kernel_quantizer_config,
    get_default_pre_activation_quantizer_config,
    reset_default_quantizer_configs,
    set_default_kernel_quantizer_config,
    set_default_pre_activation_quantizer_config,
)
from HGQ.costs import EBOPs, LayerCost, summary  # noqa: E402
from HGQ.layers import (  # noqa: E402
    HActivation,
    HAdd,
    HBaseLayer,
    HConv1D,
    HConv1DBatchNorm,
    HConv2D,
    HConv2DBatchNorm,
    HDense,
    HDenseBatchNorm,
    HEinsum,
    HEinsumDense,
    HMultiHeadAttention,
    HMultiply,
    HQuantize,
    HSoftmax,
    HSubtract,
    PAveragePooling1D,
    PAveragePooling2D,
    PAvgPool1D,
    PAvgPool2D,
    PConcatenate,
    PDropout,
    PFlatten,
    PGlobalAveragePooling1D,
    PGlobalAveragePooling2D,
    PGlobalAvgPool1D,
    PGlobalAvgPool2D,
    PGlobalMaxPool1D,
    PGlobalMaxPool2D,
    PGlobalMaxPooling1D,
    PGlobalMaxPooling2D,
    PLayerBase,
    PMaxPool1D,
    PMaxPool2D,
    PMaxPooling1D,
    PMaxPooling2D,
    PPermute,
    PReshape,
    Signature,
)
from HGQ.quantizer import HGQuantizer  # noqa: E402

# hls4ml already imported: make its converter know HGQ's layers now.
if sys.modules.get("hls4ml") is not None:
    import HGQ.hls4ml_hook.handlers  # noqa: E402, F401

__version__ = "0.1.0"

__all__ = [
    "CalibratedBOPs",
    "EBOPs",
    "FreeBOPs",
    "HActivation",
    "HAdd",
    "HBaseLayer",
    "HConv1D",
    "HConv1DBatchNorm",
    "HConv2D",
    "HConv2DBatchNorm",
    "HDense",
    "HDenseBatchNorm",
    "HEinsum",
    "HEinsumDense",
    "HGQuantizer",
    "HMultiHeadAttention",
    "HMultiply",
    "HSubtract",
    "HQuantize",
    "HSoftmax",
    "LayerCost",
    "PAveragePooling1D",
    "PAveragePooling2D",
    "PAvgPool1D",
    "PAvgPool2D",
    "PConcatenate",
    "PDropout",
    "PFlatten",
    "PGlobalAvgPool1D",
    "PGlobalAvgPool2D",
    "PGlobalAveragePooling1D",
    "PGlobalAveragePooling2D",
    "PGlobalMaxPool1D",
    "PGlobalMaxPool2D",
    "PGlobalMaxPooling1D",
    "PGlobalMaxPooling2D",
    "PLayerBase",
    "PMaxPool1D",
    "PMaxPool2D",
    "PMaxPooling1D",
    "PMaxPooling2D",
    "PPermute",
    "PReshape",
    "ResetMinMax",
    "Signature",
    "compute_bops",
    "get_default_kernel_quantizer_config",
    "get_default_pre_activation_quantizer_config",
    "reset_default_quantizer_configs",
    "set_default_kernel_quantizer_config",
    "set_default_pre_activation_quantizer_config",
    "summary",
    "trace_minmax",
]
