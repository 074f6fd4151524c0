"""HAdd: sums, rounding, bitwidths and EBOPs by hand, exactness, residual models."""

from fractions import Fraction

import keras
import numpy as np
import pytest
import reference as ref
from randomise import randomise_model

from HGQ import HActivation, HDense, HQuantize, Signature
from HGQ.bops import ResetMinMax, compute_bops
from HGQ.layers.add import HAdd
from HGQ.layers.concatenate import PConcatenate
from HGQ.layers.dropout import PDropout


@pytest.mark.smoke
def test_sum_matches_keras_add_for_two_and_three_inputs(rng):
    # Inputs on a 1/8 grid and 8 fractional bits at the output: quantizing is exact,
    # so HAdd must give what keras.layers.Add gives.
    xs = [(np.round(rng.normal(size=(4, 3, 2)) * 8) / 8).astype("float32") for _ in range(3)]
    for inputs in (xs[:2], xs):
        add = HAdd(pre_activation_quantizer_config={"init_bw": 8})
        got = keras.ops.convert_to_numpy(add(inputs))
        expected = keras.ops.convert_to_numpy(keras.layers.Add()(inputs))
        assert got.shape == expected.shape == (4, 3, 2)
        np.testing.assert_array_equal(got, expected)
    symbolic = [keras.Input((3, 2)), keras.Input((3, 2))]
    assert HAdd().compute_output_shape([s.shape for s in symbolic]) == (None, 3, 2)


@pytest.mark.parametrize(
    "strategy, expected",
    [
        # sums 0.75, -0.25, 0.75 onto integers (f = 0)
        ("auto", [0.0, -1.0, 0.0]),  # no bias to absorb the half LSB: truncate
        ("floor", [0.0, -1.0, 0.0]),
        ("standard_round", [1.0, 0.0, 1.0]),  # round half up
    ],
)
@pytest.mark.parametrize("training", [False, True])
def test_output_rounding(strategy, expected, training):
    add = HAdd(pre_activation_quantizer_config={"init_bw": 0, "rnd_strategy": strategy})
    a = np.array([[0.25, -0.25, 0.75]], "float32")
    b = np.array([[0.5, 0.0, 0.0]], "float32")
    got = keras.ops.convert_to_numpy(add([a, b], training=training))
    np.testing.assert_array_equal(got, [expected])


def test_bad_inputs_are_clear_errors():
    a = HQuantize()(keras.Input((3,)))
    b = HQuantize()(keras.Input((4,)))
    c = HQuantize()(keras.Input((3, 1)))
    with pytest.raises(ValueError, match="input 1 has shape .* same shape"):
        HAdd()([a, b])
    with pytest.raises(ValueError, match="input 1 has shape .* same shape"):
        HAdd()([a, c])
    with pytest.raises(ValueError, match="at least two inputs"):
        HAdd()([a])
    with pytest.raises(ValueError, match="at least two inputs"):
        HAdd()(a)
    with pytest.raises(ValueError, match="fed directly by the model input"):
        HAdd()([keras.Input((3,)), keras.Input((3,))])


def test_get_config_round_trips_and_is_registered():
    add = HAdd(pre_activation_quantizer_config={"init_bw": 3, "rnd_strategy": "auto"})
    config = add.get_config()
    assert "kernel_quantizer_config" not in config
    assert HAdd.from_config(config).get_config() == config
    assert keras.saving.get_registered_object("HGQ>HAdd") is HAdd


# Two signed inputs on a 1/8 grid (Signature: k=1, i=2, f=3), summed to
#   [[2.5, -0.5, 0.375], [-1.5, 0.75, 3.5]]
# then quantized with f = [0, 1, 2]:
#   truncation: col0 {2, -2}      -> k=1, i=2 -> 3 bits
#               col1 {-0.5, 0.5}  -> k=1, i=0 -> 2 bits
#               col2 {0.25, 3.5}  -> k=0, i=2 -> 4 bits
#   rounding:   col0 {3, -1}      -> k=1, i=2 -> 3 bits
#               col1 {-0.5, 1.0}  -> k=1, i=1 -> 3 bits
#               col2 {0.5, 3.5}   -> k=0, i=2 -> 4 bits
# An HDense(1, no bias) after it with kernel [1, 0.75, 0.5] (spans 1, 2, 1):
#   truncation: 3*1 + 2*2 + 4*1 = 11;  rounding: 3*1 + 3*2 + 4*1 = 13.
# The adders (HGQ.logic_costs): per element two 6-bit operands, 12/2 + 1 carry = 7;
# three elements: 21.
@pytest.mark.parametrize(
    "strategy, bits, ebops",
    [("auto", [3, 2, 4], 32.0), ("floor", [3, 2, 4], 32.0), ("standard_round", [3, 3, 4], 34.0)],
)
def test_output_bitwidth_and_ebops_by_hand(strategy, bits, ebops):
    a_in, b_in = keras.Input((3,)), keras.Input((3,))
    sig_a = Signature(keep_negative=1, bits=6, int_bits=2)
    sig_b = Signature(keep_negative=1, bits=6, int_bits=2)
    add = HAdd(pre_activation_quantizer_config={"rnd_strategy": strategy})
    dense = HDense(1, use_bias=False)
    model = keras.Model([a_in, b_in], dense(add([sig_a(a_in), sig_b(b_in)])))
    add.pre_activation_quantizer.fractional_bits.assign(np.array([[0, 1, 2]], "float32"))
    dense.kernel.assign(np.array([[1.0], [0.75], [0.5]], "float32"))
    dense.kernel_quantizer.fractional_bits.assign(np.full((3, 1), 4, "float32"))
    a = np.array([[1.0, -0.5, 0.25], [0.5, 0.5, 3.0]], "float32")
    b = np.array([[1.5, 0.0, 0.125], [-2.0, 0.25, 0.5]], "float32")
    assert compute_bops(model, [a, b], verbose=False) == ebops
    assert add.compute_exact_bops() == 21.0
    np.testing.assert_array_equal(add.exact_output_bitwidth(), bits)
    assert add.input_source(0) is sig_a and add.input_source(1) is sig_b


# ----------------------------------------------------- exactness against Fractions


def rounded_f(layer):
    fb = layer.pre_activation_quantizer.fractional_bits.numpy()
    return np.broadcast_to(np.round(fb[0]).astype(int), tuple(layer.output.shape[1:]))


class Reference:
    """Exact forward pass in Fractions; records (k, i) per layer, or wraps with them."""

    def __init__(self, formats=None):
        self.formats = formats
        self.seen = {}

    def quant(self, values, layer, rounding=ref.round_half_up):
        f = rounded_f(layer)
        values = ref.quantize_array(values, f[None], rounding)
        if self.formats is None:
            self.seen[layer.name] = ref.calibrate(values, f)
            return values
        k, i = self.formats[layer.name]
        return ref.wrap_array(values, k, i, f)

    def hdense(self, values, layer, relu=False):
        f_out = rounded_f(layer)
        f_kernel = np.round(layer.kernel_quantizer.fractional_bits.numpy()).astype(int)
        kernel = ref.quantize_array(ref.to_fractions(layer.kernel.numpy()), f_kernel)
        bias = ref.quantize_array(ref.to_fractions(layer.bias.numpy()), f_out)
        values = values.dot(kernel) + bias
        if relu:
            values = np.vectorize(lambda v: max(v, Fraction(0)), otypes=[object])(values)
        return self.quant(values, layer)


def test_residual_inference_equals_fraction_reference_in_and_out_of_range(rng):
    inp = keras.Input((5,))
    q = HQuantize(name="inp_q")
    d_a = HDense(4, activation="relu", name="a")
    d_b = HDense(4, name="b")
    add2 = HAdd(name="add2", pre_activation_quantizer_config={"rnd_strategy": "auto"})
    add3 = HAdd(name="add3")  # guide default: round half up
    d_out = HDense(2, name="out")
    a = d_a(q(inp))
    b = d_b(a)
    s2 = add2([a, b])
    model = keras.Model(inp, [d_out(s2), add3([a, b, s2])])
    randomise_model(model, rng)

    def forward(r, x):
        vq = r.quant(ref.to_fractions(x), q)
        va = r.hdense(vq, d_a, relu=True)
        vb = r.hdense(va, d_b)
        v2 = r.quant(va + vb, add2, ref.truncate)
        return [r.hdense(v2, d_out), r.quant(va + vb + v2, add3)]

    x_cal = rng.normal(size=(128, 5)).astype("float32")
    compute_bops(model, x_cal, verbose=False)
    calibration = Reference()
    forward(calibration, x_cal)
    for name, (k, i) in calibration.seen.items():
        got_k, got_i, _ = model.get_layer(name).pre_activation_quantizer.exact_format()
        np.testing.assert_array_equal(got_k, k, err_msg=name)
        np.testing.assert_array_equal(got_i, i, err_msg=name)

    x_test = np.concatenate(
        [x_cal[:32], 4.0 * rng.normal(size=(32, 5)), 50.0 * rng.normal(size=(16, 5))]
    ).astype("float32")
    expected = forward(Reference(calibration.seen), x_test)
    got = model.predict(x_test, verbose=0)
    for g, e in zip(got, expected, strict=True):
        e = e.astype(np.float64)
        assert np.array_equal(g, e), f"{np.sum(g != e)} of {g.size} outputs differ"
    unwrapped = forward(Reference(), x_test[64:])
    for u, e in zip(unwrapped, expected, strict=True):  # far-out inputs really overflowed
        assert not np.array_equal(u.astype(np.float64), e[64:].astype(np.float64))


# --------------------------------------------------------- residual functional model


def residual_model():
    """Two inputs, two outputs: a residual HAdd branch and a PConcatenate branch."""
    x_in, y_in = keras.Input((6,), name="x"), keras.Input((3,), name="y")
    qx = HQuantize(name="inp_q_x")(x_in)
    qy = HQuantize(name="inp_q_y")(y_in)
    a = HDense(8, activation="relu", bops_reg_factor=1e-5, name="a")(qx)
    b = HDense(8, bops_reg_factor=1e-5, name="b")(a)
    s = HAdd(name="residual")([a, b])
    joined = PConcatenate(name="join")([HActivation("relu", name="act")(s), qy])
    out1 = HDense(2, bops_reg_factor=1e-5, name="out1")(joined)
    out2 = HDense(1, bops_reg_factor=1e-5, name="out2")(PDropout(0.2, name="drop")(s))
    return keras.Model([x_in, y_in], [out1, out2])


@pytest.mark.slow
def test_residual_model_trains_calibrates_saves_and_loads(tmp_path, rng):
    model = residual_model()
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.normal(size=(64, 3)).astype("float32")
    targets = [np.concatenate([x[:, :1], y[:, :1]], axis=1), x[:, 1:2] - x[:, 2:3]]
    model.compile("adam", ["mse", "mse"])
    history = model.fit(
        [x, y], targets, epochs=2, batch_size=16, verbose=0, callbacks=[ResetMinMax()]
    )
    assert np.isfinite(history.history["loss"][-1])
    assert history.history["bops"][-1] > 0
    # The surrogate EBOPs of the layer after PConcatenate saw both inputs' bitwidths.
    out1 = model.get_layer("out1")
    assert float(out1.bops.numpy()) > 0
    join = model.get_layer("join")
    assert keras.ops.convert_to_numpy(join.output_bitwidth()).shape == (11,)

    total = compute_bops(model, [x, y], verbose=False)
    residual = model.get_layer("residual")
    # One adder per element where both operands are not constant zero: half their
    # widths plus a carry (HGQ.logic_costs).
    bits_a = model.get_layer("a").exact_output_bitwidth().astype(float)
    bits_b = model.get_layer("b").exact_output_bitwidth().astype(float)
    adders = float(np.sum(np.where((bits_a > 0) & (bits_b > 0), (bits_a + bits_b) / 2 + 1, 0)))
    assert residual.compute_exact_bops() == pytest.approx(adders, rel=1e-12)
    np.testing.assert_array_equal(
        join.exact_output_bitwidth(),
        np.concatenate(
            [
                model.get_layer("act").exact_output_bitwidth(),
                model.get_layer("inp_q_y").exact_output_bitwidth(),
            ]
        ),
    )
    # The HDense layers multiply, HAdd adds; PConcatenate and PDropout cost nothing.
    manual = sum(layer.compute_exact_bops() for layer in model.layers if isinstance(layer, HDense))
    assert total == pytest.approx(manual + adders, rel=1e-12) and manual > 0

    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x_test = [np.concatenate([x, 8 * x]), np.concatenate([y, 8 * y])]
    for ours, theirs in zip(
        model.predict(x_test, verbose=0), loaded.predict(x_test, verbose=0), strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)
    assert compute_bops(loaded, [x, y], verbose=False) == total
    assert isinstance(loaded.get_layer("residual"), HAdd)
    assert isinstance(loaded.get_layer("join"), PConcatenate)


class ResidualSubclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.q = HQuantize(name="inp_q")
        self.a = HDense(4, activation="relu")
        self.b = HDense(4)
        self.add = HAdd()
        self.out = HDense(1)

    def call(self, x, training=None):
        a = self.a(self.q(x, training=training), training=training)
        return self.out(self.add([a, self.b(a, training=training)], training=training))


def test_hadd_in_a_subclassed_model_trains_and_calibrates(rng):
    model = ResidualSubclassed()
    x = rng.normal(size=(32, 3)).astype("float32")
    model.compile("adam", "mse")
    model.fit(x, x[:, :1], epochs=1, batch_size=16, verbose=0)
    assert compute_bops(model, x, verbose=False) > 0
    assert model.add.input_source(0) is model.a and model.add.input_source(1) is model.b
