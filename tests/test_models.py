"""Sequential, functional and subclassed models; saving and loading."""

import keras
import pytest
from round_trip import reload_and_compare

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
    reload_and_compare(model, x, tmp_path, compute_bops(model, x, verbose=False))
