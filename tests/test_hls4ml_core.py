"""Bit-exact conversion of HQuantize, Signature, HDense and HActivation.

Each model is compiled once for the module (g++ takes seconds); the tests then
compare every output with the Keras model, exactly.
"""

import hls_support as hs
import keras
import numpy as np
import pytest

from HGQ import HActivation, HDense, HQuantize, Signature

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rng_module():
    return np.random.default_rng(7)


@pytest.fixture(scope="module")
def dense_chain(tmp_path_factory, rng_module):
    """HQuantize -> HDense(relu) -> HActivation(tanh) -> HDense -> HActivation(sigmoid)."""
    rng = rng_module
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            HQuantize(name="inp_q"),
            HDense(8, activation="relu", name="d1"),
            HActivation("tanh", name="tanh"),
            HDense(5, name="d2"),
            HActivation("sigmoid", name="sigmoid"),
            HDense(3, use_bias=False, name="d3", bops_reg_factor=1e-5),
        ]
    )
    x = rng.normal(size=(600, 6)).astype("float32")
    hs.train_briefly(model, x, rng.normal(size=(600, 3)).astype("float32"))
    hs.scramble_bitwidths(model, rng, low=1, high=8)
    model_hls = hs.convert_compiled(model, x, tmp_path_factory.mktemp("chain"))
    return model, model_hls, x


def test_dense_chain_bit_exact_in_range(dense_chain):
    model, model_hls, x = dense_chain
    assert hs.mismatches(model, model_hls, x) == (0, x.shape[0] * 3)


def test_dense_chain_bit_exact_out_of_range(dense_chain, rng_module):
    model, model_hls, x = dense_chain
    x_far = hs.out_of_range(x, rng_module)
    # Far inputs really overflow the calibrated formats: the first layer wraps.
    q = model.get_layer("inp_q").pre_activation_quantizer
    k, i, _ = q.exact_format()
    assert np.any(np.abs(x_far) > 2.0 ** i.max())
    assert hs.mismatches(model, model_hls, x_far) == (0, x.shape[0] * 3)


def test_lookup_tables_are_not_trivial(dense_chain):
    """The tanh/sigmoid tables must do real work: outputs take many distinct values."""
    model, model_hls, x = dense_chain
    for name in ("tanh", "sigmoid"):
        sub = keras.Model(model.inputs, model.get_layer(name).output)
        assert len(np.unique(sub.predict(x, verbose=0))) > 20, name


@pytest.fixture(scope="module")
def signature_model(tmp_path_factory, rng_module):
    rng = rng_module
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            Signature(keep_negative=[1, 1, 0, 1], bits=[8, 6, 5, 7], int_bits=[3, 2, 4, 0]),
            HDense(4, name="d1"),
            HActivation("relu", name="act"),
            HActivation("linear", name="lin"),
        ]
    )
    x = rng.normal(scale=3, size=(400, 4)).astype("float32")
    hs.train_briefly(model, x, rng.normal(size=(400, 4)).astype("float32"))
    hs.scramble_bitwidths(model, rng)
    model_hls = hs.convert_compiled(model, x, tmp_path_factory.mktemp("sig"))
    return model, model_hls, x


def test_signature_relu_linear_bit_exact(signature_model, rng_module):
    model, model_hls, x = signature_model
    for data in (x, hs.out_of_range(x, rng_module)):
        assert hs.mismatches(model, model_hls, data) == (0, data.size)
