"""Passive layers: pooling, flatten/reshape/permute, concatenate, dropout.

Checked against: the matching ``keras.layers`` layer (shapes and values), bitwidth
maps and EBOPs worked out by hand, and an exact rational fixed-point reference
(tests/reference.py) for whole models after ``compute_bops``, with inputs inside
and far outside the calibrated range.
"""

import itertools
from fractions import Fraction

import keras
import numpy as np
import pytest
import reference as ref
from randomise import randomise_model
from round_trip import reload_and_compare

from HGQ import HActivation, HAdd, HDense, HQuantize, Signature
from HGQ.bops import compute_bops
from HGQ.layers.concatenate import PConcatenate
from HGQ.layers.dropout import PDropout
from HGQ.layers.pooling import (
    PAveragePooling1D,
    PAveragePooling2D,
    PAvgPool1D,
    PAvgPool2D,
    PMaxPool1D,
    PMaxPool2D,
    PMaxPooling1D,
    PMaxPooling2D,
)
from HGQ.layers.reshaping import PFlatten, PPermute, PReshape

# ------------------------------------------------------------------ Keras parity

KERAS_PAIRS = [
    ("max1d", PMaxPool1D, keras.layers.MaxPooling1D, {"pool_size": 2}, (8, 3)),
    (
        "max1d_same",
        PMaxPool1D,
        keras.layers.MaxPooling1D,
        {"pool_size": 3, "strides": 2, "padding": "same"},
        (7, 2),
    ),
    ("max2d", PMaxPool2D, keras.layers.MaxPooling2D, {"pool_size": 2}, (4, 4, 2)),
    (
        "max2d_same",
        PMaxPool2D,
        keras.layers.MaxPooling2D,
        {"pool_size": (3, 2), "strides": 1, "padding": "same"},
        (5, 4, 2),
    ),
    ("avg1d", PAvgPool1D, keras.layers.AveragePooling1D, {"pool_size": 4, "strides": 1}, (8, 3)),
    ("avg2d", PAvgPool2D, keras.layers.AveragePooling2D, {"pool_size": 2}, (4, 4, 2)),
    (
        "avg2d_rect",
        PAvgPool2D,
        keras.layers.AveragePooling2D,
        {"pool_size": (2, 4), "strides": (1, 2)},
        (5, 8, 1),
    ),
    (
        "avg2d_same_nopad",
        PAvgPool2D,
        keras.layers.AveragePooling2D,
        {"pool_size": 2, "padding": "same"},
        (4, 6, 2),
    ),
    ("flatten", PFlatten, keras.layers.Flatten, {}, (3, 4, 2)),
    ("reshape", PReshape, keras.layers.Reshape, {"target_shape": (4, -1)}, (3, 4, 2)),
    ("permute", PPermute, keras.layers.Permute, {"dims": (3, 1, 2)}, (3, 4, 2)),
    ("dropout", PDropout, keras.layers.Dropout, {"rate": 0.5, "seed": 3}, (5,)),
]


@pytest.mark.smoke
@pytest.mark.parametrize(
    "name, ours, theirs, kwargs, shape", KERAS_PAIRS, ids=[p[0] for p in KERAS_PAIRS]
)
def test_values_and_shapes_match_keras_layers(name, ours, theirs, kwargs, shape, rng):
    # Values on a 1/8 grid: an average of up to 8 of them is exact in float32 both ways.
    x = (np.round(rng.normal(size=(3, *shape)) * 8) / 8).astype("float32")
    got = keras.ops.convert_to_numpy(ours(**kwargs)(x))
    expected = keras.ops.convert_to_numpy(theirs(**kwargs)(x))
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    # Symbolic shapes agree too.
    sym = keras.Input(shape)
    assert tuple(ours(**kwargs).compute_output_shape(sym.shape)) == tuple(
        theirs(**kwargs).compute_output_shape(sym.shape)
    )


def test_concatenate_matches_keras_on_several_axes(rng):
    a = rng.normal(size=(2, 3, 4)).astype("float32")
    b = rng.normal(size=(2, 5, 4)).astype("float32")
    c = rng.normal(size=(2, 3, 1)).astype("float32")
    for axis, inputs in [(1, [a, b]), (-2, [a, b, b]), (-1, [a, c]), (2, [a, c, a])]:
        got = PConcatenate(axis=axis)(inputs)
        expected = keras.layers.Concatenate(axis=axis)(inputs)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_dropout_trains_like_keras_and_is_identity_at_inference(rng):
    x = rng.normal(size=(4, 10)).astype("float32")
    ours = PDropout(0.4, noise_shape=(None, 10), seed=5)
    theirs = keras.layers.Dropout(0.4, noise_shape=(None, 10), seed=5)
    np.testing.assert_array_equal(
        np.asarray(ours(x, training=True)), np.asarray(theirs(x, training=True))
    )
    dropped = np.asarray(ours(x, training=True))
    assert np.any(dropped == 0) and np.any(dropped != 0)
    np.testing.assert_array_equal(np.asarray(ours(x, training=False)), x)


def test_keras_style_aliases_are_the_same_classes():
    assert PMaxPooling1D is PMaxPool1D and PMaxPooling2D is PMaxPool2D
    assert PAveragePooling1D is PAvgPool1D and PAveragePooling2D is PAvgPool2D


@pytest.mark.parametrize(
    "layer",
    [
        PMaxPool1D(3, strides=1, padding="same"),
        PMaxPool2D((2, 3)),
        PAvgPool1D(4),
        PAvgPool2D((2, 1), strides=(1, 1)),
        PFlatten(),
        PReshape((2, -1)),
        PPermute((2, 1)),
        PConcatenate(axis=1),
        PDropout(0.25, noise_shape=(None, 1), seed=2),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_get_config_round_trips_and_is_registered(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    registered = keras.saving.get_registered_object(f"HGQ>{type(layer).__name__}")
    assert registered is type(layer)


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PAvgPool2D((3, 3)), "power of two.*PMaxPool"),
        (lambda: PAvgPool1D(3), "power of two"),
        (lambda: PMaxPool2D(2, data_format="channels_first"), "channels_last"),
        (lambda: PAvgPool1D(2, padding="full"), "'valid' or 'same'"),
        (lambda: PConcatenate(axis=0), "batch axis"),
        (lambda: PPermute((1, 3)), "permutation"),
        (lambda: PReshape((-1, -1)), "at most one -1"),
        (lambda: PDropout(1.0), r"rate must be in \[0, 1\)"),
        (lambda: PFlatten(data_format="channels_first"), "channels_last"),
    ],
)
def test_bad_arguments_fail_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "layer, shape, match",
    [
        # 5 = 2 + 2 + 1: 'same' pads one border window, which would average 1 value.
        (PAvgPool1D(2, padding="same"), (5, 2), "pads the borders"),
        (PAvgPool2D(2, strides=1, padding="same"), (4, 4, 1), "pads the borders"),
        (PMaxPool2D(2), (4, 2), "rank 4"),
        (PMaxPool1D(4), (3, 2), "larger than the input"),
        (PReshape((4, 4)), (3, 5), "number of elements"),
        (PPermute((2, 1)), (2, 3, 4), "rank 3"),
    ],
)
def test_bad_input_shapes_fail_when_called(layer, shape, match):
    with pytest.raises(ValueError, match=match):
        layer(HQuantize()(keras.Input(shape)))


def test_concatenate_rejects_mismatched_shapes_and_single_inputs():
    a, b = HQuantize()(keras.Input((3, 4))), HQuantize()(keras.Input((2, 5)))
    with pytest.raises(ValueError, match="all sizes except along axis"):
        PConcatenate(axis=-1)([a, b])
    with pytest.raises(ValueError, match="at least two inputs"):
        PConcatenate()([a])
    with pytest.raises(ValueError, match="batch axis or out of range"):
        PConcatenate(axis=3)([a, a])


# ------------------------------------------------------- bitwidth maps by hand


def signature(bits):
    """A Signature of unsigned values whose total widths are ``bits`` (per element)."""
    bits = np.asarray(bits)
    return Signature(keep_negative=0, bits=bits, int_bits=np.zeros_like(bits))


def exact_bits_after_calibration(shape, bits, passive):
    """Signature(bits) -> passive layer(s); the passive output's exact bitwidth map."""
    inp = keras.Input(shape)
    x = signature(bits)(inp)
    for layer in passive:
        x = layer(x)
    model = keras.Model(inp, x)
    compute_bops(model, np.zeros((2, *shape), "float32"), verbose=False)
    out = passive[-1].exact_output_bitwidth()
    assert np.issubdtype(out.dtype, np.integer)
    # The differentiable map the training-time EBOPs use agrees with the exact one.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(passive[-1].output_bitwidth()), out)
    return out


BITS_4x1 = [[3], [5], [2], [4]]
BITS_2x4x1 = [[[1], [2], [3], [4]], [[8], [7], [6], [5]]]


@pytest.mark.parametrize(
    "shape, bits, make, expected",
    [
        # max over windows {3,5} {2,4}
        ((4, 1), BITS_4x1, lambda: [PMaxPool1D(2)], [[5], [4]]),
        # 'same', stride 1: Keras pads after the end -> windows {3,5} {5,2} {2,4} {4}
        (
            (4, 1),
            BITS_4x1,
            lambda: [PMaxPool1D(2, strides=1, padding="same")],
            [[5], [5], [4], [4]],
        ),
        # average of 2: max + log2(2) = max + 1
        ((4, 1), BITS_4x1, lambda: [PAvgPool1D(2)], [[6], [5]]),
        # average of 4: max(3,5,2,4) + 2
        ((4, 1), BITS_4x1, lambda: [PAvgPool1D(4)], [[7]]),
        # 2x2 windows over [[1,2,3,4],[8,7,6,5]]: {1,2,8,7} {3,4,6,5}
        ((2, 4, 1), BITS_2x4x1, lambda: [PMaxPool2D(2)], [[[8], [6]]]),
        ((2, 4, 1), BITS_2x4x1, lambda: [PAvgPool2D(2)], [[[10], [8]]]),
        # 1x2 windows: {1,2} {3,4} / {8,7} {6,5}, average of 2 -> +1
        ((2, 4, 1), BITS_2x4x1, lambda: [PAvgPool2D((1, 2))], [[[3], [5]], [[9], [7]]]),
        ((2, 3), [[1, 2, 3], [4, 5, 6]], lambda: [PFlatten()], [1, 2, 3, 4, 5, 6]),
        ((2, 3), [[1, 2, 3], [4, 5, 6]], lambda: [PReshape((3, -1))], [[1, 2], [3, 4], [5, 6]]),
        ((2, 3), [[1, 2, 3], [4, 5, 6]], lambda: [PPermute((2, 1))], [[1, 4], [2, 5], [3, 6]]),
        ((2, 3), [[1, 2, 3], [4, 5, 6]], lambda: [PDropout(0.5)], [[1, 2, 3], [4, 5, 6]]),
        # A chain: transpose, then flatten row-major.
        (
            (2, 3),
            [[1, 2, 3], [4, 5, 6]],
            lambda: [PPermute((2, 1)), PFlatten()],
            [1, 4, 2, 5, 3, 6],
        ),
    ],
)
def test_exact_output_bitwidth_by_hand(shape, bits, make, expected):
    got = exact_bits_after_calibration(shape, bits, make())
    np.testing.assert_array_equal(got, np.asarray(expected))


def test_concatenate_bitwidths_come_from_every_input():
    a, b, c = keras.Input((2, 2)), keras.Input((2, 1)), keras.Input((1, 2))
    sa, sb, sc = signature([[1, 2], [3, 4]]), signature([[7], [8]]), signature([[5, 6]])
    last = PConcatenate(axis=-1)
    rows = PConcatenate(axis=1)
    out_last = last([sa(a), sb(b)])
    out_rows = rows([sa.output, sc(c)])
    model = keras.Model([a, b, c], [out_last, out_rows])
    zeros = [np.zeros((2, 2, 2)), np.zeros((2, 2, 1)), np.zeros((2, 1, 2))]
    compute_bops(model, [z.astype("float32") for z in zeros], verbose=False)
    np.testing.assert_array_equal(last.exact_output_bitwidth(), [[1, 2, 7], [3, 4, 8]])
    np.testing.assert_array_equal(rows.exact_output_bitwidth(), [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(last.output_bitwidth()), [[1, 2, 7], [3, 4, 8]]
    )


def test_bitwidth_map_follows_calibrated_hquantize():
    # HQuantize (rounding) with f = [0, 1, 2, 3] calibrated on two samples (all on grid):
    #   elem 0: {1, 0}      f=0 -> unsigned, 1 <= 2^1 - 1      -> i=1: 0+1+0 = 1 bit
    #   elem 1: {-1, 0}     f=1 -> signed,   -1 >= -2^0        -> i=0: 1+0+1 = 2 bits
    #   elem 2: {0.5, 0}    f=2 -> unsigned, .5 <= 2^0 - .25   -> i=0: 0+0+2 = 2 bits
    #   elem 3: {3, 0}      f=3 -> unsigned, 3 <= 2^2 - .125   -> i=2: 0+2+3 = 5 bits
    # PReshape((2, 2)) -> [[1, 2], [2, 5]]; PMaxPool1D(2) -> [[2, 5]];
    # PAvgPool1D(2) -> [[3, 6]].
    inp = keras.Input((4,))
    q = HQuantize(name="inp_q")
    reshaped = PReshape((2, 2))
    max_pool, avg_pool = PMaxPool1D(2), PAvgPool1D(2)
    r = reshaped(q(inp))
    model = keras.Model(inp, [max_pool(r), avg_pool(r)])
    q.pre_activation_quantizer.fractional_bits.assign(np.array([[0, 1, 2, 3]], "float32"))
    x = np.array([[1.0, -1.0, 0.5, 3.0], [0.0, 0.0, 0.0, 0.0]], "float32")
    compute_bops(model, x, verbose=False)
    np.testing.assert_array_equal(q.exact_output_bitwidth(), [1, 2, 2, 5])
    np.testing.assert_array_equal(max_pool.exact_output_bitwidth(), [[2, 5]])
    np.testing.assert_array_equal(avg_pool.exact_output_bitwidth(), [[3, 6]])


# ---------------------------------------------------------------- EBOPs by hand


def set_kernel(dense, kernel, f):
    dense.kernel.assign(np.asarray(kernel, "float32"))
    fb = dense.kernel_quantizer.fractional_bits
    fb.assign(np.full(fb.shape, f, "float32"))


def dense_after(inputs, outputs_of, kernel):
    """Model: Signature input(s) -> passive layers -> HDense(no bias) with ``kernel``."""
    dense = HDense(len(kernel[0]), use_bias=False)
    model = keras.Model(inputs, dense(outputs_of))
    set_kernel(dense, kernel, 4)
    return model, dense


# Kernel values on a 1/16 grid and their bit spans (highest to lowest set bit):
#   1.0 -> 1, 0.75 = 0b0.11 -> 2, 0 -> 0, 0.5 -> 1, 0.625 = 0b0.101 -> 3,
#   1.5 = 0b1.1 -> 2, 0.1875 = 0b0.0011 -> 2.


def test_dense_ebops_through_maxpool_and_flatten_by_hand(rng):
    # bits [[1,2,3,4],[8,7,6,5]] -> PMaxPool2D((1,2)) -> [[2,4],[8,6]] -> flatten [2,4,8,6]
    # Dense EBOPs = 2*(1+2) + 4*(0+1) + 8*(3+2) + 6*(2+0) = 6 + 4 + 40 + 12 = 62
    # The pool's comparisons, one per window of 2: (1/2 * sum + 1 carry) * 1.5 =
    # 1.5 * (2.5 + 4.5 + 8.5 + 6.5) = 33; the model's total 95.
    inp = keras.Input((2, 4, 1))
    pooled = PFlatten()(PMaxPool2D((1, 2))(signature(BITS_2x4x1)(inp)))
    kernel = [[1.0, 0.75], [0.0, 0.5], [0.625, 1.5], [0.1875, 0.0]]
    model, dense = dense_after(inp, pooled, kernel)
    x = rng.uniform(0, 1, size=(16, 2, 4, 1)).astype("float32")
    assert compute_bops(model, x, verbose=False) == 95.0
    assert dense.compute_exact_bops() == 62.0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(dense.input_bitwidth()), [2, 4, 8, 6])


def test_dense_ebops_through_avgpool_by_hand(rng):
    # bits [3,5,2,4] -> PAvgPool1D(2) -> [5+1, 4+1] = [6, 5] -> flatten
    # Dense EBOPs = 6*2 (0.75) + 5*3 (0.625) = 27; the pool's adders, one per window
    # of 2: 1/2 * (3+5) + 1 = 5 and 1/2 * (2+4) + 1 = 4; the model's total 36.
    inp = keras.Input((4, 1))
    pooled = PFlatten()(PAvgPool1D(2)(signature(BITS_4x1)(inp)))
    model, dense = dense_after(inp, pooled, [[0.75], [0.625]])
    x = rng.uniform(0, 1, size=(16, 4, 1)).astype("float32")
    assert compute_bops(model, x, verbose=False) == 36.0
    assert dense.compute_exact_bops() == 27.0


def test_dense_ebops_through_concatenate_by_hand(rng):
    # bits [1,2] ++ [3,4,5] = [1,2,3,4,5]; kernel spans [1,2,0,3,2]
    # EBOPs = 1*1 + 2*2 + 3*0 + 4*3 + 5*2 = 1 + 4 + 0 + 12 + 10 = 27
    a, b = keras.Input((2,)), keras.Input((3,))
    joined = PConcatenate()([signature([1, 2])(a), signature([3, 4, 5])(b)])
    model, dense = dense_after([a, b], joined, [[1.0], [0.75], [0.0], [0.625], [1.5]])
    x = [rng.uniform(0, 1, size=(16, n)).astype("float32") for n in (2, 3)]
    assert compute_bops(model, x, verbose=False) == 27.0
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(dense.input_bitwidth()), [1, 2, 3, 4, 5]
    )


# ------------------------------------------------ exactness against Fractions


def rounded_f(layer):
    """The deployed (integer) fractional bits of an H-layer's output, per element."""
    fb = layer.pre_activation_quantizer.fractional_bits.numpy()
    shape = tuple(layer.output.shape[1:])
    return np.broadcast_to(np.round(fb[0]).astype(int), shape)


class Reference:
    """Exact forward pass in Fractions. Without ``formats`` it records each quantized
    layer's calibrated (k, i) (no wrapping, as during calibration); with them it
    wraps every quantized output into its format, as the deployed design does."""

    def __init__(self, formats=None):
        self.formats = formats
        self.seen = {}

    def quant(self, values, layer, rounding):
        f = rounded_f(layer)
        values = ref.quantize_array(values, f[None], rounding)
        if self.formats is None:
            self.seen[layer.name] = ref.calibrate(values, f)
        else:
            k, i = self.formats[layer.name]
            values = ref.wrap_array(values, k, i, f)
        return values

    # Every layer here uses the guide's default rnd_strategy, 'standard_round', which
    # at inference is round half up.
    def hquantize(self, values, layer):
        return self.quant(values, layer, ref.round_half_up)

    def hactivation(self, values, layer, relu):
        if relu:
            values = np.vectorize(lambda v: max(v, Fraction(0)), otypes=[object])(values)
        return self.quant(values, layer, ref.round_half_up)

    def hdense(self, values, layer):
        f_out = rounded_f(layer)
        f_kernel = np.round(layer.kernel_quantizer.fractional_bits.numpy()).astype(int)
        kernel = ref.quantize_array(ref.to_fractions(layer.kernel.numpy()), f_kernel)
        bias = ref.quantize_array(ref.to_fractions(layer.bias.numpy()), f_out)
        return self.quant(values.dot(kernel) + bias, layer, ref.round_half_up)


def ref_pool(values, pool, strides, kind):
    """'valid' pooling over the spatial axes (all but batch and channels) of ``values``."""
    spatial = values.shape[1:-1]
    out_shape = [(s - p) // t + 1 for s, p, t in zip(spatial, pool, strides, strict=True)]
    out = np.empty((values.shape[0], *out_shape, values.shape[-1]), dtype=object)
    n = int(np.prod(pool))
    for b, c in itertools.product(range(values.shape[0]), range(values.shape[-1])):
        for pos in itertools.product(*(range(o) for o in out_shape)):
            window = [
                values[(b, *(p * t + d for p, t, d in zip(pos, strides, off, strict=True)), c)]
                for off in itertools.product(*(range(p) for p in pool))
            ]
            out[(b, *pos, c)] = max(window) if kind == "max" else sum(window, Fraction(0)) / n
    return out


def pool_model(pool_cls, kwargs, shape, relu):
    inp = keras.Input(shape)
    q = HQuantize(name="inp_q")
    act = HActivation("relu" if relu else "linear", name="act")
    pool = pool_cls(**kwargs)
    dense = HDense(3, name="out")
    pooled = pool(act(q(inp)))
    model = keras.Model(inp, [pooled, dense(PFlatten()(pooled))])

    def forward(r, x):
        v = r.hactivation(r.hquantize(ref.to_fractions(x), q), act, relu)
        kind = "max" if pool_cls in (PMaxPool1D, PMaxPool2D) else "avg"
        size = kwargs["pool_size"]
        size = (size,) if isinstance(size, int) else tuple(size)
        v = ref_pool(v, size, size, kind)  # strides default to the pool size
        return [v, r.hdense(v.reshape(len(v), -1), dense)]

    return model, forward


def reshape_model():
    inp = keras.Input((6,))
    q = HQuantize(name="inp_q")
    dense = HDense(3, name="out")
    x = PFlatten()(PPermute((2, 1))(PReshape((3, 2))(q(inp))))
    model = keras.Model(inp, dense(PDropout(0.5)(x)))

    def forward(r, x):
        v = r.hquantize(ref.to_fractions(x), q)
        v = v.reshape(len(v), 3, 2).transpose(0, 2, 1).reshape(len(v), -1)
        return [r.hdense(v, dense)]

    return model, forward


def concat_model():
    inp = keras.Input((4,))
    q = HQuantize(name="inp_q")
    hidden = HDense(3, name="hidden")
    act = HActivation("relu", name="act")
    dense = HDense(2, name="out")
    qx = q(inp)
    model = keras.Model(inp, dense(PConcatenate()([hidden(qx), act(qx)])))

    def forward(r, x):
        v = r.hquantize(ref.to_fractions(x), q)
        joined = np.concatenate([r.hdense(v, hidden), r.hactivation(v, act, True)], axis=1)
        return [r.hdense(joined, dense)]

    return model, forward


MODELS = {
    "maxpool1d": lambda: pool_model(PMaxPool1D, {"pool_size": 2}, (8, 2), relu=True),
    "maxpool2d": lambda: pool_model(PMaxPool2D, {"pool_size": (2, 2)}, (4, 4, 2), relu=True),
    "avgpool1d": lambda: pool_model(PAvgPool1D, {"pool_size": 4}, (8, 2), relu=False),
    "avgpool2d": lambda: pool_model(PAvgPool2D, {"pool_size": (2, 2)}, (4, 4, 2), relu=True),
    "avgpool2d_signed": lambda: pool_model(
        PAvgPool2D, {"pool_size": (2, 2)}, (4, 4, 2), relu=False
    ),
    "reshape_permute_dropout": reshape_model,
    "concatenate": concat_model,
}


@pytest.mark.parametrize("name", list(MODELS))
def test_inference_equals_fraction_reference_in_and_out_of_range(name, rng):
    model, forward = MODELS[name]()
    randomise_model(model, rng)
    shape = tuple(model.input.shape[1:])
    x_cal = rng.normal(size=(64, *shape)).astype("float32")
    compute_bops(model, x_cal, verbose=False)

    calibration = Reference()
    forward(calibration, x_cal)
    for layer_name, (k, i) in calibration.seen.items():  # same formats as the library
        got_k, got_i, _ = model.get_layer(layer_name).pre_activation_quantizer.exact_format()
        np.testing.assert_array_equal(got_k, k, err_msg=layer_name)
        np.testing.assert_array_equal(got_i, i, err_msg=layer_name)

    x_test = np.concatenate(
        [x_cal[:16], 4.0 * rng.normal(size=(16, *shape)), 50.0 * rng.normal(size=(8, *shape))]
    ).astype("float32")
    expected = forward(Reference(calibration.seen), x_test)
    got = model.predict(x_test, verbose=0)
    got = got if isinstance(got, list) else [got]
    for g, e in zip(got, expected, strict=True):
        e = e.astype(np.float64)
        assert np.array_equal(g, e), f"{np.sum(g != e)} of {g.size} outputs differ"
    # Far-out inputs really overflowed (else the out-of-range part tests nothing).
    unwrapped = forward(Reference(), x_test[32:])[-1].astype(np.float64)
    assert not np.array_equal(unwrapped, expected[-1][32:].astype(np.float64))

    if name.startswith("avgpool"):
        # The Keras average is the exact rational mean, with finer bits than its inputs:
        # some means are not on any input's grid (else exactness would be trivial).
        pool_out = expected[0]
        f_in = rounded_f(model.get_layer("act"))
        scale = 2 ** int(f_in.max())
        assert any(v * scale != int(v * scale) for v in pool_out.ravel())


def test_avgpool_with_same_padding_needing_no_pad_is_exact(rng):
    # 'same' on 4x4 with 2x2 windows, stride 2: no padding, so it equals 'valid'.
    inp = keras.Input((4, 4, 1))
    q = HQuantize(name="inp_q", pre_activation_quantizer_config={"init_bw": 3})
    pool = PAvgPool2D(2, padding="same")
    model = keras.Model(inp, pool(q(inp)))
    x = rng.normal(size=(8, 4, 4, 1)).astype("float32")
    compute_bops(model, x, verbose=False)
    xq = np.floor(x * 8 + 0.5) / 8  # the input quantizer rounds half up onto 1/8
    expected = xq.reshape(8, 2, 2, 2, 2, 1).transpose(0, 1, 3, 2, 4, 5).reshape(8, 2, 2, 4, 1)
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected.sum(axis=3) / 4)


@pytest.mark.slow
def test_model_with_every_passive_layer_saves_and_loads(tmp_path, rng):
    inp = keras.Input((4, 4, 2))
    x = HActivation("relu")(HQuantize(name="inp_q")(inp))
    a = PFlatten()(PMaxPool2D(2)(x))
    b = PReshape((-1,))(PPermute((2, 1, 3))(PAvgPool2D((2, 2), strides=(2, 2))(x)))
    c = PFlatten()(PAvgPool1D(2)(PMaxPool1D(2, padding="same")(PReshape((16, 2))(x))))
    joined = PDropout(0.3)(PConcatenate()([a, b, c]))
    model = keras.Model(inp, HDense(2)(joined))
    model.compile("adam", "mse")
    x_train = rng.normal(size=(32, 4, 4, 2)).astype("float32")
    model.fit(x_train, rng.normal(size=(32, 2)), epochs=1, batch_size=16, verbose=0)
    total = compute_bops(model, x_train, verbose=False)
    assert total > 0
    reload_and_compare(model, x_train, tmp_path, total, outside=20.0)


def branch_model(passive: keras.layers.Layer | None) -> keras.Model:
    """``x`` feeds both a second HDense and (through ``passive``, if any) a third one.

    A passive layer that returns its input object (dropout at inference, a reshape to
    the same shape) must not make the second HDense look shared.
    """
    inp = keras.Input((6,))
    x = HDense(4, name="first")(HQuantize(name="inp_q")(inp))
    a = x if passive is None else passive(x)
    b = HDense(3, name="second")(x)
    return keras.Model(inp, HAdd(name="add")([HDense(3, name="third")(a), b]))


@pytest.mark.smoke
@pytest.mark.parametrize(
    "make",
    [lambda: PDropout(0.1), lambda: PReshape((4,)), lambda: PFlatten()],
    ids=["dropout", "reshape_same_shape", "flatten_flat"],
)
def test_passive_layer_returning_its_input_on_a_branched_tensor(make, rng):
    model = branch_model(make())
    x = rng.normal(size=(64, 6)).astype("float32")
    model.compile("adam", "mse")
    model.fit(x, rng.normal(size=(64, 3)), epochs=1, batch_size=16, verbose=0)
    bops = compute_bops(model, x, verbose=False)
    got = model.predict(np.concatenate([x, 8 * x]), verbose=0)

    # Reference: the same weights without the passive layer, which changes nothing.
    twin = branch_model(None)
    for layer in twin.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    assert compute_bops(twin, x, verbose=False) == bops
    np.testing.assert_array_equal(got, twin.predict(np.concatenate([x, 8 * x]), verbose=0))
