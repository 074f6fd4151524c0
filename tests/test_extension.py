"""User-defined layers through the documented extension bases (README example), and
their deployment from one registration: hls4ml's C simulation and the RTL path's
emulation equal Keras on every output, in and far outside the calibrated range."""

import hls_support as hs
import keras
import numpy as np
import pytest
from keras import ops

from HGQ import HBaseLayer, HDense, HQuantize, PFlatten, PLayerBase
from HGQ.bops import compute_bops
from HGQ.deploy import register_deployment, steps
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


def describe_scale(layer, tensors):
    """HScale deploys as one step: its input times the deployed scales."""
    scale = ops.convert_to_numpy(layer.kernel_quantizer(layer.scale, training=False))
    return [
        steps.Scale(
            name=layer.name,
            inputs=tensors.inputs,
            output=tensors.output,
            shape=tensors.output_shape,
            factors=scale,
        )
    ]


register_deployment(HScale, describe_scale)


def scaled_model(rng):
    """HQuantize -> HScale (a 2-D input: the scales differ per element) -> HDense."""
    inp = keras.Input((3, 4))
    x = HQuantize(name="inp_q")(inp)
    x = HScale(name="scale")(x)
    model = keras.Model(inp, HDense(2, name="dense")(PFlatten()(x)))
    hs.scramble_bitwidths(model, rng, 0, 5)
    scales = rng.normal(size=(3, 4)).astype("float32") * 2
    scales[0, 0] = 0.0  # a pruned scale
    model.get_layer("scale").scale.assign(scales)
    return model


def probes(rng, x_cal):
    """Calibration data, far outside it, and exact ties of the input format."""
    far = hs.out_of_range(x_cal, rng)
    ties = (np.round(x_cal * 8) + 0.5) / 8
    return np.concatenate([x_cal, far, ties, np.zeros_like(x_cal[:4])]).astype("float32")


@pytest.mark.slow
def test_one_registration_deploys_through_hls4ml_bit_exactly(tmp_path, rng):
    model = scaled_model(rng)
    x_cal = rng.normal(size=(256, 3, 4)).astype("float32")
    model_hls = hs.convert_compiled(model, x_cal, tmp_path / "prj")
    differ, total = hs.mismatches(model, model_hls, probes(rng, x_cal))
    assert (differ, total) == (0, 2 * (256 * 3 + 4))


@pytest.mark.rtl
def test_one_registration_deploys_to_rtl_bit_exactly(tmp_path, rng):
    pytest.importorskip("alkaid")
    from HGQ.rtl import convert_to_rtl

    model = scaled_model(rng)
    x_cal = rng.normal(size=(256, 3, 4)).astype("float32")
    compute_bops(model, x_cal, verbose=False)
    project = convert_to_rtl(model, tmp_path / "rtl", write=False)
    x = probes(rng, x_cal)
    expected = model.predict(x, verbose=0)
    got = np.asarray(project.emulate(x)).reshape(expected.shape)
    assert np.array_equal(got, expected)
