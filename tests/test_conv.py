"""HConv1D / HConv2D: shapes, float agreement with Keras, EBOPs, exactness, saving.

Expected values come from hand calculations, keras.layers.Conv1D/Conv2D, or
independent references written here (brute-force loops, exact rationals); never
from the code under test.
"""

import itertools
import math
from fractions import Fraction

import keras
import numpy as np
import pytest
import reference as ref
from randomise import BIT_RANGES, input_significant_bits, randomise_bits
from round_trip import reload_and_compare

from HGQ import HQuantize, Signature
from HGQ.bops import ResetMinMax, compute_bops
from HGQ.layers.conv import HConv1D, HConv2D

HIGH = {"init_bw": 20}


# --------------------------------------------------------------- references
def geometry(spatial, kernel_size, strides, dilation, padding):
    """Output shape and zeros before each axis, by Keras's documented convention.

    'same': ceil(n / s) outputs; the padding the last window needs is split with the
    odd zero at the end (TensorFlow's rule, which Keras follows on every backend).
    """
    out, before = [], []
    for n, k, s, d in zip(spatial, kernel_size, strides, dilation, strict=True):
        if padding == "same":
            o = math.ceil(n / s)
            total = max((o - 1) * s + (k - 1) * d + 1 - n, 0)
            out.append(o)
            before.append(total // 2)
        else:
            out.append((n - (k - 1) * d - 1) // s + 1)
            before.append(0)
    return out, before


def input_index(pos, off, strides, dilation, before):
    """Input coordinates met by kernel offset ``off`` at output position ``pos``."""
    return [
        p * s + o * d - b for p, o, s, d, b in zip(pos, off, strides, dilation, before, strict=True)
    ]


def reference_conv(x, kernel, strides, dilation, padding):
    """Correlation of an object array ``x`` (batch, *spatial, cin) of Fractions."""
    spatial = x.shape[1:-1]
    kernel_size = kernel.shape[:-2]
    out_shape, before = geometry(spatial, kernel_size, strides, dilation, padding)
    out = np.empty((x.shape[0], *out_shape, kernel.shape[-1]), dtype=object)
    for pos in itertools.product(*(range(o) for o in out_shape)):
        acc = np.full((x.shape[0], kernel.shape[-1]), Fraction(0), dtype=object)
        for off in itertools.product(*(range(k) for k in kernel_size)):
            idx = input_index(pos, off, strides, dilation, before)
            if all(0 <= i < n for i, n in zip(idx, spatial, strict=True)):
                acc = acc + x[(slice(None), *idx)].dot(kernel[off])
        out[(slice(None), *pos)] = acc
    return out


def weight_bit_span(value: float, f: int) -> int:
    """Highest to lowest set bit of |value| * 2^f, by integer bit tricks."""
    m = Fraction(abs(value)) * Fraction(2) ** int(f)
    assert m.denominator == 1, "weight not on its grid"
    m = int(m)
    return 0 if m == 0 else m.bit_length() - (m & -m).bit_length() + 1


def brute_force_ebops(bw_in, bw_kernel, strides, dilation, padding, parallel_factor):
    """Sum over every multiplication of one inference of bw_in * bw_kernel, scaled."""
    spatial = bw_in.shape[:-1]
    kernel_size = bw_kernel.shape[:-2]
    cin, cout = bw_kernel.shape[-2:]
    out_shape, before = geometry(spatial, kernel_size, strides, dilation, padding)
    total = 0
    for pos in itertools.product(*(range(o) for o in out_shape)):
        for co in range(cout):
            for off in itertools.product(*(range(k) for k in kernel_size)):
                idx = input_index(pos, off, strides, dilation, before)
                if not all(0 <= i < n for i, n in zip(idx, spatial, strict=True)):
                    continue
                for ci in range(cin):
                    total += int(bw_in[(*idx, ci)]) * int(bw_kernel[(*off, ci, co)])
    return total * parallel_factor / math.prod(out_shape)


def rounded_f(quantizer):
    return np.round(quantizer.fractional_bits.numpy()).astype(int)


# ------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    "cls, in_shape, kwargs, out_shape",
    [
        (HConv1D, (10, 2), dict(kernel_size=3), (8, 4)),
        (HConv1D, (10, 2), dict(kernel_size=3, padding="same"), (10, 4)),
        (HConv1D, (10, 2), dict(kernel_size=3, strides=3), (3, 4)),
        (HConv1D, (10, 2), dict(kernel_size=3, strides=3, padding="same"), (4, 4)),
        (HConv2D, (7, 6, 3), dict(kernel_size=(3, 2)), (5, 5, 4)),
        (HConv2D, (7, 6, 3), dict(kernel_size=3, padding="same"), (7, 6, 4)),
        (HConv2D, (7, 6, 3), dict(kernel_size=3, strides=(2, 3)), (3, 2, 4)),
        (HConv2D, (7, 6, 3), dict(kernel_size=2, strides=2, padding="same"), (4, 3, 4)),
    ],
)
def test_output_shapes(cls, in_shape, kwargs, out_shape):
    inp = keras.Input(in_shape)
    layer = cls(4, **kwargs)
    out = layer(HQuantize(name="inp_q")(inp))
    assert tuple(out.shape) == (None, *out_shape)
    x = np.zeros((2, *in_shape), "float32")
    assert keras.Model(inp, out).predict(x, verbose=0).shape == (2, *out_shape)


# ---------------------------------------------------- float agreement, Keras
@pytest.mark.parametrize(
    "rank, kwargs",
    [
        (1, dict(kernel_size=3, padding="same", strides=2, activation="relu")),
        (1, dict(kernel_size=2, use_bias=False)),
        (2, dict(kernel_size=(3, 2), padding="same")),
        (2, dict(kernel_size=3, strides=(2, 1), activation="relu")),
    ],
)
def test_float_agreement_with_keras_conv_at_high_bitwidth(rank, kwargs, rng):
    in_shape = (9, 3) if rank == 1 else (7, 6, 3)
    hcls, kcls = (HConv1D, keras.layers.Conv1D) if rank == 1 else (HConv2D, keras.layers.Conv2D)
    inp = keras.Input(in_shape)
    hconv = hcls(4, kernel_quantizer_config=HIGH, pre_activation_quantizer_config=HIGH, **kwargs)
    hmodel = keras.Model(
        inp, hconv(HQuantize(name="inp_q", pre_activation_quantizer_config=HIGH)(inp))
    )
    kconv = kcls(4, **kwargs)
    kmodel = keras.Sequential([keras.Input(in_shape), kconv])
    if hconv.use_bias:
        hconv.bias.assign(rng.normal(size=hconv.bias.shape).astype("float32"))
    kconv.set_weights([hconv.kernel.numpy()] + ([hconv.bias.numpy()] if hconv.use_bias else []))
    x = rng.normal(size=(16, *in_shape)).astype("float32")
    got = hmodel.predict(x, verbose=0)
    expected = kmodel.predict(x, verbose=0)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=5e-5, rtol=0)
    assert np.abs(expected).max() > 0.5  # not trivially zero


# ------------------------------------------------------------- EBOPs, hand
def _tiny_conv1d(**conv_kwargs):
    """Length-4, 1-channel input with per-position widths 3, 2, 1, 4 bits; kernel size 2.

    Kernel (f = 2), output channel 0: [0.75, 1.25] -> 0b11 (2 bits), 0b101 (3 bits);
    output channel 1: [0.5, 0.0] -> 0b1 (1 bit), 0 (0 bits).
    """
    inp = keras.Input((4, 1))
    sig = Signature(keep_negative=0, bits=[[3], [2], [1], [4]], int_bits=1)
    conv = HConv1D(2, 2, use_bias=False, **conv_kwargs)
    model = keras.Model(inp, conv(sig(inp)))
    conv.kernel.assign(np.array([[[0.75, 0.5]], [[1.25, 0.0]]], "float32"))
    conv.kernel_quantizer.fractional_bits.assign(np.full((2, 1, 2), 2.0, "float32"))
    return model, conv


# Per inference (bw_in = [3, 2, 1, 4]; channel 0 kernel bits [2, 3], channel 1 [1, 0]):
#  valid, stride 1: 3 positions p=0..2 use in[p], in[p+1]:
#    ch0 (3+2+1)*2 + (2+1+4)*3 = 33, ch1 (3+2+1)*1 = 6 -> 39, / 3 positions = 13
#  same, stride 1: 4 positions, one zero pad at the end (in[4] has 0 bits):
#    ch0 (3+2+1+4)*2 + (2+1+4+0)*3 = 41, ch1 10*1 = 10 -> 51, / 4 = 12.75
#  valid, stride 2: positions p=0, 2:
#    ch0 (3+1)*2 + (2+4)*3 = 26, ch1 (3+1)*1 = 4 -> 30, / 2 = 15
# The default (parallel_factor None) prices every position: the per-inference sums.
@pytest.mark.parametrize(
    "kwargs, expected",
    [
        pytest.param({}, 39.0, marks=pytest.mark.smoke),
        (dict(parallel_factor=1), 13.0),
        (dict(parallel_factor=3), 39.0),
        (dict(padding="same"), 51.0),
        (dict(padding="same", parallel_factor=1), 12.75),
        (dict(padding="same", parallel_factor=4), 51.0),
        (dict(strides=2), 30.0),
        (dict(strides=2, parallel_factor=1), 15.0),
        (dict(strides=2, parallel_factor=2), 30.0),
    ],
)
def test_conv1d_ebops_by_hand(kwargs, expected):
    model, conv = _tiny_conv1d(**kwargs)
    x = np.array([[[0.5], [1.0], [1.0], [0.25]]], "float32")
    assert compute_bops(model, x, verbose=False) == expected
    assert conv.compute_exact_bops() == expected
    assert float(conv.bops.numpy()) == expected
    # Training surrogate: the deployed widths (0.5 counts 1 bit, as in the exact count,
    # and 0 counts 0), on the recorded input widths: the same hand-worked total.
    assert float(keras.ops.convert_to_numpy(conv.bops_surrogate())) == expected


# ------------------------------------------------------ EBOPs, brute force
@pytest.mark.parametrize(
    "rank, kwargs",
    [
        (2, dict(kernel_size=3, padding="same", strides=2, parallel_factor=3)),
        (2, dict(kernel_size=(2, 3), padding="same", parallel_factor=5)),
        (1, dict(kernel_size=3, padding="valid", parallel_factor=2)),
    ],
)
def test_ebops_against_brute_force_numpy(rank, kwargs, rng):
    in_shape = (9, 2) if rank == 1 else (6, 5, 2)
    cls = HConv1D if rank == 1 else HConv2D
    inp = keras.Input(in_shape)
    q = HQuantize(name="inp_q")
    conv = cls(3, **kwargs)
    model = keras.Model(inp, conv(q(inp)))
    randomise_bits(q.pre_activation_quantizer, rng, -1, 4)
    randomise_bits(conv.kernel_quantizer, rng, 0, 4)
    conv.kernel.assign(rng.normal(size=conv.kernel.shape).astype("float32"))
    x = (rng.normal(size=(50, *in_shape)) * rng.uniform(0.1, 4, size=in_shape)).astype("float32")

    total = compute_bops(model, x, verbose=False)

    # Input widths from the calibration data, re-derived in exact arithmetic.
    f_in = rounded_f(q.pre_activation_quantizer)[0]
    xq = ref.quantize_array(ref.to_fractions(x), f_in[None])
    k, i = ref.calibrate(xq, f_in)
    bw_in = np.maximum(k + i + f_in, 0)
    # Kernel widths from the float kernel, rounded half up on each weight's grid.
    f_k = rounded_f(conv.kernel_quantizer)
    kernel = conv.kernel.numpy()
    bw_kernel = np.zeros(kernel.shape, int)
    for idx in np.ndindex(kernel.shape):
        qv = ref.round_half_up(Fraction(float(kernel[idx])), int(f_k[idx]))
        bw_kernel[idx] = weight_bit_span(qv, f_k[idx])
    assert 0 < np.count_nonzero(bw_kernel) < bw_kernel.size  # some weights pruned, some not
    expected = brute_force_ebops(
        bw_in,
        bw_kernel,
        conv.strides,
        conv.dilation_rate,
        conv.padding,
        kwargs["parallel_factor"],
    )
    assert total == pytest.approx(expected, rel=1e-12)
    assert conv.compute_exact_bops() == pytest.approx(expected, rel=1e-12)

    # The training surrogate (keras.ops.conv of the width maps) on the same records:
    # its widths are the deployed ones, so it equals the same brute-force total.
    surrogate_in = keras.ops.convert_to_numpy(conv.input_bitwidth())
    np.testing.assert_array_equal(surrogate_in, bw_in)
    np.testing.assert_allclose(float(conv.bops_surrogate()), expected, rtol=1e-6)


# ------------------------------------------------------ exact fixed point
def build_model(rng, rank, widths="narrow"):
    if rank == 1:
        in_shape = (7, 2)
        layers = [
            HConv1D(3, 3, padding="same", strides=2, activation="relu", name="c1"),
            HConv1D(2, 2, name="c2"),
        ]
    else:
        in_shape = (5, 4, 2)
        layers = [
            HConv2D(2, 3, padding="same", activation="relu", name="c1"),
            HConv2D(2, 2, strides=2, name="c2"),
        ]
    if widths == "wide":
        layers = layers[:1]
    model = keras.Sequential([keras.Input(in_shape), HQuantize(name="inp_q"), *layers])
    bits = BIT_RANGES[widths]
    for layer in model.layers:
        kind = "input" if isinstance(layer, HQuantize) else "output"
        randomise_bits(layer.pre_activation_quantizer, rng, *bits[kind])
        if hasattr(layer, "kernel"):
            randomise_bits(layer.kernel_quantizer, rng, *bits["kernel"])
            layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    return model, in_shape


def reference_params(model):
    params = []
    for layer in model.layers:
        f_out = rounded_f(layer.pre_activation_quantizer)[0]
        entry = {"name": layer.name, "f_out": f_out}
        if hasattr(layer, "kernel"):
            f_k = rounded_f(layer.kernel_quantizer)
            entry["kernel"] = ref.quantize_array(ref.to_fractions(layer.kernel.numpy()), f_k)
            # The bias is rounded onto the finest output grid of its channel.
            f_bias = f_out.reshape(-1, f_out.shape[-1]).max(axis=0)
            entry["bias"] = ref.quantize_array(ref.to_fractions(layer.bias.numpy()), f_bias)
            entry["geometry"] = (layer.strides, layer.dilation_rate, layer.padding)
            entry["relu"] = layer.activation_name == "relu"
        params.append(entry)
    return params


def reference_forward(params, x, formats=None):
    values = ref.to_fractions(x)
    seen = {}
    for p in params:
        if "kernel" in p:
            values = reference_conv(values, p["kernel"], *p["geometry"]) + p["bias"]
            if p["relu"]:
                values = np.vectorize(lambda v: max(v, 0), otypes=[object])(values)
        values = ref.quantize_array(values, p["f_out"][None])
        if formats is None:
            seen[p["name"]] = ref.calibrate(values, p["f_out"])
        else:
            k, i = formats[p["name"]]
            values = ref.wrap_array(values, k, i, p["f_out"])
    return values, seen


@pytest.mark.parametrize("widths", ["narrow", "wide"])
@pytest.mark.parametrize("rank", [1, 2])
def test_inference_equals_exact_reference_in_and_out_of_range(rank, widths, rng):
    model, in_shape = build_model(rng, rank, widths)
    params = reference_params(model)
    x_cal = rng.normal(size=(80, *in_shape)).astype("float32")
    compute_bops(model, x_cal, bsz=32, verbose=False)

    _, formats = reference_forward(params, x_cal)
    for layer in model.layers:
        k, i, _ = layer.pre_activation_quantizer.exact_format()
        np.testing.assert_array_equal(k, formats[layer.name][0], err_msg=layer.name)
        np.testing.assert_array_equal(i, formats[layer.name][1], err_msg=layer.name)

    x_test = np.concatenate(
        [
            x_cal[:20],
            4.0 * rng.normal(size=(20, *in_shape)),
            50.0 * rng.normal(size=(10, *in_shape)),
        ]
    ).astype("float32")
    expected, _ = reference_forward(params, x_test, formats)
    expected = expected.astype(np.float64)
    got = model.predict(x_test, verbose=0)
    assert np.array_equal(got, expected), f"{np.sum(got != expected)} of {got.size} differ"
    if widths == "wide":  # the products really take operands wider than TF32's 11 bits
        assert input_significant_bits(model, x_test) > 11
    unwrapped, _ = reference_forward(params, x_test[20:])
    assert not np.array_equal(unwrapped.astype(np.float64), expected[20:])  # overflow happened


# ------------------------------------------------------------ save / load
@pytest.mark.slow
def test_save_load_round_trip_after_training_and_calibration(tmp_path, rng):
    inp = keras.Input((8, 2))
    x = HQuantize(name="inp_q")(inp)
    x = HConv1D(
        4,
        3,
        padding="same",
        activation="relu",
        parallel_factor=2,
        bops_reg_factor=1e-6,
        kernel_quantizer_config={"init_bw": 3},
        pre_activation_quantizer_config={"init_bw": 3, "bw_clip": (-4, 8)},
    )(x)
    x = HConv1D(2, 2, strides=2, use_bias=False, kernel_initializer="he_normal")(x)
    model = keras.Model(inp, x)
    data = rng.normal(size=(64, 8, 2)).astype("float32")
    model.compile("adam", "mse")
    history = model.fit(
        data, data[:, ::2, :], epochs=2, verbose=0, callbacks=[ResetMinMax()], batch_size=16
    )
    assert history.history["bops"][-1] > 0
    bops = compute_bops(model, data, verbose=False)
    loaded = reload_and_compare(model, data, tmp_path, bops)
    for a, b in zip(model.layers, loaded.layers, strict=True):
        assert type(a) is type(b)
        assert a.get_config() == b.get_config()


def test_get_config_round_trip():
    layer = HConv2D(
        5,
        (3, 1),
        strides=(1, 2),
        padding="same",
        activation="relu",
        use_bias=False,
        parallel_factor=4,
        kernel_initializer="he_uniform",
        kernel_regularizer=keras.regularizers.L2(1e-3),
        activity_regularizer=keras.regularizers.L1(1e-4),
        bops_reg_factor=1e-5,
        kernel_quantizer_config={"init_bw": 4},
    )
    config = layer.get_config()
    clone = HConv2D.from_config(config)
    assert clone.get_config() == config
    assert (clone.kernel_size, clone.strides, clone.parallel_factor) == ((3, 1), (1, 2), 4)
    assert clone.activity_regularizer is not None


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(data_format="channels_first"), "channels_last"),
        (dict(activation="tanh"), "HActivation"),
        (dict(padding="causal"), "padding"),
        (dict(groups=2), "groups"),
        (dict(dilation_rate=2), "dilation_rate=2 is not supported: hls4ml"),
        (dict(parallel_factor=0), "parallel_factor"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HConv1D(2, 3, **kwargs)


def test_channels_first_default_format_is_refused(monkeypatch):
    monkeypatch.setattr(keras.config, "image_data_format", lambda: "channels_first")
    with pytest.raises(ValueError, match="data_format='channels_last'"):
        HConv2D(2, 3)


def test_parallel_factor_above_positions_is_refused():
    inp = keras.Input((4, 1))
    with pytest.raises(ValueError, match="parallel_factor"):
        HConv1D(2, 2, parallel_factor=4)(HQuantize(name="inp_q")(inp))
