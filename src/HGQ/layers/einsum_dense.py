"""HEinsumDense: ``keras.layers.EinsumDense`` with per-weight and per-element bitwidths.

EinsumDense is what MLP-Mixers (a Dense over the particle axis) and attention
projections (one kernel slice per head) are built from. Every multiplication of the
einsum is one entry of ``einsum(equation, input_bits, kernel_bits)``, so that sum is
the layer's EBOPs; positions that only the input has (free axes of the data, e.g.
particles a kernel is applied to) are priced by ``parallel_factor`` as in HDense.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops
from keras.src.layers.core.einsum_dense import _analyze_einsum_string

from HGQ.fixed_point import bit_span, pow2, round_half_up, round_to_grid_host
from HGQ.full_precision import full_precision
from HGQ.layers.base import HKernelLayer
from HGQ.layers.einsum import check_no_direct_sum, split_equation
from HGQ.layers.parallelism import ParallelFactorMixin


def without_batch(equation: str) -> str:
    """The equation on per-sample arrays (the batch letter removed; ``...`` stays)."""
    data, kernel, output = split_equation(equation, "HEinsumDense")
    if not data.startswith("..."):
        data, output = data[1:], output[1:]
    return f"{data},{kernel}->{output}"


def output_shape_of(equation: str, input_shape, kernel_shape) -> tuple[int | None, ...]:
    """The einsum's output shape, from the sizes its letters take in the operands."""
    data, kernel, output = split_equation(equation, "HEinsumDense")
    input_shape = tuple(input_shape)
    sizes = dict(zip(kernel, kernel_shape, strict=True))
    ellipsis: tuple[int | None, ...] = ()
    if data.startswith("..."):
        data = data[3:]
        ellipsis = input_shape[: len(input_shape) - len(data)]
    sizes.update(zip(data, input_shape[len(input_shape) - len(data) :], strict=True))
    if output.startswith("..."):
        return ellipsis + tuple(sizes[letter] for letter in output[3:])
    return tuple(sizes[letter] for letter in output)


@keras.saving.register_keras_serializable(package="HGQ")
class HEinsumDense(ParallelFactorMixin, HKernelLayer):
    """``keras.layers.EinsumDense`` with heterogeneous quantization of kernel and output.

    Arguments as Keras's (``equation``, ``output_shape``, ``activation`` linear or relu,
    ``bias_axes``) plus ``parallel_factor`` (kernel instances over the positions only
    the input has: None, the default, one per position; see ``HGQ.layers.parallelism``).
    The bias is broadcast to the output and
    each element rounded onto its own output grid, so it costs nothing and rounding
    stays exact; hls4ml's EinsumDense holds one bias per output element anyway.
    """

    def __init__(
        self,
        equation: str,
        output_shape: int | tuple[int | None, ...],
        activation: Any = None,
        bias_axes: str | None = None,
        parallel_factor: int | None = None,
        **kwargs,
    ):
        """``kernel_initializer`` and the other keywords go to ``HKernelLayer``.

        Args:
            equation: Keras's einsum equation, input then kernel, e.g. ``'bpc,pq->bqc'``.
            output_shape: The output's shape without the batch axis (None: inferred).
            activation: None, ``'linear'`` or ``'relu'``.
            bias_axes: Output letters the bias spans, or None for no bias.
            parallel_factor: Kernel instances the firmware builds over the positions
                only the input has: None (the default) one per position, an int that
                many, reused.
        """
        kwargs.pop("use_bias", None)  # given by bias_axes (get_config writes both)
        self.init_parallel_factor(parallel_factor)
        super().__init__(activation=activation, use_bias=bias_axes is not None, **kwargs)
        check_no_direct_sum(f"HEinsumDense '{self.name}'", equation, ("input", "kernel"))
        self.equation = equation
        if isinstance(output_shape, (int, np.integer)):
            output_shape = (int(output_shape),)
        self.partial_output_shape = tuple(None if d is None else int(d) for d in output_shape)
        self.bias_axes = bias_axes

    def _shapes(self, input_shape) -> tuple:
        """Keras's kernel and bias shapes and fan axes, with the output shape from
        ``output_shape_of`` (Keras 3.15 misplaces ``...`` axes of rank > 3 inputs)."""
        kernel_shape, bias_shape, _, input_axes, output_axes = _analyze_einsum_string(
            self.equation, self.bias_axes, tuple(input_shape), self.partial_output_shape
        )
        output_shape = output_shape_of(self.equation, input_shape, kernel_shape)
        return kernel_shape, bias_shape, output_shape, input_axes, output_axes

    def compute_output_shape(self, input_shape):
        return self._shapes(input_shape)[2]

    def build(self, input_shape) -> None:
        kernel_shape, bias_shape, output_shape, input_axes, output_axes = self._shapes(input_shape)
        self.input_element_shape = tuple(int(d) for d in input_shape[1:])
        self.output_element_shape = tuple(int(d) for d in output_shape[1:])
        data, kernel, _ = split_equation(without_batch(self.equation), "HEinsumDense")
        multiplied = int(np.prod(kernel_shape, dtype=np.int64))
        free_of_kernel = set(kernel) - set(data)
        for letter in free_of_kernel:  # axes only the kernel has
            multiplied //= int(kernel_shape[kernel.index(letter)])
        self.set_positions(
            int(np.prod(self.input_element_shape, dtype=np.int64)) // multiplied,
            f" ({self.equation!r} on input shape {tuple(input_shape)})",
        )
        initializer = self.kernel_initializer
        if isinstance(initializer, keras.initializers.VarianceScaling):
            config = initializer.get_config()
            if config.get("input_axes") is None or config.get("output_axes") is None:
                # As Keras's EinsumDense: fans from the contracted and produced axes.
                config.update(seed=initializer.seed, input_axes=input_axes)
                config["output_axes"] = output_axes
                self.kernel_initializer = type(initializer).from_config(config)
        self.build_kernel(tuple(kernel_shape), tuple(bias_shape) if bias_shape else None)
        self.kernel_initializer = initializer
        super().build(input_shape)

    def forward(self, inputs, training=None):
        kernel = self.quantized_kernel(training)
        with full_precision():
            outputs = ops.einsum(self.equation, inputs, kernel)
        return self.finish_forward(outputs, training)

    def quantized_bias(self, training=None):
        """The bias broadcast to the output, each element on its own output grid."""
        if not self.use_bias:
            return None
        f = ops.stop_gradient(
            self.pre_activation_quantizer.effective_fractional_bits(bool(training))
        )
        shape = (1,) + self.output_element_shape
        bias = ops.broadcast_to(self.bias, shape)
        scale = pow2(ops.broadcast_to(f, shape))
        q = round_half_up(bias * scale) / scale
        return ops.stop_gradient(q) + (bias - ops.stop_gradient(bias))

    def deployed_bias(self) -> np.ndarray | None:
        """``quantized_bias()`` at inference on the host: one value per output element."""
        if not self.use_bias:
            return None
        shape = (1,) + self.output_element_shape
        f = np.round(self.pre_activation_quantizer.fractional_bits.numpy().astype(np.float32))
        bias = np.broadcast_to(self.bias.numpy(), shape)
        return round_to_grid_host(bias, np.broadcast_to(f, shape), floor=False)[0]

    def bops_surrogate(self):
        kernel_bits = self.kernel_quantizer.surrogate_bitwidth(self.kernel)
        input_bits = ops.reshape(self.input_bitwidth(), self.input_element_shape)
        per_output = ops.einsum(without_batch(self.equation), input_bits, kernel_bits)
        return ops.sum(per_output) * self.bops_scale

    def product_map(self, input_bits, kernel_bits):
        input_bits = ops.reshape(input_bits, self.input_element_shape)
        return ops.einsum(without_batch(self.equation), input_bits, kernel_bits)

    def compute_exact_bops(self) -> float:
        kernel = self.deployed_kernel()
        kernel_bits = bit_span(kernel, self.kernel_quantizer.rounded_fractional_bits())
        input_bits = self.exact_input_bitwidth().reshape(self.input_element_shape)
        per_output = np.einsum(
            without_batch(self.equation), input_bits.astype(np.float64), kernel_bits
        )
        return float(np.sum(per_output)) * self.bops_scale

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            equation=self.equation,
            output_shape=self.partial_output_shape,
            bias_axes=self.bias_axes,
            parallel_factor=self.parallel_factor_config,
        )
        return config
