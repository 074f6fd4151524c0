"""After compute_bops, inference equals an independent fixed-point reference.

The reference (tests/reference.py) works in exact rationals: it re-derives every
format from the raw float parameters and the calibration data, rounds half up,
and wraps on overflow. Test inputs are inside and far outside the calibrated range.
"""

import keras
import numpy as np
import pytest
import reference as ref
from keras import ops
from randomise import BIT_RANGES, input_significant_bits, randomise_bits

from HGQ import HActivation, HDense, HQuantize, Signature
from HGQ.bops import compute_bops


def build_mlp(rng, widths="narrow"):
    bits = BIT_RANGES[widths]
    model = keras.Sequential(
        [
            keras.Input((6,)),
            HQuantize(name="inp_q"),
            HDense(5, activation="relu", name="d1"),
            *([HDense(3, name="d2")] if widths == "narrow" else []),
        ]
    )
    for layer in model.layers:
        kind = "input" if isinstance(layer, HQuantize) else "output"
        randomise_bits(layer.pre_activation_quantizer, rng, *bits[kind])
        if isinstance(layer, HDense):
            randomise_bits(layer.kernel_quantizer, rng, *bits["kernel"])
            layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    return model


def numpy_params(model):
    out = {}
    for layer in model.layers:
        f = np.round(layer.pre_activation_quantizer.fractional_bits.numpy()[0]).astype(int)
        entry = {"f_out": f}
        if isinstance(layer, HDense):
            entry["kernel"] = ref.to_fractions(layer.kernel.numpy())
            entry["f_kernel"] = np.round(layer.kernel_quantizer.fractional_bits.numpy()).astype(int)
            entry["bias"] = ref.to_fractions(layer.bias.numpy())
            entry["relu"] = layer.activation_name == "relu"
        out[layer.name] = entry
    return out


def reference_forward(params, x, formats=None):
    """Forward pass; with ``formats`` wrap each layer's output, else record ranges."""
    values = ref.to_fractions(x)
    seen = {}
    for name, p in params.items():
        if "kernel" in p:
            kernel = ref.quantize_array(p["kernel"], p["f_kernel"])
            bias = ref.quantize_array(p["bias"], p["f_out"])  # bias on the output grid
            values = values.dot(kernel) + bias
            if p["relu"]:
                values = np.vectorize(lambda v: max(v, 0), otypes=[object])(values)
        values = ref.quantize_array(values, p["f_out"][None])
        if formats is None:
            seen[name] = ref.calibrate(values, p["f_out"])
        else:
            k, i = formats[name]
            values = ref.wrap_array(values, k, i, p["f_out"])
    return values, seen


@pytest.mark.smoke
@pytest.mark.parametrize("widths", ["narrow", "wide"])
def test_mlp_inference_equals_integer_reference_in_and_out_of_range(rng, widths):
    model = build_mlp(rng, widths)
    params = numpy_params(model)
    x_cal = rng.normal(size=(200, 6)).astype("float32")
    compute_bops(model, x_cal, bsz=64, verbose=False)

    _, formats = reference_forward(params, x_cal)
    for layer in model.layers:  # the calibration agrees with the reference's search
        k, i, _ = layer.pre_activation_quantizer.exact_format()
        np.testing.assert_array_equal(k, formats[layer.name][0], err_msg=layer.name)
        np.testing.assert_array_equal(i, formats[layer.name][1], err_msg=layer.name)

    x_test = np.concatenate(
        [x_cal[:40], 4.0 * rng.normal(size=(40, 6)), 50.0 * rng.normal(size=(20, 6))]
    ).astype("float32")
    expected, _ = reference_forward(params, x_test, formats)
    got = model.predict(x_test, verbose=0)
    expected = expected.astype(np.float64)
    assert np.array_equal(got, expected), f"{np.sum(got != expected)} of {got.size} outputs differ"
    if widths == "wide":  # the products really take operands wider than TF32's 11 bits
        assert input_significant_bits(model, x_test) > 11
    # Out-of-range inputs really overflowed somewhere (otherwise the test is weak).
    unwrapped, _ = reference_forward(params, x_test[40:])
    assert not np.array_equal(unwrapped.astype(np.float64), expected[40:])


def test_signature_truncates_and_wraps_like_an_ap_fixed_port():
    inp = keras.Input((3,))
    sig = Signature(keep_negative=[1, 0, 1], bits=[4, 3, 3], int_bits=[1, 1, 0])
    model = keras.Model(inp, sig(inp))
    x = np.array([[0.3, 1.6, -1.2], [2.5, 2.25, 0.9]], "float32")
    got = model.predict(x, verbose=0)
    expected = np.empty_like(x, dtype=np.float64)
    for (r, c), v in np.ndenumerate(x):
        k, b, i = [1, 0, 1][c], [4, 3, 3][c], [1, 1, 0][c]
        f = b - k - i
        expected[r, c] = float(ref.wrap(ref.truncate(ref.to_fractions(v)[()], f), k, i, f))
    np.testing.assert_array_equal(got, expected)


def test_hactivation_tanh_output_on_its_grid(rng):
    inp = keras.Input((4,))
    q = HQuantize(name="inp_q")
    act = HActivation("tanh")
    model = keras.Model(inp, act(q(inp)))
    x = rng.normal(size=(64, 4)).astype("float32")
    compute_bops(model, x, verbose=False)
    got = model.predict(x, verbose=0)
    f_in = np.round(q.pre_activation_quantizer.fractional_bits.numpy()[0])
    f_out = np.round(act.pre_activation_quantizer.fractional_bits.numpy()[0])
    x_q = np.floor(x * 2.0**f_in + 0.5) / 2.0**f_in
    expected = np.floor(ops.convert_to_numpy(ops.tanh(x_q.astype("float32"))) * 2.0**f_out + 0.5)
    np.testing.assert_array_equal(got, expected / 2.0**f_out)
