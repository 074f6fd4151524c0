"""Dense and convolution layers with a batch normalisation folded into their weights.

In firmware a batch normalisation after a linear layer costs nothing only if it is
folded into that layer's kernel and bias. Quantizing the unfolded kernel and folding
afterwards would deploy weights that were never quantized (and so never trained at
their bitwidths). These layers therefore fold first and quantize the *folded* kernel
and bias, so what is trained, what is computed at inference and what is deployed
(``quantized_kernel()``, ``quantized_bias()``) are the same numbers:

    scale = gamma / sqrt(var + epsilon)
    W'    = W * scale                      (per output channel)
    b'    = beta + (b - mean) * scale

with ``(mean, var)`` the statistics of the current batch while training and the
moving statistics at inference, exactly as ``keras.layers.BatchNormalization`` uses
them. The batch statistics need the float pre-normalisation output ``x @ W (+ b)``,
an extra matmul/convolution in training only.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from HGQ.full_precision import full_precision
from HGQ.layers.conv import HConv1D, HConv2D
from HGQ.layers.dense import HDense


class FusedBatchNormMixin:
    """Batch-normalisation state and folding, shared by the dense and conv variants.

    A host class provides ``kernel``, ``use_bias``/``bias``, ``kernel_quantizer``,
    ``quantize_bias`` and ``linear(inputs, kernel)`` (its matmul or convolution).
    """

    def __init__(
        self,
        *args,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer: Any = "zeros",
        gamma_initializer: Any = "ones",
        moving_mean_initializer: Any = "zeros",
        moving_variance_initializer: Any = "ones",
        beta_regularizer: Any = None,
        gamma_regularizer: Any = None,
        beta_constraint: Any = None,
        gamma_constraint: Any = None,
        **kwargs,
    ):
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(
                f"{type(self).__name__}: momentum must be in [0, 1], got {momentum!r}."
            )
        if float(epsilon) <= 0.0:
            raise ValueError(f"{type(self).__name__}: epsilon must be > 0, got {epsilon!r}.")
        super().__init__(*args, **kwargs)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.moving_mean_initializer = keras.initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = keras.initializers.get(moving_variance_initializer)
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.gamma_regularizer = keras.regularizers.get(gamma_regularizer)
        self.beta_constraint = keras.constraints.get(beta_constraint)
        self.gamma_constraint = keras.constraints.get(gamma_constraint)
        # The folded bias (beta - mean * scale) exists even without use_bias/center, so
        # it can always absorb the half-LSB offset of rounding ('auto').
        self.output_absorbs_rounding = True
        object.__setattr__(self, "_training_folded_kernel", None)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        channels = (int(self.kernel.shape[-1]),)
        if self.scale:
            self.gamma = self.add_weight(
                name="gamma",
                shape=channels,
                initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer,
                constraint=self.gamma_constraint,
            )
        if self.center:
            self.beta = self.add_weight(
                name="beta",
                shape=channels,
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
            )
        self.moving_mean = self.add_weight(
            name="moving_mean",
            shape=channels,
            initializer=self.moving_mean_initializer,
            trainable=False,
        )
        self.moving_variance = self.add_weight(
            name="moving_variance",
            shape=channels,
            initializer=self.moving_variance_initializer,
            trainable=False,
        )

    # ---------------------------------------------------------------- folding
    def _batch_statistics(self, inputs):
        """Mean and (biased) variance per channel of the float ``x @ W (+ b)``."""
        outputs = self.linear(inputs, self.kernel)
        if self.use_bias:
            outputs = outputs + self.bias
        axes = list(range(len(outputs.shape) - 1))
        return ops.moments(outputs, axes=axes)

    def _fold(self, mean, variance):
        """Folded float kernel and bias for the given statistics."""
        scale = ops.rsqrt(variance + self.epsilon)
        if self.scale:
            scale = scale * self.gamma
        kernel = self.kernel * scale
        offset = -mean
        if self.use_bias:
            offset = offset + self.bias
        bias = offset * scale
        if self.center:
            bias = bias + self.beta
        return kernel, bias

    def _statistics(self, inputs, training):
        """Batch statistics (and a moving-average update) in training, else the moving ones."""
        if training and self.trainable:
            mean, variance = self._batch_statistics(inputs)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(
                self.moving_variance * momentum + variance * (1.0 - momentum)
            )
            return mean, variance
        return (
            ops.convert_to_tensor(self.moving_mean),
            ops.convert_to_tensor(self.moving_variance),
        )

    def folded_kernel_and_bias(self):
        """Float folded kernel and bias with the moving statistics (before quantization)."""
        return self._fold(
            ops.convert_to_tensor(self.moving_mean), ops.convert_to_tensor(self.moving_variance)
        )

    def quantized_kernel(self, training=None):
        """The folded kernel, quantized, with the moving statistics: what is deployed.

        Batch statistics need a batch, so this always folds with the moving ones;
        ``training`` only selects the quantizer's mode.
        """
        kernel, _ = self.folded_kernel_and_bias()
        return self.kernel_quantizer(kernel, training=training)

    def quantized_bias(self, training=None):
        """The folded bias on the output's fractional grid (always present)."""
        _, bias = self.folded_kernel_and_bias()
        return self.quantize_bias(bias, training)

    def deployed_kernel(self) -> np.ndarray:
        """The folded quantized kernel for conversion (the float fold runs on the device,
        as in inference, so the deployed bits are the computed ones)."""
        return np.asarray(ops.convert_to_numpy(self.quantized_kernel(training=False)))

    def deployed_bias(self) -> np.ndarray:
        return np.asarray(ops.convert_to_numpy(self.quantized_bias(training=False)))

    def hgq_forward(self, inputs, training=None):
        # Named hgq_forward, not forward: HBaseLayer renames a class's own `forward`
        # only on its subclasses, and this mixin is not one, so `forward` here would
        # lose to the host's (already renamed) one in the MRO.
        kernel, bias = self._fold(*self._statistics(inputs, training))
        if training:
            # bops_surrogate (called right after forward in the same trace) prices the
            # kernel actually used in this step.
            object.__setattr__(self, "_training_folded_kernel", kernel)
        outputs = self.linear(inputs, self.kernel_quantizer(kernel, training=training))
        outputs = outputs + self.quantize_bias(bias, training)
        if self.activation_name == "relu":
            outputs = ops.relu(outputs)  # after the normalisation, as in Dense->BN->ReLU
        return outputs

    def varies_kernel_values(self):
        """The folded kernel (moving statistics): it has the zeros of the deployed one."""
        kernel, _ = self.folded_kernel_and_bias()
        return kernel

    def surrogate_kernel_values(self):
        """The folded kernel of the current training step (moving statistics otherwise)."""
        kernel = self._training_folded_kernel
        object.__setattr__(self, "_training_folded_kernel", None)
        if kernel is None:
            kernel, _ = self.folded_kernel_and_bias()
        return kernel

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            momentum=self.momentum,
            epsilon=self.epsilon,
            center=self.center,
            scale=self.scale,
            beta_initializer=keras.initializers.serialize(self.beta_initializer),
            gamma_initializer=keras.initializers.serialize(self.gamma_initializer),
            moving_mean_initializer=keras.initializers.serialize(self.moving_mean_initializer),
            moving_variance_initializer=keras.initializers.serialize(
                self.moving_variance_initializer
            ),
            beta_regularizer=keras.regularizers.serialize(self.beta_regularizer),
            gamma_regularizer=keras.regularizers.serialize(self.gamma_regularizer),
            beta_constraint=keras.constraints.serialize(self.beta_constraint),
            gamma_constraint=keras.constraints.serialize(self.gamma_constraint),
        )
        return config


@keras.saving.register_keras_serializable(package="HGQ")
class HDenseBatchNorm(FusedBatchNormMixin, HDense):
    """``HDense`` followed by a batch normalisation, folded into the quantized weights.

    ``activation='relu'`` is applied after the normalisation. EBOPs are those of an
    ``HDense`` with the folded quantized kernel.
    """

    def linear(self, inputs, kernel):
        with full_precision():
            return ops.matmul(inputs, kernel)

    def bops_surrogate(self):
        kernel_bits = self.kernel_quantizer.surrogate_bitwidth(self.surrogate_kernel_values())
        with full_precision():
            return ops.sum(ops.matmul(self.input_bitwidth(), kernel_bits)) * self.bops_scale


@keras.saving.register_keras_serializable(package="HGQ")
class HConv1DBatchNorm(FusedBatchNormMixin, HConv1D):
    """``HConv1D`` followed by a batch normalisation, folded into the quantized weights."""

    def linear(self, inputs, kernel):
        return self.convolve(inputs, kernel)


@keras.saving.register_keras_serializable(package="HGQ")
class HConv2DBatchNorm(FusedBatchNormMixin, HConv2D):
    """``HConv2D`` followed by a batch normalisation, folded into the quantized weights."""

    def linear(self, inputs, kernel):
        return self.convolve(inputs, kernel)
