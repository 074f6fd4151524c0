"""HGQ layers: H-layers quantize their outputs (and kernels); P-layers move values."""

from HGQ.layers.activation import HActivation
from HGQ.layers.add import HAdd, HMultiply, HSubtract
from HGQ.layers.attention import HMultiHeadAttention
from HGQ.layers.base import HBaseLayer, HKernelLayer, PLayerBase, QLayerBase
from HGQ.layers.batchnorm import HConv1DBatchNorm, HConv2DBatchNorm, HDenseBatchNorm
from HGQ.layers.concatenate import PConcatenate
from HGQ.layers.conv import HConv1D, HConv2D
from HGQ.layers.dense import HDense
from HGQ.layers.dropout import PDropout
from HGQ.layers.einsum import HEinsum
from HGQ.layers.einsum_dense import HEinsumDense
from HGQ.layers.pooling import (
    PAveragePooling1D,
    PAveragePooling2D,
    PAvgPool1D,
    PAvgPool2D,
    PGlobalAveragePooling1D,
    PGlobalAveragePooling2D,
    PGlobalAvgPool1D,
    PGlobalAvgPool2D,
    PGlobalMaxPool1D,
    PGlobalMaxPool2D,
    PGlobalMaxPooling1D,
    PGlobalMaxPooling2D,
    PMaxPool1D,
    PMaxPool2D,
    PMaxPooling1D,
    PMaxPooling2D,
)
from HGQ.layers.quantize import HQuantize
from HGQ.layers.reshaping import PFlatten, PPermute, PReshape
from HGQ.layers.signature import Signature
from HGQ.layers.softmax import HSoftmax

__all__ = [
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
    "HKernelLayer",
    "HMultiHeadAttention",
    "HMultiply",
    "HSubtract",
    "HQuantize",
    "HSoftmax",
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
    "QLayerBase",
    "Signature",
]
