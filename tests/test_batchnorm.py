"""Fused batch normalisation: statistics, folding, deployment of the folded weights.

Expected values come from hand calculations, plain keras.layers.BatchNormalization,
plain HDense/HConv layers given independently folded weights, and exact rational
references; never from the code under test.
"""

import keras
import numpy as np
import pytest
import reference as ref
from keras import ops
from randomise import randomise_bits
from round_trip import reload_and_compare
from test_conv import reference_conv

from HGQ import HDense, HQuantize, Signature
from HGQ.bops import ResetMinMax, compute_bops
from HGQ.layers.batchnorm import HConv1DBatchNorm, HConv2DBatchNorm, HDenseBatchNorm
from HGQ.layers.conv import HConv1D, HConv2D

HIGH = {"init_bw": 20}
EPS = 1e-3


def high_bitwidth_model(layer, in_shape):
    inp = keras.Input(in_shape)
    q = HQuantize(name="inp_q", pre_activation_quantizer_config=HIGH)
    return keras.Model(inp, layer(q(inp)))


def set_random_bn_state(layer, rng):
    n = layer.kernel.shape[-1]
    layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype("float32"))
    if layer.use_bias:
        layer.bias.assign(rng.normal(size=n).astype("float32"))
    layer.gamma.assign(rng.uniform(0.5, 2.0, size=n).astype("float32"))
    layer.beta.assign(rng.normal(size=n).astype("float32"))
    layer.moving_mean.assign(rng.normal(size=n).astype("float32"))
    layer.moving_variance.assign(rng.uniform(0.2, 3.0, size=n).astype("float32"))


def numpy_fold(layer):
    """W' = W * gamma / sqrt(var + eps); b' = beta + (b - mean) * gamma / sqrt(var + eps)."""
    kernel = layer.kernel.numpy().astype(np.float64)
    bias = layer.bias.numpy().astype(np.float64) if layer.use_bias else 0.0
    gamma = layer.gamma.numpy().astype(np.float64)
    scale = gamma / np.sqrt(layer.moving_variance.numpy().astype(np.float64) + layer.epsilon)
    folded_bias = layer.beta.numpy() + (bias - layer.moving_mean.numpy()) * scale
    return kernel * scale, folded_bias


def rounded_f(quantizer):
    return np.round(quantizer.fractional_bits.numpy()).astype(int)


def round_half_up(x, f):
    return np.floor(np.asarray(x, np.float64) * 2.0**f + 0.5) / 2.0**f


# --------------------------------------------------------- statistics
@pytest.mark.smoke
def test_one_training_step_uses_batch_statistics_and_updates_moving_ones(rng):
    layer = HDenseBatchNorm(3, kernel_quantizer_config=HIGH, pre_activation_quantizer_config=HIGH)
    model = high_bitwidth_model(layer, (5,))
    set_random_bn_state(layer, rng)
    mean0, var0 = layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()
    x = rng.normal(size=(64, 5)).astype("float32")

    out = ops.convert_to_numpy(model(x, training=True))

    y = x.astype(np.float64) @ layer.kernel.numpy() + layer.bias.numpy()
    mean, var = y.mean(axis=0), y.var(axis=0)  # biased variance, as Keras
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.99 * mean0 + 0.01 * mean, atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.99 * var0 + 0.01 * var, atol=1e-5)
    expected = (y - mean) / np.sqrt(var + EPS) * layer.gamma.numpy() + layer.beta.numpy()
    np.testing.assert_allclose(out, expected, atol=1e-4)
    # Inference uses the moving statistics and leaves them alone.
    before = layer.moving_mean.numpy().copy()
    model.predict(x, verbose=0)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), before)


def test_frozen_layer_uses_moving_statistics_in_training(rng):
    layer = HDenseBatchNorm(3, kernel_quantizer_config=HIGH, pre_activation_quantizer_config=HIGH)
    model = high_bitwidth_model(layer, (5,))
    set_random_bn_state(layer, rng)
    layer.trainable = False  # as keras.layers.BatchNormalization: inference statistics
    x = rng.normal(size=(32, 5)).astype("float32")
    before = layer.moving_variance.numpy().copy()
    out = ops.convert_to_numpy(model(x, training=True))
    np.testing.assert_array_equal(layer.moving_variance.numpy(), before)
    kernel, bias = numpy_fold(layer)
    np.testing.assert_allclose(out, x @ kernel + bias, atol=1e-4)


def test_fit_follows_keras_dense_batchnormalization(rng):
    x = (rng.normal(size=(256, 6)) + 0.5).astype("float32")
    y = (np.tanh(x[:, :3] * 2.0) + 0.3).astype("float32")
    hbn = HDenseBatchNorm(3, kernel_quantizer_config=HIGH, pre_activation_quantizer_config=HIGH)
    hmodel = high_bitwidth_model(hbn, (6,))
    dense, bn = keras.layers.Dense(3), keras.layers.BatchNormalization()
    kmodel = keras.Sequential([keras.Input((6,)), dense, bn])
    hbn.bias.assign(rng.normal(0, 2, size=3).astype("float32"))
    dense.set_weights([hbn.kernel.numpy(), hbn.bias.numpy()])
    for model in (hmodel, kmodel):
        model.compile(keras.optimizers.SGD(0.05), "mse")
        model.fit(x, y, epochs=3, batch_size=32, shuffle=False, verbose=0)

    # Both moved far from their initial values, and to the same place.
    assert np.abs(bn.moving_mean.numpy()).max() > 0.1
    np.testing.assert_allclose(hbn.moving_mean.numpy(), bn.moving_mean.numpy(), atol=2e-4)
    np.testing.assert_allclose(hbn.moving_variance.numpy(), bn.moving_variance.numpy(), rtol=1e-3)
    np.testing.assert_allclose(hbn.gamma.numpy(), bn.gamma.numpy(), atol=2e-4)
    np.testing.assert_allclose(hbn.beta.numpy(), bn.beta.numpy(), atol=2e-4)
    np.testing.assert_allclose(hbn.kernel.numpy(), dense.kernel.numpy(), atol=2e-4)
    np.testing.assert_allclose(
        hmodel.predict(x, verbose=0), kmodel.predict(x, verbose=0), atol=1e-3
    )


# ---------------------------------------------------------------- folding
@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("dense", dict(activation="relu")),
        ("dense", dict(use_bias=False)),
        ("conv1d", dict(kernel_size=3, padding="same", strides=2, activation="relu")),
        ("conv2d", dict(kernel_size=(2, 3), padding="same")),
    ],
)
def test_inference_equals_plain_layer_with_folded_weights(kind, kwargs, rng):
    cls, plain_cls, in_shape = {
        "dense": (HDenseBatchNorm, HDense, (5,)),
        "conv1d": (HConv1DBatchNorm, HConv1D, (9, 2)),
        "conv2d": (HConv2DBatchNorm, HConv2D, (6, 5, 2)),
    }[kind]
    cfg = dict(kernel_quantizer_config=HIGH, pre_activation_quantizer_config=HIGH)
    bn_layer = cls(3, **cfg, **kwargs)
    bn_model = high_bitwidth_model(bn_layer, in_shape)
    plain_kwargs = {**kwargs, "use_bias": True}
    plain = plain_cls(3, **cfg, **plain_kwargs)
    plain_model = high_bitwidth_model(plain, in_shape)
    set_random_bn_state(bn_layer, rng)
    kernel, bias = numpy_fold(bn_layer)
    plain.kernel.assign(kernel.astype("float32"))
    plain.bias.assign(bias.astype("float32"))

    x = rng.normal(size=(32, *in_shape)).astype("float32")
    got = bn_model.predict(x, verbose=0)
    expected = plain_model.predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    if kwargs.get("activation") == "relu":  # relu acts after the normalisation
        assert got.min() == 0.0 and (expected < 0).sum() == 0
        assert (got == 0).mean() > 0.1


def test_quantized_weights_are_the_independently_folded_ones_and_deploy_exactly(rng):
    inp = keras.Input((5,))
    q = HQuantize(name="inp_q")
    layer = HDenseBatchNorm(4, activation="relu", name="bn")
    model = keras.Model(inp, layer(q(inp)))
    set_random_bn_state(layer, rng)
    randomise_bits(q.pre_activation_quantizer, rng, 1, 4)
    randomise_bits(layer.kernel_quantizer, rng, 1, 5)
    randomise_bits(layer.pre_activation_quantizer, rng, 0, 4)
    f_k = rounded_f(layer.kernel_quantizer)
    f_out = rounded_f(layer.pre_activation_quantizer)[0]

    # The deployed weights: numpy fold, then round half up on each weight's grid
    # (bias on its output's grid).
    kernel, bias = numpy_fold(layer)
    kq = ops.convert_to_numpy(layer.quantized_kernel())
    bq = ops.convert_to_numpy(layer.quantized_bias())
    np.testing.assert_array_equal(kq, round_half_up(kernel, f_k))
    np.testing.assert_array_equal(bq, round_half_up(bias, f_out))
    assert not np.array_equal(kq, round_half_up(layer.kernel.numpy(), f_k))  # really folded

    x_cal = rng.normal(size=(100, 5)).astype("float32")
    compute_bops(model, x_cal, verbose=False)

    # A numpy matmul with the deployed weights is the layer's pre-quantization output.
    xq = keras.Model(inp, q.output).predict(x_cal, verbose=0).astype(np.float64)
    pre = ops.convert_to_numpy(layer.hgq_forward(xq.astype("float32"), training=False))
    np.testing.assert_array_equal(pre, np.maximum(xq @ kq + bq, 0))

    # Deployed as a plain dense layer in exact arithmetic, wrap-around included.
    f_in = rounded_f(q.pre_activation_quantizer)[0]

    def deployed(x, formats=None):
        v = ref.quantize_array(ref.to_fractions(x), f_in[None])
        if formats:
            v = ref.wrap_array(v, *formats["inp_q"], f_in)
        seen = {"inp_q": ref.calibrate(v, f_in)}
        v = v.dot(ref.to_fractions(kq)) + ref.to_fractions(bq)
        v = np.vectorize(lambda a: max(a, 0), otypes=[object])(v)
        v = ref.quantize_array(v, f_out[None])
        seen["bn"] = ref.calibrate(v, f_out)
        if formats:
            v = ref.wrap_array(v, *formats["bn"], f_out)
        return v.astype(np.float64), seen

    _, formats = deployed(x_cal)
    x_test = np.concatenate([x_cal[:30], 30 * rng.normal(size=(30, 5))]).astype("float32")
    expected, _ = deployed(x_test, formats)
    got = model.predict(x_test, verbose=0)
    assert np.array_equal(got, expected), f"{np.sum(got != expected)} of {got.size} differ"
    unwrapped, _ = deployed(x_test[30:])
    assert not np.array_equal(unwrapped, expected[30:])  # overflow was exercised


def test_conv_bn_deploys_as_a_plain_hconv_with_its_quantized_weights(rng):
    in_shape = (6, 5, 2)
    conv_kwargs = dict(kernel_size=3, padding="same", strides=2, activation="relu")

    def build(cls):
        inp = keras.Input(in_shape)
        q = HQuantize(name="inp_q")
        layer = cls(3, **conv_kwargs)
        return keras.Model(inp, layer(q(inp))), q, layer

    bn_model, bn_q, bn_layer = build(HConv2DBatchNorm)
    plain_model, plain_q, plain = build(HConv2D)
    set_random_bn_state(bn_layer, rng)
    randomise_bits(bn_q.pre_activation_quantizer, rng, 1, 4)
    randomise_bits(bn_layer.kernel_quantizer, rng, 1, 5)
    randomise_bits(bn_layer.pre_activation_quantizer, rng, 0, 4)
    for src, dst in [(bn_q, plain_q), (bn_layer, plain)]:
        dst.pre_activation_quantizer.fractional_bits.assign(
            src.pre_activation_quantizer.fractional_bits.numpy()
        )
    plain.kernel_quantizer.fractional_bits.assign(bn_layer.kernel_quantizer.fractional_bits.numpy())
    kq = ops.convert_to_numpy(bn_layer.quantized_kernel())
    bq = ops.convert_to_numpy(bn_layer.quantized_bias())
    plain.kernel.assign(kq)
    plain.bias.assign(bq)

    x_cal = rng.normal(size=(64, *in_shape)).astype("float32")
    bn_bops = compute_bops(bn_model, x_cal, verbose=False)
    assert bn_bops == compute_bops(plain_model, x_cal, verbose=False)
    x_test = np.concatenate([x_cal[:16], 20 * rng.normal(size=(16, *in_shape))]).astype("float32")
    np.testing.assert_array_equal(
        bn_model.predict(x_test, verbose=0), plain_model.predict(x_test, verbose=0)
    )

    # An independent correlation with the deployed weights gives the layer's
    # pre-quantization output exactly.
    xq = keras.Model(bn_model.input, bn_q.output).predict(x_cal[:8], verbose=0)
    expected = reference_conv(
        ref.to_fractions(xq), ref.to_fractions(kq), (2, 2), (1, 1), "same"
    ) + ref.to_fractions(bq)
    expected = np.maximum(expected.astype(np.float64), 0)
    got = ops.convert_to_numpy(bn_layer.hgq_forward(xq, training=False))
    np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------ EBOPs
@pytest.mark.smoke
def test_ebops_count_the_folded_kernel_by_hand():
    # Two unsigned 3-bit inputs. W = [[0.5], [1.0]] (1 bit each unfolded), gamma = 3,
    # var + eps = 3.75 + 0.25 = 4 -> scale 1.5, folded W' = [[0.75], [1.5]]: on the
    # f = 2 grid 0b11 and 0b110, 2 bits each. EBOPs = 3*2 + 3*2 = 12 (unfolded: 6).
    # Folded bias = beta + (0 - mean) * scale = 0.25 - 0.5 * 1.5 = -0.5.
    inp = keras.Input((2,))
    sig = Signature(keep_negative=0, bits=3, int_bits=1)
    layer = HDenseBatchNorm(1, use_bias=False, epsilon=0.25)
    model = keras.Model(inp, layer(sig(inp)))
    layer.kernel.assign(np.array([[0.5], [1.0]], "float32"))
    layer.kernel_quantizer.fractional_bits.assign(np.full((2, 1), 2.0, "float32"))
    layer.gamma.assign(np.array([3.0], "float32"))
    layer.beta.assign(np.array([0.25], "float32"))
    layer.moving_mean.assign(np.array([0.5], "float32"))
    layer.moving_variance.assign(np.array([3.75], "float32"))
    x = np.array([[0.25, 1.75], [1.0, 0.0]], "float32")
    assert compute_bops(model, x, verbose=False) == 12.0
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.quantized_kernel()), [[0.75], [1.5]])
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.quantized_bias()), [-0.5])
    # x @ W' + b' = [0.25*0.75 + 1.75*1.5 - 0.5, 0.75 - 0.5], on the f = 2 output grid.
    np.testing.assert_array_equal(model.predict(x, verbose=0), [[2.25], [0.25]])


def test_training_surrogate_prices_the_batch_folded_kernel(rng):
    # gamma = 16 multiplies every folded weight by 16: 4 more integer bits each, which
    # the training-time EBOPs must see (they would not if they priced the raw kernel).
    x = rng.normal(size=(64, 4)).astype("float32")
    layer = HDenseBatchNorm(
        2,
        bops_reg_factor=1e-9,
        gamma_initializer=keras.initializers.Constant(16.0),
        kernel_quantizer_config=HIGH,
    )
    model = high_bitwidth_model(layer, (4,))
    model.compile(keras.optimizers.SGD(0.0), "mse")
    model.fit(x, x[:, :2], epochs=1, batch_size=64, verbose=0)

    kernel = layer.kernel.numpy().astype(np.float64)
    y = x @ kernel + layer.bias.numpy()
    folded = kernel * 16.0 / np.sqrt(y.var(axis=0) + EPS)  # batch statistics
    bw_in = ops.convert_to_numpy(layer.input_bitwidth())

    def spans(w):  # bit span of each weight on the 2^-20 grid (exact integers)
        m = [abs(int(np.floor(v * 2.0**20 + 0.5))) for v in w.ravel()]
        return np.array([b.bit_length() - (b & -b).bit_length() + 1 if b else 0 for b in m])

    expected = np.sum(bw_in @ spans(folded).reshape(folded.shape))
    unfolded = np.sum(bw_in @ spans(kernel).reshape(kernel.shape))
    # The batch statistics are computed in float32 in the layer and in float64 here:
    # the lowest of ~24 bits (and so a span) can differ for a weight or two.
    assert float(layer.bops.numpy()) == pytest.approx(expected, rel=2e-2)
    assert expected > unfolded + 3 * 2 * bw_in.sum()


# ------------------------------------------------------------ save / load
@pytest.mark.slow
def test_save_load_round_trip_after_training_and_calibration(tmp_path, rng):
    inp = keras.Input((8, 2))
    x = HQuantize(name="inp_q")(inp)
    x = HConv1DBatchNorm(
        4, 3, padding="same", activation="relu", momentum=0.9, bops_reg_factor=1e-6
    )(x)
    x = HDenseBatchNorm(2, use_bias=False, center=False, epsilon=1e-2)(x)
    model = keras.Model(inp, x)
    data = rng.normal(size=(64, 8, 2)).astype("float32")
    model.compile("adam", "mse")
    model.fit(data, data, epochs=2, batch_size=16, verbose=0, callbacks=[ResetMinMax()])
    bops = compute_bops(model, data, verbose=False)
    loaded = reload_and_compare(model, data, tmp_path, bops)
    for a, b in zip(model.layers, loaded.layers, strict=True):
        assert type(a) is type(b)
        assert a.get_config() == b.get_config()
        if hasattr(a, "moving_mean"):
            assert np.abs(a.moving_mean.numpy()).max() > 0  # trained statistics survive
            np.testing.assert_array_equal(a.moving_mean.numpy(), b.moving_mean.numpy())
            np.testing.assert_array_equal(a.moving_variance.numpy(), b.moving_variance.numpy())


def test_get_config_round_trip():
    layer = HConv2DBatchNorm(
        3,
        2,
        padding="same",
        momentum=0.8,
        epsilon=1e-4,
        center=False,
        gamma_initializer="zeros",
        gamma_regularizer=keras.regularizers.L2(1e-2),
        parallel_factor=2,
    )
    config = layer.get_config()
    clone = HConv2DBatchNorm.from_config(config)
    assert clone.get_config() == config
    assert (clone.momentum, clone.epsilon, clone.center, clone.scale) == (0.8, 1e-4, False, True)
