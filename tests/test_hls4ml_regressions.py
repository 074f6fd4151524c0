"""Conversion bugs found by random models, one named test per class.

Each model is the smallest that showed the bug; each test failed before its fix
(listed in the docstring) and compares every output of hls4ml's C simulation with
Keras, exactly, on the calibration data and far outside it.
"""

from __future__ import annotations

import warnings

import hls_support as hs
import keras
import numpy as np
import pytest

from HGQ import (
    HActivation,
    HConv2D,
    HDense,
    HQuantize,
    PConcatenate,
    PDropout,
    PFlatten,
    PPermute,
    PReshape,
    Signature,
)

pytestmark = pytest.mark.slow


def set_fractional_bits(layer, value) -> None:
    """Every output element of ``layer`` gets ``value`` fractional bits (broadcast)."""
    bits = layer.pre_activation_quantizer.fractional_bits
    bits.assign(np.broadcast_to(np.asarray(value, "float32"), bits.shape).copy())


def assert_exact(model: keras.Model, x: np.ndarray, tmp_path) -> None:
    rng = np.random.default_rng(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model_hls = hs.convert_compiled(model, x, tmp_path)
    assert not [w for w in caught if "propagated multiple times" in str(w.message)]
    n_out = sum(int(np.prod(t.shape[1:])) for t in model.outputs) * len(x)
    for data in (x, hs.out_of_range(x, rng)):
        assert hs.mismatches(model, model_hls, data) == (0, n_out)


def dense_chain(*layers, n_in: int = 8) -> keras.Sequential:
    return keras.Sequential([keras.Input((n_in,)), HQuantize(name="inp_q"), *layers])


def test_two_quantizers_in_a_row(tmp_path):
    """hls4ml folded both one-format quantizers into the input type (the first format
    was lost; 'propagated multiple times'). Fix: the fold is off during conversion."""
    model = dense_chain(HActivation("linear", name="lin"), HDense(4, name="d"))
    x = np.random.default_rng(1).normal(scale=3, size=(512, 8)).astype("float32")
    model.predict(x, verbose=0)
    set_fractional_bits(model.get_layer("inp_q"), 2)
    set_fractional_bits(model.get_layer("lin"), 0)
    assert_exact(model, x, tmp_path)


def test_signed_table_into_unsigned_quantizer(tmp_path):
    """hard_tanh with f = -1 calibrates to unsigned formats only; hls4ml stored the
    signed table output in ufixed<., produced i> and lost the sign's weight.
    Fix: such tensors are widened to the quantizer's integer bits."""
    model = dense_chain(HDense(8, name="d"), HActivation("hard_tanh", name="ht"), HDense(3))
    x = np.random.default_rng(2).normal(size=(512, 8)).astype("float32")
    model.predict(x, verbose=0)
    set_fractional_bits(model.get_layer("inp_q"), 3)
    set_fractional_bits(model.get_layer("d"), 3)
    set_fractional_bits(model.get_layer("ht"), -1)
    hs.convert_compiled(model, x, tmp_path / "probe")  # calibrates
    k, _, _ = model.get_layer("ht").pre_activation_quantizer.exact_format()
    assert not k.any()  # the case: every element unsigned
    assert_exact(model, x, tmp_path)


def test_signed_quantizer_through_a_reshape_into_unsigned_quantizer(tmp_path):
    """The same hls4ml rule applies through reshapes: a signed Signature (values -1..1)
    read through PReshape by an unsigned quantizer that rounds 1 up to 2 was stored
    in ufixed<1,1>, so -1 became 1 and then 2 (1268 of 1536 outputs on the calibration
    data). Fix: the widening follows the chain of reshapes."""
    model = keras.Sequential(
        [
            keras.Input((8,)),
            Signature(1, 2, 1, name="sig"),
            PReshape((2, 4)),
            HActivation("linear", name="lin"),
            PFlatten(),
            HDense(3),
        ]
    )
    x = np.random.default_rng(8).integers(-1, 2, size=(512, 8)).astype("float32")
    model.predict(x, verbose=0)
    set_fractional_bits(model.get_layer("lin"), -1)
    assert_exact(model, x, tmp_path)
    k, _, _ = model.get_layer("lin").pre_activation_quantizer.exact_format()
    assert not k.any()


def test_truncation_to_a_coarse_grid(tmp_path):
    """Truncating to multiples of 16 turns every negative input in [-2, 0) into -16.
    hls4ml narrowed such an element to its input's range plus one integer bit, which is
    width 0 here (0 where Keras has -16). Fix: HGQ's quantizer layer narrows only to the
    exact range of the rounded input."""
    model = dense_chain(
        HActivation(
            "linear",
            name="coarse",
            pre_activation_quantizer_config={"rnd_strategy": "floor"},
        ),
        HDense(2),
        n_in=4,
    )
    x = np.random.default_rng(11).uniform(-2, 2, size=(256, 4)).astype("float32")
    model.predict(x, verbose=0)
    set_fractional_bits(model.get_layer("inp_q"), 3)
    set_fractional_bits(model.get_layer("coarse"), -4)
    assert_exact(model, x, tmp_path)
    k, i, f = model.get_layer("coarse").pre_activation_quantizer.exact_format()
    assert (k == 1).all() and (k + i + f == 1).all()  # -16 or 0


@pytest.mark.parametrize("activation", ["linear", "tanh"])
def test_layer_of_width_zero(activation, tmp_path):
    """Every output element of 'd' has width 0 (the constant 0). hls4ml folded (0,0,0)
    into ufixed<1,0,RND> (0.5 where Keras has 0); before a table, the table check
    refused it. Fix: no fold; tables are laid out for the type hls4ml chose."""
    model = dense_chain(HDense(8, name="d"), HActivation(activation, name="act"), HDense(3))
    x = np.random.default_rng(3).normal(size=(512, 8)).astype("float32")
    model.predict(x, verbose=0)
    set_fractional_bits(model.get_layer("inp_q"), 3)
    set_fractional_bits(model.get_layer("d"), -12)
    assert_exact(model, x, tmp_path)
    assert not model.get_layer("d").pre_activation_quantizer.exact_bitwidth().any()


def test_table_input_with_some_width_zero_elements(tmp_path):
    """Some table inputs have width 0, the others negative integer bits: hls4ml counts
    the empty ones as (0,0,0), so its input type is wider than the live formats'."""
    model = dense_chain(HDense(8, name="d"), HActivation("tanh", name="t"), HDense(3))
    x = np.random.default_rng(4).normal(scale=0.05, size=(512, 8)).astype("float32")
    model.predict(x, verbose=0)
    dense = model.get_layer("d")
    dense.kernel.assign(dense.kernel.numpy() * 0.5)
    set_fractional_bits(model.get_layer("inp_q"), 8)
    set_fractional_bits(dense, [-12, 5, 5, 5, 5, 5, 5, 5])
    assert_exact(model, x, tmp_path)
    _, i, _ = dense.pre_activation_quantizer.exact_format()
    assert i[1:].max() < 0  # the live elements really have negative integer bits


def test_table_input_narrowed_by_hls4ml(tmp_path):
    """Integer-valued Signature -> ReLU with f=4 -> tanh: hls4ml types the table input
    by the values that can occur (ufixed<3,3>), not the calibrated ufixed<7,3>."""
    model = keras.Sequential(
        [
            keras.Input((4,)),
            Signature(1, 4, 3),
            HActivation("relu", name="r"),
            HActivation("tanh", name="t"),
            HDense(3),
        ]
    )
    x = np.random.default_rng(5).integers(-8, 8, size=(512, 4)).astype("float32")
    model.predict(x, verbose=0)
    set_fractional_bits(model.get_layer("r"), 4)
    set_fractional_bits(model.get_layer("t"), 4)
    assert_exact(model, x, tmp_path)


def test_concatenate_with_positive_axes(tmp_path):
    """Positive PConcatenate axes crashed hls4ml's bit-exact pass (AxisError)."""
    inp = keras.Input((4, 4, 2))
    q = HQuantize(name="inp_q")(inp)
    a = HConv2D(3, 1, name="a")(q)
    b = HConv2D(2, 1, name="b")(q)
    channels = PConcatenate(axis=3)([a, b])
    rows = PConcatenate(axis=1)([a, a])
    columns = PConcatenate(axis=2)([b, b])
    flat = PConcatenate(axis=1)([PFlatten()(t) for t in (channels, rows, columns)])
    model = keras.Model(inp, HDense(2)(flat))
    x = np.random.default_rng(6).normal(size=(256, 4, 4, 2)).astype("float32")
    assert_exact(model, x, tmp_path)


@pytest.mark.parametrize("first", ["hquantize", "signature"])
def test_one_format_input_quantizer_as_model_output(first, tmp_path):
    """A one-format HQuantize/Signature whose output is also a model output: hls4ml
    merged it into the input and g++ failed on a redefined 'input_layer'."""
    inp = keras.Input((4,))
    q = HQuantize(name="q")(inp) if first == "hquantize" else Signature(1, 6, 2)(inp)
    model = keras.Model(inp, [q, HDense(2)(q)])
    x = np.random.default_rng(7).normal(size=(256, 4)).astype("float32")
    assert_exact(model, x, tmp_path)


def test_passive_layers_on_a_model_output_as_model_outputs(tmp_path):
    """A final PFlatten/PReshape is removed by hls4ml (and a PDropout, emitted as a linear
    activation, too); when its input is also a model output that removal asserted
    ('Remove leaf node ... but it already is'). Fix: an identity quantizer follows."""
    inp = keras.Input((4, 2))
    q = HQuantize(name="inp_q")(inp)
    flat = PFlatten(name="flat")(q)
    outputs = [q, flat, PDropout(0.2, name="drop")(q), PReshape((2, 4))(q), HDense(2)(flat)]
    model = keras.Model(inp, outputs)
    x = np.random.default_rng(9).normal(size=(256, 4, 2)).astype("float32")
    assert_exact(model, x, tmp_path)


def test_permute_then_flatten_then_dense(tmp_path):
    """hls4ml folded a fixed permutation into the Dense after Transpose -> flatten,
    ignoring the Transpose's own (identity and 3-axis permutations were wrong: 960 of
    1024 outputs). Fix: an identity quantizer after each Transpose breaks the chain."""
    inp2 = keras.Input((5, 3))
    inp3 = keras.Input((2, 3, 4))
    q2 = HQuantize(name="q2")(inp2)
    q3 = HQuantize(name="q3")(inp3)
    outputs = [HDense(2)(PFlatten()(PPermute(dims)(q2))) for dims in ((1, 2), (2, 1))]
    outputs += [
        HDense(2)(PFlatten()(PPermute(dims)(q3)))
        for dims in ((1, 2, 3), (2, 3, 1), (3, 1, 2), (1, 3, 2), (3, 2, 1))
    ]
    model = keras.Model([inp2, inp3], outputs)
    rng = np.random.default_rng(10)
    x = [
        rng.normal(size=(256, 5, 3)).astype("float32"),
        rng.normal(size=(256, 2, 3, 4)).astype("float32"),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model_hls = hs.convert_compiled(model, x, tmp_path)
    for data in (x, [8 * a for a in x]):
        assert hs.mismatches(model, model_hls, data) == (0, 2 * 7 * 256)


@pytest.mark.parametrize("name", ["perm", "dim", "inputs"])
def test_layer_named_like_an_hls4ml_attribute(name, tmp_path):
    """hls4ml keeps a layer's output variable among its attributes under the layer's
    name: a PPermute named 'perm' replaced the Transpose's permutation with a tensor
    and the conversion crashed (found by the RTL tests' model). Fix: the Transpose
    step has its own name."""
    inp = keras.Input((3, 2))
    x = PPermute((2, 1), name=name)(HQuantize(name="inp_q")(inp))
    model = keras.Model(inp, HDense(2, name="head")(PFlatten(name="flat")(x)))
    x_cal = np.random.default_rng(3).normal(size=(128, 3, 2)).astype("float32")
    assert_exact(model, x_cal, tmp_path)


def test_symmetric_saturation_of_the_most_negative_input(tmp_path):
    """SAT_SYM clips a signed format to [-max, max]: fixed<4,2> keeps -2 out, so an input
    of -2 (from a fixed<2,2> quantizer) becomes -1.75. HGQ's narrowing took the
    quantizer for lossless because -2 fits fixed<4,2> under WRAP or SAT, and hls4ml
    passed -2 through (fuzz seed 1215: 485 of 2,560 outputs far outside the calibrated
    range). Fix: the narrowing uses the symmetric lower bound for SAT_SYM."""
    model = keras.Sequential(
        [
            keras.Input((8,)),
            HQuantize(name="q"),  # one format for all: fixed<2,2> once calibrated
            HActivation(
                "linear",
                name="sym",
                pre_activation_quantizer_config={"overflow_mode": "SAT_SYM"},
            ),
        ]
    )
    x = np.random.default_rng(12).integers(-2, 2, size=(256, 8)).astype("float32")
    model.predict(x, verbose=0)
    set_fractional_bits(model.get_layer("q"), 0)
    set_fractional_bits(model.get_layer("sym"), 2)
    assert_exact(model, x, tmp_path)
    k, i, f = model.get_layer("sym").pre_activation_quantizer.exact_format()
    assert (k == 1).all() and (i == 1).all() and (f == 2).all()  # fixed<4,2>
    assert model.predict(np.full((1, 8), -2.0, "float32"), verbose=0).min() == -1.75


@pytest.mark.parametrize("pool", ["1d", "2d"])
def test_max_pool_with_padding_on_unsigned_input(pool, tmp_path):
    """hls4ml pads a max pool with the input type's top bit set, the most negative value
    of a signed type but 2^(I-1) of an unsigned one (a ReLU output), so that value won
    every window reaching the padding (fuzzer seed 1319: 1,024 of 1,024). Fix: padded
    max pools read a signed type."""
    from HGQ import HConv1D, PMaxPool1D, PMaxPool2D

    if pool == "2d":
        shape, conv = (5, 5, 2), HConv2D(3, 1, activation="relu", name="conv")
        pooling = PMaxPool2D(3, strides=2, padding="same", name="pool")
    else:
        shape, conv = (7, 2), HConv1D(3, 1, activation="relu", name="conv")
        pooling = PMaxPool1D(3, strides=2, padding="same", name="pool")
    model = keras.Sequential([keras.Input(shape), HQuantize(name="inp_q"), conv, pooling])
    x = np.random.default_rng(2).normal(scale=2, size=(256, *shape)).astype("float32")
    model.predict(x, verbose=0)
    set_fractional_bits(model.get_layer("conv"), 2)
    assert_exact(model, x, tmp_path)
