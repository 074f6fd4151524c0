"""Which HGQ layer replaces a plain Keras layer, and the check that finds plain ones.

A plain Keras layer inside an HGQ model computes in float and has no output
formats, so EBOPs and the deployed arithmetic silently stop matching the model.
Every entry point that relies on the accounting (``compute_bops``, ``ResetMinMax``,
conversion) refuses such models and names the replacement.
"""

from __future__ import annotations

import keras

HGQ_REPLACEMENTS: dict[str, str] = {
    "Dense": "HDense",
    "EinsumDense": "HDense",
    "Conv1D": "HConv1D",
    "Conv2D": "HConv2D",
    "Activation": "HActivation",
    "ReLU": "HActivation('relu')",
    "Softmax": "HActivation",
    "Add": "HAdd",
    "Subtract": "HSubtract",
    "Multiply": "HMultiply",
    "Concatenate": "PConcatenate",
    "Flatten": "PFlatten",
    "Reshape": "PReshape",
    "Permute": "PPermute",
    "Dropout": "PDropout",
    "MaxPooling1D": "PMaxPool1D",
    "MaxPooling2D": "PMaxPool2D",
    "AveragePooling1D": "PAvgPool1D",
    "AveragePooling2D": "PAvgPool2D",
    "GlobalMaxPooling1D": "PGlobalMaxPool1D",
    "GlobalMaxPooling2D": "PGlobalMaxPool2D",
    "GlobalAveragePooling1D": "PGlobalAvgPool1D",
    "GlobalAveragePooling2D": "PGlobalAvgPool2D",
    "BatchNormalization": "HDenseBatchNorm / HConv1DBatchNorm / HConv2DBatchNorm (fused)",
}


def replacement_hint(layer: keras.layers.Layer) -> str:
    name = HGQ_REPLACEMENTS.get(type(layer).__name__)
    if name is not None:
        return f"Use {name} instead."
    return "It has no HGQ counterpart; see the README's layer list for what is supported."


def check_only_hgq_layers(model: keras.Model) -> None:
    """Raise if ``model`` contains a layer that is not an HGQ layer (the input excepted)."""
    from HGQ.layers.base import QLayerBase

    for layer in model.layers:
        if isinstance(layer, (QLayerBase, keras.layers.InputLayer)):
            continue
        if isinstance(layer, keras.Model):
            check_only_hgq_layers(layer)
            continue
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) is a plain Keras layer inside an "
            "HGQ model: it has no quantized output formats, so EBOPs and the deployed "
            f"arithmetic would silently be wrong. {replacement_hint(layer)}"
        )
