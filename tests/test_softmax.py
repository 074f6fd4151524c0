"""HSoftmax: the deployed softmax arithmetic as the Keras layer, bit-exact in hls4ml.

The reference is exact rational arithmetic for every sum, product and rounding; the
two table functions take the IEEE float32 values the tables hold (numpy's float32
``exp`` and the correctly rounded float32 ``1/s``). Accuracy against a float softmax
is checked against a bound derived from the formats, and the conversion against
hls4ml's C simulation on every output, inside and far outside the calibrated range.
"""

import math
from fractions import Fraction

import hls_support as hs
import keras
import numpy as np
import pytest
import reference as ref
from randomise import randomise_bits
from round_trip import reload_and_compare

from HGQ import HDense, HQuantize, HSoftmax, Signature, compute_bops


def softmax_model(rng, shape, units=5, f_range=(0, 8)):
    model = keras.Sequential(
        [keras.Input(shape), HQuantize(name="inp_q"), HDense(units, name="d"), HSoftmax(name="sm")]
    )
    randomise_bits(model.get_layer("inp_q").pre_activation_quantizer, rng, 1, 5)
    dense = model.get_layer("d")
    randomise_bits(dense.pre_activation_quantizer, rng, 0, 5)
    randomise_bits(dense.kernel_quantizer, rng, 1, 5)
    randomise_softmax_bits(model.get_layer("sm"), rng, *f_range)
    return model


def randomise_softmax_bits(layer: HSoftmax, rng, low: int, high: int) -> None:
    for quantizer in (layer.exp_quantizer, layer.inv_quantizer, layer.pre_activation_quantizer):
        randomise_bits(quantizer, rng, low, high)


def f_of(quantizer) -> np.ndarray:
    return np.round(quantizer.fractional_bits.numpy()[0]).astype(int)


def reference_softmax(layer: HSoftmax, x: np.ndarray) -> np.ndarray:
    """The five steps of HSoftmax on one batch of its (already quantized) inputs."""
    f_e, f_r, f_o = (
        f_of(q) for q in (layer.exp_quantizer, layer.inv_quantizer, layer.pre_activation_quantizer)
    )
    values = ref.to_fractions(x)
    d = values - np.max(values, axis=-1, keepdims=True)
    exp32 = np.vectorize(lambda v: Fraction(float(np.exp(np.float32(v)))), otypes=[object])
    e = ref.quantize_array(exp32(d), f_e[None])
    s = np.sum(e, axis=-1, keepdims=True)
    assert all(v >= 1 for v in s.flat)  # the maximum's exp(0) = 1 is exact

    def reciprocal32(v):
        return Fraction(float(np.float32(1.0) / np.float32(float(v))))

    r = ref.quantize_array(np.vectorize(reciprocal32, otypes=[object])(s), f_r[None])
    return ref.quantize_array(e * r, f_o[None])


def dense_output(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.Model(model.inputs, model.get_layer("d").output).predict(x, verbose=0)


@pytest.mark.smoke
@pytest.mark.parametrize("shape", [(6,), (3, 6)])
def test_inference_equals_the_reference_in_and_out_of_range(shape, rng):
    model = softmax_model(rng, shape)
    x_cal = rng.normal(size=(50, *shape)).astype("float32")
    compute_bops(model, x_cal, verbose=False)
    x = np.concatenate([x_cal, 40 * rng.normal(size=(50, *shape))]).astype("float32")
    expected = reference_softmax(model.get_layer("sm"), dense_output(model, x))
    assert np.array_equal(model.predict(x, verbose=0), expected.astype(np.float64))


def test_formats_are_fixed_and_never_overflow(rng):
    model = softmax_model(rng, (3, 6))
    compute_bops(model, rng.normal(size=(20, 3, 6)), verbose=False)
    layer = model.get_layer("sm")
    for quantizer in (layer.exp_quantizer, layer.inv_quantizer, layer.pre_activation_quantizer):
        k, i, _ = quantizer.exact_format()
        assert np.all(k == 0) and np.all(i == 1)
    y = model.predict(1000 * rng.normal(size=(200, 3, 6)).astype("float32"), verbose=0)
    assert y.min() >= 0 and y.max() <= 1
    assert np.all(y.max(axis=-1) > 0)  # the row maximum never wraps to 0


@pytest.mark.parametrize("f", [4, 8, 12])
def test_error_against_a_float_softmax_is_within_the_format_bound(f, rng):
    # With f fractional bits everywhere and n per row, |HSoftmax - softmax| <= (3 + n) 2^-(f+1):
    # the output rounding (1 half-LSB), e's rounding over s_q >= 1 (1), r's (1), and the
    # sum's n roundings moving 1/s_q by at most n 2^-(f+1) (e <= 1, s, s_q >= 1).
    n = 6
    model = softmax_model(rng, (n,), units=n)
    layer = model.get_layer("sm")
    for quantizer in (layer.exp_quantizer, layer.inv_quantizer, layer.pre_activation_quantizer):
        quantizer.fractional_bits.assign(np.full(quantizer.fractional_bits.shape, f, "float32"))
    x = rng.normal(size=(500, n)).astype("float32")
    compute_bops(model, x, verbose=False)
    z = dense_output(model, x).astype(np.float64)
    exact = np.exp(z - z.max(axis=-1, keepdims=True))
    exact /= exact.sum(axis=-1, keepdims=True)
    error = np.abs(model.predict(x, verbose=0) - exact).max()
    assert error <= (3 + n) * 2.0 ** -(f + 1)
    assert error > 0


def test_ebops_by_hand():
    # One row of three elements x of 6 bits; e has 1 integer bit and f_e = 2, 3, 4
    # fractional bits (widths 3, 4, 5); r has f_r = 5 (width 6).
    # products e * r (the original HGQ's count): (3 + 4 + 5) * 6 = 72
    # comparisons, row max of three 6-bit x: 1.5 * (2/3 * 18 + 2 log2 3)
    # adders: row sum of e, 2/3 * 12 + 2 log2 3; x - max per element, 1/2 * 12 + 1 = 7
    # tables: exp from 7 bits (x - max) to w_e: (3 + 4 + 5) * 2^(7-6) = 24;
    #         reciprocal from 5 + ceil(log2 3) = 7 bits to 6 bits: 6 * 2 = 12
    inp = keras.Input((3,))
    layer = HSoftmax()
    model = keras.Model(inp, layer(Signature(keep_negative=1, bits=6, int_bits=2)(inp)))
    layer.exp_quantizer.fractional_bits.assign(np.array([[2, 3, 4]], "float32"))
    layer.inv_quantizer.fractional_bits.assign(np.array([[5]], "float32"))
    total = compute_bops(model, np.zeros((4, 3), "float32"), verbose=False)
    log3 = math.log2(3)
    want = {
        "products": 72.0,
        "comparisons": 1.5 * (12 + 2 * log3),
        "adders": 8 + 2 * log3 + 3 * 7.0,
        "tables": 24.0 + 12.0,
    }
    parts = layer.exact_cost_parts()
    assert parts.keys() == want.keys()
    for name, value in want.items():
        assert math.isclose(parts[name], value, rel_tol=1e-12), name
    assert math.isclose(total, sum(want.values()), rel_tol=1e-12)


def test_round_trip_and_errors(tmp_path, rng):
    model = softmax_model(rng, (3, 6))
    x = rng.normal(size=(32, 3, 6)).astype("float32")
    bops = compute_bops(model, x, verbose=False)
    loaded = reload_and_compare(model, x, tmp_path, bops, outside=30.0)
    assert isinstance(
        loaded.get_layer("sm").exp_quantizer, type(model.get_layer("sm").exp_quantizer)
    )
    with pytest.raises(ValueError, match="only the last axis is supported.*PPermute"):
        keras.Sequential([keras.Input((3, 6)), HQuantize(), HSoftmax(axis=1)])
    with pytest.raises(ValueError, match="exp_quantizer_config: bw_clip must start at 0"):
        HSoftmax(exp_quantizer_config={"bw_clip": (-2, 8)})
    with pytest.raises(ValueError, match="inv_quantizer_config must be a dict"):
        HSoftmax(inv_quantizer_config=[("init_bw", 4)])


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(6,), (3, 6), (2, 2, 5)])
def test_conversion_is_bit_exact(shape, tmp_path, rng):
    model = softmax_model(rng, shape)
    x = rng.normal(scale=2, size=(256, *shape)).astype("float32")
    y = model.predict(x, verbose=0)
    hs.train_briefly(model, x, rng.random(y.shape).astype("float32"))
    randomise_softmax_bits(model.get_layer("sm"), rng, 0, 10)
    model_hls = hs.convert_compiled(model, x, tmp_path)
    assert hs.mismatches(model, model_hls, x) == (0, y.size)
    assert hs.mismatches(model, model_hls, hs.out_of_range(x, rng)) == (0, y.size)


@pytest.mark.slow
def test_too_wide_exponential_table_is_warned_about_and_refused_at_conversion(tmp_path, rng):
    from HGQ.hls4ml_hook import convert_from_hgq_model

    inp = keras.Input((4,))
    model = keras.Model(inp, HSoftmax(name="sm")(Signature(1, 18, 8)(inp)))
    with pytest.warns(UserWarning, match="HSoftmax 'sm': its exp table would be indexed by 19"):
        compute_bops(model, np.zeros((16, 4), "float32"), verbose=False)
    with pytest.raises(ValueError, match="HSoftmax 'sm' \\(exponential\\).*2\\^16"):
        convert_from_hgq_model(model, str(tmp_path / "prj"))
