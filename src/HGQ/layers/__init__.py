"""HGQ layers."""

from HGQ.layers.activation import HActivation
from HGQ.layers.base import HBaseLayer, PLayerBase, QLayerBase
from HGQ.layers.dense import HDense
from HGQ.layers.quantize import HQuantize
from HGQ.layers.signature import Signature

__all__ = [
    "HActivation",
    "HBaseLayer",
    "HDense",
    "HQuantize",
    "PLayerBase",
    "QLayerBase",
    "Signature",
]
