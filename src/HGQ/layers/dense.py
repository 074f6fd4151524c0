"""HDense: a Dense layer with per-weight kernel bitwidths and per-element outputs."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from HGQ.fixed_point import bit_span
from HGQ.full_precision import full_precision
from HGQ.layers.base import HKernelLayer
from HGQ.layers.parallelism import ParallelFactorMixin


def dense_bops(input_bits, kernel_bits):
    """``sum(input_bits @ kernel_bits)``, written as row and column sums.

    Equal to the matmul, but its gradient needs no matrix products: this keeps the
    compiled training step smaller (and so faster to compile).
    """
    per_input = ops.sum(ops.reshape(input_bits, (-1, kernel_bits.shape[0])), axis=0)
    return ops.sum(per_input * ops.sum(kernel_bits, axis=1))


@keras.saving.register_keras_serializable(package="HGQ")
class HDense(ParallelFactorMixin, HKernelLayer):
    """``keras.layers.Dense`` with heterogeneous quantization of kernel and output.

    On inputs of any rank it acts on the last axis with one kernel for every position
    (every particle of a ``(particles, features)`` input, as in Deep Sets), like
    Keras's Dense. EBOPs: ``sum_ij bw_in[p, i] * bw_kernel[i, j]`` summed over the
    positions ``p`` and scaled by ``parallel_factor / positions``: the default (None)
    prices one kernel instance per position, as the fully parallel firmware builds it;
    an int prices that many instances reused over the positions (hls4ml's
    ``ParallelizationFactor``; see ``HGQ.layers.parallelism``). The bias is rounded onto
    the output's fractional grid so it costs nothing and rounding stays exact.
    """

    def __init__(
        self,
        units: int,
        activation: Any = None,
        use_bias: bool = True,
        parallel_factor: int | None = None,
        **kwargs,
    ):
        """``kernel_initializer`` and the other Dense keywords go to ``HKernelLayer``.

        Args:
            units: Output features.
            activation: None, ``'linear'`` or ``'relu'`` (others: ``HActivation``).
            use_bias: Whether to add a bias.
            parallel_factor: Kernel instances the firmware builds on an input with
                position axes: None (the default) one per position, an int that many,
                reused over the positions.
        """
        self.init_parallel_factor(parallel_factor)
        super().__init__(activation=activation, use_bias=use_bias, **kwargs)
        self.units = int(units)

    def build(self, input_shape) -> None:
        positions = int(np.prod([int(d) for d in input_shape[1:-1]], dtype=np.int64))
        self.set_positions(positions, f" (input shape {tuple(input_shape)})")
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
        return dense_bops(self.input_bitwidth(), kernel_bits) * self.bops_scale

    def product_map(self, input_bits, kernel_bits):
        return ops.matmul(input_bits, kernel_bits)

    def compute_exact_bops(self) -> float:
        kernel = self.deployed_kernel()
        kernel_bits = bit_span(kernel, self.kernel_quantizer.rounded_fractional_bits())
        input_bits = self.exact_input_bitwidth().astype(np.float64)
        return float(np.sum(input_bits @ kernel_bits)) * self.bops_scale

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["units"] = self.units
        config["parallel_factor"] = self.parallel_factor_config
        return config
