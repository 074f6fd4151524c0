"""HDense: a Dense layer with per-weight kernel bitwidths and per-element outputs."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from HGQ.fixed_point import bit_span
from HGQ.full_precision import full_precision
from HGQ.layers.base import HKernelLayer


def dense_bops(input_bits, kernel_bits):
    """``sum(input_bits @ kernel_bits)``, written as row and column sums.

    Equal to the matmul, but its gradient needs no matrix products: this keeps the
    compiled training step smaller (and so faster to compile).
    """
    per_input = ops.sum(ops.reshape(input_bits, (-1, kernel_bits.shape[0])), axis=0)
    return ops.sum(per_input * ops.sum(kernel_bits, axis=1))


@keras.saving.register_keras_serializable(package="HGQ")
class HDense(HKernelLayer):
    """``keras.layers.Dense`` with heterogeneous quantization of kernel and output.

    EBOPs: ``sum_ij bw_in[i] * bw_kernel[i, j]``; the bias is rounded onto the
    output's fractional grid so it costs nothing and rounding stays exact.
    """

    def __init__(self, units: int, activation: Any = None, use_bias: bool = True, **kwargs):
        """``kernel_initializer`` and the other Dense keywords go to ``HKernelLayer``."""
        super().__init__(activation=activation, use_bias=use_bias, **kwargs)
        self.units = int(units)

    def build(self, input_shape) -> None:
        self.build_kernel((int(input_shape[-1]), self.units))
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def forward(self, inputs, training=None):
        kernel = self.quantized_kernel(training)
        with full_precision():
            outputs = ops.matmul(inputs, kernel)
        return self.finish_forward(outputs, training)

    def bops_surrogate(self):
        kernel_bits = self.kernel_quantizer.surrogate_bitwidth(self.kernel)
        return dense_bops(self.input_bitwidth(), kernel_bits)

    def compute_exact_bops(self) -> float:
        kernel = self.deployed_kernel()
        kernel_bits = bit_span(kernel, self.kernel_quantizer.rounded_fractional_bits())
        input_bits = self.exact_input_bitwidth().astype(np.float64)
        return float(np.sum(input_bits @ kernel_bits))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["units"] = self.units
        return config
