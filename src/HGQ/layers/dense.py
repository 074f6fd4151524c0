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


def check_parallel_factor(value: Any, owner: str) -> int:
    """``parallel_factor`` as an int >= 1, or a ValueError naming ``owner``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"{owner}: parallel_factor must be an int >= 1 (how many positions get their "
            f"own multipliers), got {value!r}."
        )
    return int(value)


@keras.saving.register_keras_serializable(package="HGQ")
class HDense(HKernelLayer):
    """``keras.layers.Dense`` with heterogeneous quantization of kernel and output.

    On inputs of any rank it acts on the last axis with one kernel for every position
    (every particle of a ``(particles, features)`` input, as in Deep Sets), like
    Keras's Dense. EBOPs: ``sum_ij bw_in[p, i] * bw_kernel[i, j]`` summed over the
    positions ``p`` and scaled by ``parallel_factor / positions``: the default 1 prices
    one kernel instance reused for every position, ``parallel_factor = positions`` one
    per position (fully parallel), as for convolutions. The bias is rounded onto the
    output's fractional grid so it costs nothing and rounding stays exact.
    """

    def __init__(
        self,
        units: int,
        activation: Any = None,
        use_bias: bool = True,
        parallel_factor: int = 1,
        **kwargs,
    ):
        """``kernel_initializer`` and the other Dense keywords go to ``HKernelLayer``."""
        parallel_factor = check_parallel_factor(parallel_factor, type(self).__name__)
        super().__init__(activation=activation, use_bias=use_bias, **kwargs)
        self.units = int(units)
        self.parallel_factor = parallel_factor
        self.positions = 1

    def build(self, input_shape) -> None:
        self.positions = int(np.prod([int(d) for d in input_shape[1:-1]], dtype=np.int64))
        if self.parallel_factor > self.positions:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': parallel_factor={self.parallel_factor} "
                f"exceeds the {self.positions} position(s) its kernel is applied to (input "
                f"shape {tuple(input_shape)}); use a value between 1 and {self.positions}."
            )
        self.build_kernel((int(input_shape[-1]), self.units))
        super().build(input_shape)

    @property
    def bops_scale(self) -> float:
        """Kernel instances over positions: the share of the summed EBOPs deployed."""
        return self.parallel_factor / self.positions

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

    def compute_exact_bops(self) -> float:
        kernel = self.deployed_kernel()
        kernel_bits = bit_span(kernel, self.kernel_quantizer.rounded_fractional_bits())
        input_bits = self.exact_input_bitwidth().astype(np.float64)
        return float(np.sum(input_bits @ kernel_bits)) * self.bops_scale

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["units"] = self.units
        config["parallel_factor"] = self.parallel_factor
        return config
