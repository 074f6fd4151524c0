"""The host-side (numpy) weights used for conversion equal the layer's own, bit for bit."""

import keras
import numpy as np
import pytest

from HGQ import HDense, HQuantize


@pytest.mark.smoke
@pytest.mark.parametrize("strategy", ["floor", "standard_round", "stochastic_round", "auto"])
def test_deployed_kernel_and_bias_equal_inference_tensors(strategy, rng):
    model = keras.Sequential(
        [
            keras.Input((16,)),
            HQuantize(name="inp_q"),
            HDense(12, name="d", kernel_quantizer_config={"rnd_strategy": strategy}),
        ]
    )
    layer = model.get_layer("d")
    f_kernel = rng.integers(-3, 12, size=(16, 12)).astype("float32")
    layer.kernel_quantizer.fractional_bits.assign(f_kernel)
    layer.pre_activation_quantizer.fractional_bits.assign(
        rng.integers(-2, 9, size=(1, 12)).astype("float32")
    )
    # Exact ties, values just below ties, large and tiny magnitudes.
    ties = (rng.integers(-64, 64, size=(16, 12)) + 0.5) * 2.0**-f_kernel
    below = np.nextafter(ties.astype("float32"), np.float32(-np.inf))
    kernel = np.where(rng.random((16, 12)) < 0.5, ties, below).astype("float32")
    kernel[0] = rng.normal(scale=1e4, size=12)
    kernel[1] = rng.normal(scale=1e-6, size=12)
    layer.kernel.assign(kernel)
    layer.bias.assign(rng.normal(scale=3, size=12).astype("float32"))

    expected_kernel = keras.ops.convert_to_numpy(layer.quantized_kernel(training=False))
    expected_bias = keras.ops.convert_to_numpy(layer.quantized_bias(training=False))
    np.testing.assert_array_equal(layer.deployed_kernel(), expected_kernel)
    np.testing.assert_array_equal(layer.deployed_bias(), expected_bias)
    assert layer.deployed_kernel().dtype == np.float32
