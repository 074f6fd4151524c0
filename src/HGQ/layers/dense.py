"""HDense: a Dense layer with per-weight kernel bitwidths and per-element outputs."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from HGQ.fixed_point import bit_span
from HGQ.layers.base import HKernelLayer

_LINEAR_ACTIVATIONS = {"linear": "linear", None: "linear", "relu": "relu"}


def linear_or_relu(layer_kind: str, activation: Any) -> str:
    """'linear' or 'relu'; anything else is an error pointing at HActivation."""
    if callable(activation):
        name = getattr(activation, "__name__", None)
        if activation in (keras.activations.relu, keras.activations.linear):
            return name
    elif activation in _LINEAR_ACTIVATIONS:
        return _LINEAR_ACTIVATIONS[activation]
    raise ValueError(
        f"{layer_kind} supports only activation='relu' or 'linear' (got {activation!r}): "
        "other activations are not exact in fixed point without a lookup table. Use a "
        f"linear {layer_kind} followed by HActivation({activation!r})."
    )


@keras.saving.register_keras_serializable(package="HGQ")
class HDense(HKernelLayer):
    """``keras.layers.Dense`` with heterogeneous quantization of kernel and output.

    EBOPs: ``sum_ij bw_in[i] * bw_kernel[i, j]``; the bias is rounded onto the
    output's fractional grid so it costs nothing and rounding stays exact.
    """

    def __init__(
        self,
        units: int,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        **kwargs,
    ):
        self.activation_name = linear_or_relu(type(self).__name__, activation)
        super().__init__(**kwargs)
        self.units = int(units)
        self.use_bias = bool(use_bias)
        self.output_absorbs_rounding = self.use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def build(self, input_shape) -> None:
        kernel_shape = (int(input_shape[-1]), self.units)
        self.kernel = self.add_weight(
            name="kernel",
            shape=kernel_shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        self.kernel_quantizer = self.make_kernel_quantizer(kernel_shape)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def forward(self, inputs, training=None):
        outputs = ops.matmul(inputs, self.quantized_kernel(training))
        if self.use_bias:
            outputs = outputs + self.quantized_bias(training)
        if self.activation_name == "relu":
            outputs = ops.relu(outputs)
        return outputs

    def bops_surrogate(self):
        kernel_bits = self.kernel_quantizer.surrogate_bitwidth(self.kernel)
        return ops.sum(ops.matmul(self.input_bitwidth(), kernel_bits))

    def compute_exact_bops(self) -> float:
        kernel = self.deployed_kernel()
        kernel_bits = bit_span(kernel, self.kernel_quantizer.rounded_fractional_bits())
        input_bits = self.exact_input_bitwidth().astype(np.float64)
        return float(np.sum(input_bits @ kernel_bits))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            units=self.units,
            activation=self.activation_name,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
            kernel_constraint=keras.constraints.serialize(self.kernel_constraint),
            bias_constraint=keras.constraints.serialize(self.bias_constraint),
        )
        return config
