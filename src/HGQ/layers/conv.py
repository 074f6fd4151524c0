"""HConv1D / HConv2D: convolutions with per-weight kernel and per-element output bitwidths.

A convolution is a Dense layer whose kernel is reused at every output position, so it
quantizes exactly like ``HDense``: each kernel weight has its own fractional bits, each
output element (position and channel) its own format, and the bias is rounded onto the
output grid so the deployed sum rounds the same way. Only ``channels_last`` is supported
because that is the layout hls4ml's ``io_parallel`` convolutions (and the per-element
output formats) are written for. Dilated convolutions are refused: hls4ml 1.3 does
not convert them, and a model that cannot be deployed should fail before training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import keras
import numpy as np
from keras import ops

from HGQ.fixed_point import bit_span
from HGQ.full_precision import full_precision
from HGQ.layers.base import HKernelLayer
from HGQ.layers.parallelism import ParallelFactorMixin
from HGQ.windows import conv_output_length, same_padding


def _as_tuple(value: Any, rank: int, name: str, layer_kind: str) -> tuple[int, ...]:
    """``value`` (an int or ``rank`` ints) as a tuple of ``rank`` positive ints."""
    if isinstance(value, (int, np.integer)):
        values = (int(value),) * rank
    else:
        values = tuple(int(v) for v in value)
    if len(values) != rank or any(v < 1 for v in values):
        raise ValueError(
            f"{layer_kind}: {name} must be a positive int or {rank} positive ints, got {value!r}."
        )
    return values


def correlated_bitwidth_sum(
    input_bits: np.ndarray,
    kernel_bits: np.ndarray,
    strides: Sequence[int],
    padding: str,
) -> int:
    """``sum_{pos, cout} sum_{offset, cin} bw_in[pos*s + offset - pad, cin] * bw_k[...]``.

    The operand-width products of every multiplication of one inference, in integers.
    Padded positions hold no operand (width 0). Written with numpy slicing rather than
    a convolution routine so that it cross-checks the training-time surrogate.
    """
    input_bits = np.asarray(input_bits, np.int64)
    kernel_bits = np.asarray(kernel_bits, np.int64)
    kernel_size = kernel_bits.shape[:-2]
    spatial = input_bits.shape[:-1]
    pads = [(0, 0)] * len(spatial)
    if padding == "same":
        pads = [
            same_padding(n, k, s) for n, k, s in zip(spatial, kernel_size, strides, strict=True)
        ]
    padded = np.pad(input_bits, pads + [(0, 0)])
    out_shape = [
        conv_output_length(n, k, s, padding)
        for n, k, s in zip(spatial, kernel_size, strides, strict=True)
    ]
    # Each kernel offset meets a strided window of the (padded) input at every position.
    weight_bits_per_cin = kernel_bits.sum(axis=-1)  # kernel_size + (cin,)
    total = 0
    for offset in np.ndindex(*kernel_size):
        window = tuple(
            slice(o, o + (n - 1) * s + 1, s)
            for o, s, n in zip(offset, strides, out_shape, strict=True)
        )
        input_sum = padded[window].reshape(-1, padded.shape[-1]).sum(axis=0)  # (cin,)
        total += int(np.dot(input_sum, weight_bits_per_cin[offset]))
    return total


class HConvBase(ParallelFactorMixin, HKernelLayer):
    """Shared code of ``HConv1D`` and ``HConv2D`` (``rank`` spatial axes, channels last).

    EBOPs: every multiplication of one inference costs ``bw_in * bw_kernel`` (the
    correlation of the input bitwidth map with the kernel's, zero padded), scaled by
    ``parallel_factor / positions`` (the output positions): the default (None) prices one kernel
    instance per output position, the fully unrolled convolution that ``HGQ.rtl`` and
    hls4ml ``io_parallel`` build; an int prices that many instances, reused over the
    positions (hls4ml's ``ParallelizationFactor``; see ``HGQ.layers.parallelism``).
    """

    rank: ClassVar[int] = 0

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = 1,
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate: int | Sequence[int] = 1,
        groups: int = 1,
        activation: Any = None,
        use_bias: bool = True,
        parallel_factor: int | None = None,
        **kwargs,
    ):
        """``kernel_initializer`` and the other Conv keywords go to ``HKernelLayer``.

        Args:
            filters: Output channels.
            kernel_size: The window, an int or one per spatial axis.
            strides: The step, an int or one per spatial axis.
            padding: ``'valid'`` or ``'same'``.
            data_format: ``'channels_last'`` only.
            dilation_rate: 1 only (hls4ml converts undilated convolutions).
            groups: 1 only.
            activation: None, ``'linear'`` or ``'relu'``.
            use_bias: Whether to add a bias.
            parallel_factor: Kernel instances the firmware builds: None (the default)
                one per output position, an int that many, reused over the positions.
        """
        kind = type(self).__name__
        # Validate before Layer.__init__ so a bad call leaves nothing half-built.
        resolved_format = data_format or keras.config.image_data_format()
        if resolved_format != "channels_last":
            origin = (
                f"data_format={data_format!r}"
                if data_format
                else f"keras.config.image_data_format() is {resolved_format!r}"
            )
            raise ValueError(
                f"{kind} supports only data_format='channels_last' ({origin}): per-element "
                "bitwidths and the hls4ml io_parallel convolution assume channels last. "
                "Move the channel axis of your data last (e.g. np.moveaxis(x, 1, -1)) and "
                "pass data_format='channels_last'."
            )
        padding_name = str(padding).lower()
        if padding_name not in ("valid", "same"):
            raise ValueError(
                f"{kind} supports padding='valid' or 'same', got {padding!r}. For causal "
                "padding, pad the input data on the left yourself and use padding='valid'."
            )
        if int(groups) != 1:
            raise ValueError(
                f"{kind} supports only groups=1 (got {groups!r}): grouped convolutions are "
                "not implemented. Split the channels into separate HGQ convolutions instead."
            )
        self.init_parallel_factor(parallel_factor)
        filters_int = int(filters)
        if filters_int < 1:
            raise ValueError(f"{kind}: filters must be a positive int, got {filters!r}.")
        kernel_tuple = _as_tuple(kernel_size, self.rank, "kernel_size", kind)
        strides_tuple = _as_tuple(strides, self.rank, "strides", kind)
        dilation_tuple = _as_tuple(dilation_rate, self.rank, "dilation_rate", kind)
        if max(dilation_tuple) > 1:
            raise ValueError(
                f"{kind}: dilation_rate={dilation_rate!r} is not supported: hls4ml 1.3 "
                "converts undilated convolutions only, so the model could not be deployed. "
                "Use dilation_rate=1 (for a wider receptive field, stack convolutions or "
                "pool first)."
            )

        super().__init__(activation=activation, use_bias=use_bias, **kwargs)
        self.filters = filters_int
        self.kernel_size = kernel_tuple
        self.strides = strides_tuple
        self.padding = padding_name
        self.data_format = "channels_last"
        self.dilation_rate = dilation_tuple  # Keras's keyword; always ones here
        self.groups = 1

    # ------------------------------------------------------------------ shape
    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != self.rank + 2:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects inputs of rank {self.rank + 2} "
                f"(batch, {self.rank} spatial axes, channels), got shape {input_shape}."
            )
        spatial = tuple(
            conv_output_length(n, k, s, self.padding)
            for n, k, s in zip(input_shape[1:-1], self.kernel_size, self.strides, strict=True)
        )
        return (input_shape[0], *spatial, self.filters)

    def build(self, input_shape) -> None:
        input_shape = tuple(input_shape)
        output_shape = self.compute_output_shape(input_shape)
        kind = type(self).__name__
        if any(n is None for n in input_shape[1:]):
            raise ValueError(
                f"{kind} '{self.name}' needs a fully known input sample shape (got "
                f"{input_shape}): its output bitwidths are per element and its EBOPs depend "
                "on the number of positions. Give keras.Input the full shape."
            )
        if any(n < 1 for n in output_shape[1:-1]):
            raise ValueError(
                f"{kind} '{self.name}': input shape {input_shape} is too small for "
                f"kernel_size={self.kernel_size} with padding='valid'."
            )
        self.set_positions(math.prod(output_shape[1:-1]), f" (output shape {output_shape})")
        self.build_kernel((*self.kernel_size, int(input_shape[-1]), self.filters))
        super().build(input_shape)

    # ---------------------------------------------------------------- compute
    def convolve(self, inputs, kernel):
        """The layer's convolution geometry applied to ``inputs`` with ``kernel``."""
        with full_precision():
            return ops.conv(
                inputs,
                kernel,
                strides=self.strides,
                padding=self.padding,
                data_format="channels_last",
            )

    def forward(self, inputs, training=None):
        return self.finish_forward(self.convolve(inputs, self.quantized_kernel(training)), training)

    # ------------------------------------------------------------------ EBOPs
    def surrogate_kernel_values(self):
        """The float kernel whose magnitudes give the surrogate's integer bits."""
        return self.kernel

    def bops_surrogate(self):
        kernel_bits = self.kernel_quantizer.surrogate_bitwidth(self.surrogate_kernel_values())
        input_bits = ops.convert_to_tensor(self.input_bitwidth())
        input_bits = ops.cast(input_bits, kernel_bits.dtype)
        per_inference = ops.sum(self.convolve(input_bits[None], kernel_bits))
        return per_inference * self.bops_scale

    def product_map(self, input_bits, kernel_bits):
        return self.convolve(ops.convert_to_tensor(input_bits)[None], kernel_bits)[0]

    def compute_exact_bops(self) -> float:
        kernel = self.deployed_kernel()
        kernel_bits = bit_span(kernel, self.kernel_quantizer.rounded_fractional_bits())
        input_bits = self.exact_input_bitwidth()
        total = correlated_bitwidth_sum(input_bits, kernel_bits, self.strides, self.padding)
        return float(total * self.bops_scale)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=list(self.kernel_size),
            strides=list(self.strides),
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=list(self.dilation_rate),
            groups=self.groups,
            parallel_factor=self.parallel_factor_config,
        )
        return config


@keras.saving.register_keras_serializable(package="HGQ")
class HConv1D(HConvBase):
    """``keras.layers.Conv1D`` (channels last) with heterogeneous quantization."""

    rank = 1


@keras.saving.register_keras_serializable(package="HGQ")
class HConv2D(HConvBase):
    """``keras.layers.Conv2D`` (channels last) with heterogeneous quantization."""

    rank = 2
