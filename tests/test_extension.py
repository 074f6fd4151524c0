"""User-defined layers through the documented extension bases (README example)."""

import keras
import numpy as np
import pytest
from keras import ops

from HGQ import HBaseLayer, HQuantize, PLayerBase
from HGQ.bops import compute_bops
from HGQ.fixed_point import bit_span


class HScale(HBaseLayer):
    """Multiplies every feature by its own trainable, quantized weight."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=input_shape[1:], initializer="ones")
        self.kernel_quantizer = self.make_kernel_quantizer(tuple(input_shape[1:]))
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def forward(self, inputs, training=None):
        return inputs * self.kernel_quantizer(self.scale, training=training)

    def bops_surrogate(self):
        bits = self.kernel_quantizer.surrogate_bitwidth(self.scale)
        return ops.sum(self.input_bitwidth() * bits)

    def compute_exact_bops(self):
        scale = ops.convert_to_numpy(self.kernel_quantizer(self.scale, training=False))
        bits = bit_span(scale, self.kernel_quantizer.rounded_fractional_bits())
        return float(np.sum(self.exact_input_bitwidth() * bits))


class PReverse(PLayerBase):
    """Reverses the feature axis; bitwidths move with their values."""

    def call(self, inputs):
        return ops.flip(inputs, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def transform_bitwidth(self, bitwidth):
        return ops.flip(bitwidth, axis=-1)  # not [..., ::-1]: torch has no negative steps


@pytest.mark.smoke
def test_user_defined_h_and_p_layers_train_and_calibrate(rng):
    inp = keras.Input((3,))
    q = HQuantize(name="inp_q", pre_activation_quantizer_config={"init_bw": 2})
    rev = PReverse()
    scale = HScale(bops_reg_factor=1e-4, kernel_quantizer_config={"init_bw": 2})
    model = keras.Model(inp, scale(rev(q(inp))))
    x = rng.normal(size=(64, 3)).astype("float32")
    model.compile("adam", "mse")
    model.fit(x, x[:, ::-1], epochs=1, verbose=0)
    assert float(scale.bops.numpy()) > 0  # the training surrogate ran

    scale.scale.assign(np.array([1.0, 0.75, 0.0], "float32"))
    total = compute_bops(model, x, verbose=False)
    bw_in = q.exact_output_bitwidth()[::-1]
    np.testing.assert_array_equal(rev.exact_output_bitwidth(), bw_in)
    # 1.0 -> 1 bit, 0.75 -> 2 bits (0b11), 0 -> 0 bits
    assert total == bw_in[0] * 1 + bw_in[1] * 2
