"""HActivation: any Keras activation, quantized per element after the function."""

from __future__ import annotations

from typing import Any

import keras

from HGQ.layers.base import HBaseLayer


@keras.saving.register_keras_serializable(package="HGQ")
class HActivation(HBaseLayer):
    """Applies ``activation`` then quantizes the result per element.

    Non-linear functions become lookup tables in hardware, indexed by the (already
    fixed-point) input; the output always rounds to nearest, whatever ``'auto'`` says.
    """

    output_absorbs_rounding = True

    def __init__(self, activation: Any, **kwargs):
        kwargs.pop("kernel_quantizer_config", None)
        super().__init__(**kwargs)
        self.activation = keras.activations.get(activation)

    def output_is_non_negative(self) -> bool:
        return self.activation in (keras.activations.relu, keras.activations.sigmoid)

    def forward(self, inputs, training=None):
        return self.activation(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("kernel_quantizer_config", None)
        config["activation"] = keras.activations.serialize(self.activation)
        return config
