"""Plain Keras layers inside an HGQ model are refused, naming the HGQ replacement."""

import keras
import numpy as np
import pytest

from HGQ import HDense, HQuantize
from HGQ.bops import ResetMinMax, compute_bops


def dense_after_hdense():
    inp = keras.Input((4,))
    x = HDense(3)(HQuantize(name="inp_q")(inp))
    return keras.Model(inp, keras.layers.Dense(2, name="plain")(x))


def pool_after_hdense():
    inp = keras.Input((4, 4, 1))
    x = HDense(2)(HQuantize(name="inp_q")(inp))
    return keras.Model(inp, keras.layers.MaxPooling2D(name="plain")(x))


@pytest.mark.smoke
@pytest.mark.parametrize(
    "make, replacement",
    [(dense_after_hdense, "HDense"), (pool_after_hdense, "PMaxPool2D")],
)
def test_compute_bops_names_layer_and_replacement(make, replacement, rng):
    model = make()
    x = rng.normal(size=(8, *model.input_shape[1:])).astype("float32")
    with pytest.raises(ValueError, match=f"'plain'.*{replacement}"):
        compute_bops(model, x, verbose=False)


def test_training_with_reset_minmax_names_layer(rng):
    model = dense_after_hdense()
    model.compile("adam", "mse")
    x = rng.normal(size=(8, 4)).astype("float32")
    before = [np.array(v) for v in model.weights]
    with pytest.raises(ValueError, match="'plain'.*HDense"):
        model.fit(x, x[:, :2], epochs=1, verbose=0, callbacks=[ResetMinMax()])
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(before, model.weights, strict=True))


def test_plain_layer_feeding_hgq_layer_fails_when_built():
    inp = keras.Input((4,))
    x = keras.layers.Dense(3, name="plain")(HQuantize(name="inp_q")(inp))
    with pytest.raises(ValueError, match="'plain'.*not an HGQ layer"):
        HDense(2)(x)


def test_shared_hgq_layer_is_refused_with_reason():
    inp = keras.Input((4,))
    a = HDense(4, name="a")(HQuantize(name="inp_q")(inp))
    shared = HDense(4, name="shared")
    b = shared(a)
    with pytest.raises(ValueError, match="'shared'.*shared HGQ layers are not supported"):
        shared(b)


def test_rebuilding_a_sequential_model_is_not_sharing(rng):
    model = keras.Sequential([keras.Input((4,)), HQuantize(name="inp_q"), HDense(3)])
    model.add(HDense(2))  # Keras re-traces the whole graph through the same layers
    assert model.predict(rng.normal(size=(2, 4)), verbose=0).shape == (2, 2)
