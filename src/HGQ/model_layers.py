"""The HGQ layers of a model, and which of them are not calibrated yet."""

from __future__ import annotations

import keras

from HGQ.layers.base import HBaseLayer, QLayerBase


def hgq_layers(model: keras.Model) -> list[QLayerBase]:
    """Every HGQ layer of ``model``, nested ones included, in tracking order."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, QLayerBase)
    ]


def uncalibrated_layers(layers: list[QLayerBase]) -> list[str]:
    """Names of the layers in ``layers`` whose output formats are not yet fixed."""
    return [
        layer.name
        for layer in layers
        if isinstance(layer, HBaseLayer) and not layer.pre_activation_quantizer.is_calibrated()
    ]
