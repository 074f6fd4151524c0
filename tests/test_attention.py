"""HEinsum (activation x activation) and HMultiHeadAttention built from quantized parts.

HEinsum is compared with an exact rational einsum of its quantized inputs, its EBOPs
with a count by hand. HMultiHeadAttention is compared with Keras's own
MultiHeadAttention carrying the same weights (with fine formats the two must agree
to the softmax's rounding), and its conversion with hls4ml's C simulation on every
output, inside and far outside the calibrated range, for self- and cross-attention.
"""

import hls_support as hs
import keras
import numpy as np
import pytest
import reference as ref
from randomise import randomise_bits
from round_trip import reload_and_compare

from HGQ import HEinsum, HEinsumDense, HMultiHeadAttention, HQuantize, Signature, compute_bops


def einsum_model(rng):
    inp = keras.Input((4, 6))
    x = HQuantize(name="inp_q")(inp)
    q = HEinsumDense("abc,cde->abde", (4, 2, 3), bias_axes="de", name="q")(x)
    k = HEinsumDense("abc,cde->abde", (4, 2, 3), bias_axes="de", name="k")(x)
    scores = HEinsum("aecd,abcd->acbe", name="scores")([k, q])
    model = keras.Model(inp, scores)
    for layer in model.layers[1:]:
        randomise_bits(layer.pre_activation_quantizer, rng, 0, 4)
        if isinstance(layer, HEinsumDense):
            randomise_bits(layer.kernel_quantizer, rng, 0, 4)
    return model


@pytest.mark.smoke
def test_heinsum_equals_the_rational_reference_in_and_out_of_range(rng):
    model = einsum_model(rng)
    x_cal = rng.normal(size=(40, 4, 6)).astype("float32")
    compute_bops(model, x_cal, verbose=False)
    layer = model.get_layer("scores")
    f = np.round(layer.pre_activation_quantizer.fractional_bits.numpy()[0]).astype(int)
    k_fmt, i_fmt, _ = layer.pre_activation_quantizer.exact_format()
    operands = keras.Model(model.inputs, [model.get_layer("k").output, model.get_layer("q").output])
    x = np.concatenate([x_cal, 30 * rng.normal(size=(20, 4, 6))]).astype("float32")
    k_val, q_val = (ref.to_fractions(a) for a in operands.predict(x, verbose=0))
    exact = np.einsum("aecd,abcd->acbe", k_val, q_val)
    expected = ref.wrap_array(ref.quantize_array(exact, f[None]), k_fmt, i_fmt, f)
    assert np.array_equal(model.predict(x, verbose=0), expected.astype(np.float64))


def test_heinsum_ebops_by_hand():
    # out[c, d] = sum_b a[b, c] b[b, d] with one c and one d: widths a = (3, 4), b = (5, 2)
    # multiply pairwise: 3*5 + 4*2 = 23 in products; the two products (3+5 and 4+2 bits)
    # are summed by one adder: (2-1)/2 * 14 + (2-1) * log2(2) = 8.
    a_in, b_in = keras.Input((2, 1)), keras.Input((2, 1))
    a = Signature(0, [[3], [4]], [[1], [1]])(a_in)
    b = Signature(0, [[5], [2]], [[1], [1]])(b_in)
    layer = HEinsum("abc,abd->acd")
    model = keras.Model([a_in, b_in], layer([a, b]))
    zeros = np.zeros((4, 2, 1), "float32")
    assert compute_bops(model, [zeros, zeros], verbose=False) == 31.0
    assert layer.exact_cost_parts() == {"products": 23.0, "adders": 8.0}


def test_heinsum_reduction_skips_pruned_terms_and_outer_products():
    # Four terms, one with a 0-bit factor: products 3*1 + 2*4 + 1*2 = 13; three terms of
    # 4, 6 and 3 bits: 2/3 * 13 + 2 * log2(3) in adders. The outer product 'ab,ac->abc'
    # of the same operands sums nothing: products only (every pair, 4 x 4 of them).
    widths_a, widths_b = [[3], [0], [2], [1]], [[1], [5], [4], [2]]
    a_in, b_in = keras.Input((4, 1)), keras.Input((4, 1))
    a = Signature(0, widths_a, [[1]] * 4)(a_in)
    b = Signature(0, widths_b, [[1]] * 4)(b_in)
    dot = HEinsum("abc,abd->acd")
    outer = HEinsum("abc,adc->abd")
    model = keras.Model([a_in, b_in], [dot([a, b]), outer([a, b])])
    zeros = np.zeros((4, 4, 1), "float32")
    compute_bops(model, [zeros, zeros], verbose=False)
    parts = dot.exact_cost_parts()
    assert parts["products"] == 13.0
    assert parts["adders"] == pytest.approx(2 / 3 * 13 + 2 * np.log2(3), rel=1e-12)
    total_a, total_b = sum(w[0] for w in widths_a), sum(w[0] for w in widths_b)
    assert outer.exact_cost_parts() == {"products": float(total_a * total_b), "adders": 0.0}


def test_heinsum_errors():
    with pytest.raises(ValueError, match="start with the batch axis"):
        HEinsum("...c,...c->...")
    with pytest.raises(ValueError, match="axis 'c' of the first input is summed without"):
        HEinsum("abc,abd->abd")
    with pytest.raises(ValueError, match="has sizes 3 and 4"):
        a, b = keras.Input((2, 3)), keras.Input((2, 4))
        HEinsum("abc,abc->ab")([HQuantize()(a), HQuantize()(b)])


def attention_model(
    rng, seq=6, features=5, heads=2, key_dim=3, value_dim=4, cross=False, fine=False
):
    inputs = [keras.Input((seq, features), name="tokens")]
    x = HQuantize(name="inp_q")(inputs[0])
    context = x
    if cross:
        inputs.append(keras.Input((seq + 2, features + 1), name="other"))
        context = HQuantize(name="other_q")(inputs[1])
    mha = HMultiHeadAttention(heads, key_dim, value_dim=value_dim, output_shape=4, name="mha")
    model = keras.Model(inputs, mha(x, context))
    low, high = (14, 16) if fine else (0, 5)
    for layer in [*model.layers[1:], *mha.parts()]:
        quantizer = getattr(layer, "pre_activation_quantizer", None)
        if quantizer is not None and layer is not mha.softmax:
            randomise_bits(quantizer, rng, low, high)
        if hasattr(layer, "kernel_quantizer"):
            randomise_bits(layer.kernel_quantizer, rng, low, high)
    for quantizer in (mha.softmax.exp_quantizer, mha.softmax.inv_quantizer):
        randomise_bits(quantizer, rng, 10 if fine else 0, 10 if fine else 8)
    return model


def test_attention_matches_keras_multi_head_attention(rng):
    # value_dim = key_dim: Keras 3.15's JAX attention fails on other value sizes.
    model = attention_model(rng, value_dim=3, fine=True)
    mha = model.get_layer("mha")
    mha.softmax.pre_activation_quantizer.fractional_bits.assign(np.full((1, 2, 6, 6), 10.0))
    keras_mha = keras.layers.MultiHeadAttention(2, 3, output_shape=4)
    x = rng.normal(size=(64, 6, 5)).astype("float32")
    keras_mha(x, x)
    scale = 1 / np.sqrt(3)
    for ours, theirs, factor in (
        (mha.query_dense, keras_mha._query_dense, scale),
        (mha.key_dense, keras_mha._key_dense, 1.0),
        (mha.value_dense, keras_mha._value_dense, 1.0),
        (mha.output_dense, keras_mha._output_dense, 1.0),
    ):
        kernel = rng.normal(size=ours.kernel.shape).astype("float32") * 0.5
        bias = rng.normal(size=ours.bias.shape).astype("float32") * 0.5
        theirs.kernel.assign(kernel)
        theirs.bias.assign(bias)
        ours.kernel.assign(kernel * factor)
        ours.bias.assign(bias * factor)
    with pytest.warns(UserWarning, match="exp table would be indexed by"):  # not converted
        compute_bops(model, x, verbose=False)
    got = model.predict(x, verbose=0)
    expected = np.asarray(keras_mha(x, x))
    # Formats of 14-16 bits everywhere but the softmax (10 bits: its error is at most
    # (3 + 6) 2^-11 per weight); through the values (|v| < ~4) and the output kernel
    # that stays far below 0.05, while a wrong head or axis order errs by O(1).
    assert np.abs(got - expected).max() < 0.05
    assert np.abs(got - expected).max() > 0


def test_attention_round_trip_parts_and_errors(tmp_path, rng):
    model = attention_model(rng)
    x = rng.normal(size=(32, 6, 5)).astype("float32")
    bops = compute_bops(model, x, verbose=False)
    parts = model.get_layer("mha").parts()
    # Summed in another order than the total: equal to the last ulp.
    assert bops == pytest.approx(sum(part.compute_exact_bops() for part in parts), rel=1e-12)
    assert bops > 0
    loaded = reload_and_compare(model, x, tmp_path, bops)
    assert loaded.get_layer("mha").get_config()["num_heads"] == 2
    with pytest.raises(ValueError, match="takes \\(batch, sequence, features\\) inputs"):
        inp = keras.Input((6,))
        HMultiHeadAttention(2, 3)(HQuantize()(inp), HQuantize()(inp))


@pytest.mark.slow
@pytest.mark.parametrize(
    "cross, seq, key_dim", [(False, 8, 4), (True, 8, 4), (False, 16, 8)], ids=str
)
def test_attention_conversion_is_bit_exact(cross, seq, key_dim, tmp_path, rng):
    model = attention_model(rng, seq=seq, features=5, heads=2, key_dim=key_dim, cross=cross)
    xs = [rng.normal(scale=2, size=(256, *t.shape[1:])).astype("float32") for t in model.inputs]
    x = xs if cross else xs[0]
    y = model.predict(x, verbose=0)
    hs.train_briefly(model, x, rng.normal(size=y.shape).astype("float32"))
    model_hls = hs.convert_compiled(model, x, tmp_path)
    assert hs.mismatches(model, model_hls, x) == (0, y.size)
    far = [hs.out_of_range(a, rng) for a in xs] if cross else hs.out_of_range(xs[0], rng)
    assert hs.mismatches(model, model_hls, far) == (0, y.size)


def test_a_file_built_under_other_defaults_reloads_the_same(tmp_path, rng):
    """The parts merge their quantizer configs with the global defaults when the layer
    is built; the file must carry those, not the user's partial configs, or loading it
    under other defaults rounds differently (found by the fuzzer, seed 22002)."""
    from HGQ import (
        get_default_kernel_quantizer_config,
        get_default_pre_activation_quantizer_config,
        set_default_kernel_quantizer_config,
        set_default_pre_activation_quantizer_config,
    )

    kernel_before = get_default_kernel_quantizer_config()
    activation_before = get_default_pre_activation_quantizer_config()
    set_default_kernel_quantizer_config({"rnd_strategy": "stochastic_round"})
    set_default_pre_activation_quantizer_config({"rnd_strategy": "floor"})
    try:
        inp = keras.Input((4, 3))
        q = HQuantize(name="inp_q")(inp)
        attention = HMultiHeadAttention(1, 2, kernel_quantizer_config={"bw_clip": (0, 8)})
        model = keras.Model(inp, attention(q, q))
    finally:
        set_default_kernel_quantizer_config(kernel_before)
        set_default_pre_activation_quantizer_config(activation_before)
    x = rng.normal(size=(256, 4, 3)).astype("float32")
    compute_bops(model, x, verbose=False)
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.layers[-1].query_dense.pre_activation_quantizer.config["rnd_strategy"] == "floor"
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
