"""HEinsumDense: the equation of keras.layers.EinsumDense with per-element bitwidths.

Inference is compared with an exact rational einsum (tests/reference.py), the EBOPs
with counts worked out by hand, and the conversion with hls4ml's C simulation on every
output, inside and far outside the calibrated range.
"""

import hls_support as hs
import keras
import numpy as np
import pytest
import reference as ref
from randomise import randomise_bits
from round_trip import reload_and_compare

from HGQ import HEinsumDense, HQuantize, Signature, compute_bops

#: (input shape, equation, output_shape, bias_axes): a Dense per particle, a Dense over
#: the particle axis (an MLP-Mixer's token mixing), head-split projections, ``...``.
CASES = [
    ((4, 3), "abc,cd->abd", (4, 5), "d"),
    ((4, 3), "abc,bd->adc", (2, 3), "dc"),
    ((4, 3), "abc,cde->abde", (4, 2, 2), "de"),
    ((4, 3), "...b,bc->...c", (2,), None),
]


def einsum_model(rng, shape, equation, output_shape, bias_axes):
    model = keras.Sequential(
        [
            keras.Input(shape),
            HQuantize(name="inp_q"),
            HEinsumDense(equation, output_shape, bias_axes=bias_axes, activation="relu", name="e1"),
            HEinsumDense("...c,cd->...d", 2, bias_axes="d", name="e2"),
        ]
    )
    for layer in model.layers:
        randomise_bits(layer.pre_activation_quantizer, rng, 0, 4)
        if isinstance(layer, HEinsumDense):
            randomise_bits(layer.kernel_quantizer, rng, 0, 4)
            if layer.use_bias:
                layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    return model


def reference_forward(model, x, formats=None):
    """Exact forward pass: ``np.einsum`` on Fractions; with ``formats`` wrap, else record.

    Each bias element is broadcast to the output and rounded onto its own output grid.
    """
    values = ref.to_fractions(x)
    seen = {}
    for layer in model.layers:
        f_out = np.round(layer.pre_activation_quantizer.fractional_bits.numpy()[0]).astype(int)
        if isinstance(layer, HEinsumDense):
            f_kernel = np.round(layer.kernel_quantizer.fractional_bits.numpy()).astype(int)
            kernel = ref.quantize_array(ref.to_fractions(layer.kernel.numpy()), f_kernel)
            values = np.einsum(layer.equation, values, kernel)
            if layer.use_bias:
                bias = np.broadcast_to(ref.to_fractions(layer.bias.numpy()), values.shape[1:])
                values = values + ref.quantize_array(bias, f_out)[None]
            if layer.activation_name == "relu":
                values = np.vectorize(lambda v: max(v, 0), otypes=[object])(values)
        values = ref.quantize_array(values, f_out[None])
        if formats is None:
            seen[layer.name] = ref.calibrate(values, f_out)
        else:
            values = ref.wrap_array(values, *formats[layer.name], f_out)
    return values, seen


@pytest.mark.smoke
@pytest.mark.parametrize("shape, equation, output_shape, bias_axes", CASES)
def test_inference_equals_the_rational_reference_in_and_out_of_range(
    shape, equation, output_shape, bias_axes, rng
):
    model = einsum_model(rng, shape, equation, output_shape, bias_axes)
    x_cal = rng.normal(size=(60, *shape)).astype("float32")
    compute_bops(model, x_cal, verbose=False)
    _, formats = reference_forward(model, x_cal)
    for layer in model.layers:
        k, i, _ = layer.pre_activation_quantizer.exact_format()
        np.testing.assert_array_equal(k, formats[layer.name][0], err_msg=layer.name)
        np.testing.assert_array_equal(i, formats[layer.name][1], err_msg=layer.name)
    x_test = np.concatenate([x_cal[:15], 30 * rng.normal(size=(15, *shape))]).astype("float32")
    expected, _ = reference_forward(model, x_test, formats)
    assert np.array_equal(model.predict(x_test, verbose=0), expected.astype(np.float64))
    unwrapped, _ = reference_forward(model, x_test[15:])
    assert not np.array_equal(unwrapped.astype(np.float64), expected[15:])  # it overflowed


def mixer_layer(parallel_factor):
    """Two particles of two unsigned 3-bit features (k=0, i=1, f=2): every input is 3
    bits; a kernel over the particle axis, [[0.75], [1.25]] on a 1/4 grid (spans 2, 3)."""
    inp = keras.Input((2, 2))
    layer = HEinsumDense("abc,bd->adc", (1, 2), parallel_factor=parallel_factor)
    model = keras.Model(inp, layer(Signature(keep_negative=0, bits=3, int_bits=1)(inp)))
    layer.kernel.assign(np.array([[0.75], [1.25]], "float32"))
    fb = layer.kernel_quantizer.fractional_bits
    fb.assign(np.full(fb.shape, 2.0, "float32"))
    return model


def test_ebops_by_hand_with_parallel_factor():
    # out[d, c] = sum_b in[b, c] k[b, d]: per feature c, 3*2 + 3*3 = 15; two features: 30.
    # The kernel is applied at 2 positions (c): parallel_factor 1 prices one instance;
    # the default (None) one per position.
    x = np.array([[[0.25, 1.75], [1.0, 0.0]]], "float32")
    for parallel_factor, expected in ((1, 15.0), (2, 30.0), (None, 30.0)):
        model = mixer_layer(parallel_factor)
        assert compute_bops(model, x, verbose=False) == expected


def test_bias_is_rounded_per_output_element(rng):
    # One bias entry per feature c, shared by the particle axis d of the output; each
    # output element rounds it onto its own grid: 0.3 -> 0.25 at f=2, 0.5 at f=1, 0 at f=0.
    inp = keras.Input((2, 2))
    layer = HEinsumDense("abc,bd->adc", (3, 2), bias_axes="c", use_bias=True)
    model = keras.Model(inp, layer(HQuantize()(inp)))
    layer.bias.assign(np.array([0.3, -0.3], "float32"))
    layer.kernel.assign(np.zeros((2, 3), "float32"))
    f = layer.pre_activation_quantizer.fractional_bits
    f.assign(np.array([[[2, 2], [1, 1], [0, 0]]], "float32").reshape(f.shape))
    compute_bops(model, rng.normal(size=(8, 2, 2)), verbose=False)
    got = model.predict(np.zeros((1, 2, 2), "float32"), verbose=0)[0]
    np.testing.assert_array_equal(got, [[0.25, -0.25], [0.5, -0.5], [0.0, 0.0]])
    np.testing.assert_array_equal(layer.deployed_bias(), got)


def test_round_trip_and_errors(tmp_path, rng):
    model = einsum_model(rng, *CASES[2])
    model.get_layer("e1").parallel_factor = 4
    x = rng.normal(size=(32, 4, 3)).astype("float32")
    bops = compute_bops(model, x, verbose=False)
    loaded = reload_and_compare(model, x, tmp_path, bops)
    assert loaded.get_layer("e1").parallel_factor == 4
    assert loaded.get_layer("e1").get_config()["equation"] == "abc,cde->abde"
    with pytest.raises(ValueError, match="axis 'c' of the input is summed without"):
        HEinsumDense("abc,bd->abd", (4, 2))
    with pytest.raises(ValueError, match="axis 'e' of the kernel is summed without"):
        HEinsumDense("abc,ce->ab", (4,))
    with pytest.raises(ValueError, match="equation must have the form"):
        HEinsumDense("abc->ab", (4,))
    with pytest.raises(ValueError, match="parallel_factor=5 exceeds the 4 position"):
        too_parallel = HEinsumDense("abc,cd->abd", (4, 2), parallel_factor=5)
        keras.Sequential([keras.Input((4, 3)), HQuantize(), too_parallel])
    with pytest.raises(ValueError, match="supports only activation='relu' or 'linear'"):
        HEinsumDense("ab,bc->ac", 3, activation="tanh")


@pytest.mark.slow
@pytest.mark.parametrize("shape, equation, output_shape, bias_axes", CASES)
def test_conversion_is_bit_exact(shape, equation, output_shape, bias_axes, tmp_path, rng):
    model = einsum_model(rng, shape, equation, output_shape, bias_axes)
    x = rng.normal(scale=2, size=(256, *shape)).astype("float32")
    y = model.predict(x, verbose=0)
    hs.train_briefly(model, x, rng.normal(size=y.shape).astype("float32"))
    hs.scramble_bitwidths(model, rng)
    model_hls = hs.convert_compiled(model, x, tmp_path)
    assert hs.mismatches(model, model_hls, x) == (0, y.size)
    assert hs.mismatches(model, model_hls, hs.out_of_range(x, rng)) == (0, y.size)
