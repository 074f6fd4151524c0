"""Sequential, functional and subclassed models; saving and loading."""

import keras
import numpy as np
import pytest

from HGQ import HActivation, HDense, HQuantize
from HGQ.bops import ResetMinMax, compute_bops


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.q = HQuantize(name="inp_q")
        self.d1 = HDense(8, activation="relu")
        self.act = HActivation("tanh")
        self.d2 = HDense(2)

    def call(self, x, training=None):
        return self.d2(
            self.act(self.d1(self.q(x, training=training), training=training), training=training),
            training=training,
        )


def functional():
    inp = keras.Input((4,))
    x = HQuantize(name="inp_q")(inp)
    x = HDense(8, activation="relu")(x)
    x = HActivation("sigmoid")(x)
    return keras.Model(inp, HDense(2)(x))


@pytest.mark.smoke
@pytest.mark.parametrize("make", [functional, Subclassed], ids=["functional", "subclassed"])
def test_model_styles_train_and_calibrate(make, rng):
    model = make()
    x = rng.normal(size=(64, 4)).astype("float32")
    model.compile("adam", "mse")
    history = model.fit(x, x[:, :2], epochs=2, verbose=0, callbacks=[ResetMinMax()])
    assert history.history["bops"][-1] > 0
    assert compute_bops(model, x, verbose=False) > 0


@pytest.mark.smoke
def test_save_and_load_round_trip(tmp_path, rng):
    model = functional()
    x = rng.normal(size=(64, 4)).astype("float32")
    model.compile("adam", "mse")
    model.fit(x, x[:, :2], epochs=1, verbose=0)
    compute_bops(model, x, verbose=False)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x_test = np.concatenate([x, 8 * x]).astype("float32")
    np.testing.assert_array_equal(
        model.predict(x_test, verbose=0), loaded.predict(x_test, verbose=0)
    )
    assert compute_bops(loaded, x, verbose=False) == compute_bops(model, x, verbose=False)
