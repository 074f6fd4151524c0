"""Bit-exact conversion of convolutions, pools, reshapes, merges and dropout.

One functional model holds every layer kind of this module (branches, two
outputs), so g++ compiles once; every output is compared exactly with Keras.
"""

import hls_support as hs
import keras
import numpy as np
import pytest

from HGQ import HDense, HQuantize
from HGQ.layers.add import HAdd
from HGQ.layers.concatenate import PConcatenate
from HGQ.layers.conv import HConv1D, HConv2D
from HGQ.layers.dropout import PDropout
from HGQ.layers.pooling import PAvgPool1D, PAvgPool2D, PMaxPool1D, PMaxPool2D
from HGQ.layers.reshaping import PFlatten, PPermute, PReshape

pytestmark = pytest.mark.slow

LAYER_KINDS = [
    HConv2D,
    HConv1D,
    HAdd,
    PConcatenate,
    PMaxPool2D,
    PAvgPool2D,
    PMaxPool1D,
    PAvgPool1D,
    PFlatten,
    PReshape,
    PPermute,
    PDropout,
    HDense,
]


def branchy_cnn() -> keras.Model:
    inp = keras.Input((8, 8, 2))
    x = HQuantize(name="inp_q")(inp)
    a = HConv2D(4, 3, padding="same", activation="relu", name="conv_same_relu")(x)
    b = HConv2D(4, 3, padding="same", use_bias=False, name="conv_nobias")(x)
    s = HAdd(name="add")([a, b])
    p = PMaxPool2D(2, name="max2d")(s)
    q = PAvgPool2D(2, name="avg2d")(s)
    c = PConcatenate(name="concat")([p, q])
    c = PDropout(0.2, name="drop")(c)
    f = PFlatten(name="flat")(c)
    out1 = HDense(5, name="head1")(f)
    r = PPermute((2, 1), name="permute")(PReshape((8, 16), name="reshape")(f))
    r = HConv1D(6, 2, strides=2, activation="relu", name="conv1d_strided")(r)
    r = PMaxPool1D(2, name="max1d")(HConv1D(4, 3, padding="valid", name="conv1d_valid")(r))
    r = PAvgPool1D(2, strides=1, name="avg1d")(r)
    out2 = HDense(3, name="head2")(PFlatten(name="flat2")(r))
    return keras.Model(inp, [out1, out2])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    rng = np.random.default_rng(11)
    keras.utils.set_random_seed(11)
    model = branchy_cnn()
    x = rng.normal(size=(400, 8, 8, 2)).astype("float32")
    y = [rng.normal(size=(400, 5)), rng.normal(size=(400, 3))]
    hs.train_briefly(model, x, y)
    hs.scramble_bitwidths(model, rng)
    model_hls = hs.convert_compiled(model, x, tmp_path_factory.mktemp("cnn"))
    return model, model_hls, x, rng


def test_model_covers_every_layer_kind(converted):
    model = converted[0]
    present = {type(layer) for layer in model.layers}
    assert set(LAYER_KINDS) <= present


def test_bit_exact_inside_calibrated_range(converted):
    model, model_hls, x, _ = converted
    assert hs.mismatches(model, model_hls, x) == (0, x.shape[0] * 8)


def test_bit_exact_outside_calibrated_range(converted):
    model, model_hls, x, rng = converted
    x_far = hs.out_of_range(x, rng)
    assert hs.mismatches(model, model_hls, x_far) == (0, x.shape[0] * 8)


def fused_batchnorm_model() -> keras.Model:
    from HGQ import HConv1DBatchNorm, HConv2DBatchNorm, HDenseBatchNorm

    inp = keras.Input((6, 6, 2))
    x = HQuantize(name="inp_q")(inp)
    x = HConv2DBatchNorm(4, 3, activation="relu", name="conv2d_bn")(x)
    x = PReshape((16, 4), name="to_1d")(x)
    x = HConv1DBatchNorm(3, 2, strides=2, use_bias=False, name="conv1d_bn")(x)
    x = PFlatten(name="flat")(x)
    a = HDenseBatchNorm(5, activation="relu", name="dense_bn")(x)
    b = HDense(5, name="dense")(x)
    c = HDense(5, name="dense_c")(x)
    out = HAdd(name="add3")([a, b, c])
    return keras.Model(inp, PConcatenate(name="concat3")([out, a, b]))


@pytest.fixture(scope="module")
def converted_bn(tmp_path_factory):
    rng = np.random.default_rng(12)
    keras.utils.set_random_seed(12)
    model = fused_batchnorm_model()
    x = rng.normal(size=(400, 6, 6, 2)).astype("float32")
    hs.train_briefly(model, x, rng.normal(size=(400, 15)), epochs=3)
    hs.scramble_bitwidths(model, rng)
    model_hls = hs.convert_compiled(model, x, tmp_path_factory.mktemp("bn"))
    return model, model_hls, x, rng


def test_fused_batchnorm_and_three_way_merges_bit_exact(converted_bn):
    model, model_hls, x, rng = converted_bn
    # The BN layers really moved their statistics, so the fold is not the identity.
    assert not np.allclose(model.get_layer("dense_bn").moving_variance.numpy(), 1.0)
    for data in (x, hs.out_of_range(x, rng)):
        assert hs.mismatches(model, model_hls, data) == (0, data.shape[0] * 15)
