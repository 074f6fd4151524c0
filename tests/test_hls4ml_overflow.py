"""Saturating activations (overflow_mode SAT / SAT_SYM) deploy bit-exactly.

Every layer kind of the conversion tests is built with the mode as the default
pre-activation config, trained briefly, given heterogeneous bitwidths, converted and
compiled once per model; outputs are compared exactly inside and far outside the
calibrated range, where saturation (not wrap-around) decides them.
"""

from __future__ import annotations

import hls_support as hs
import keras
import numpy as np
import pytest
from test_hls4ml_layers import branchy_cnn, fused_batchnorm_model

from HGQ import (
    HActivation,
    HDense,
    HQuantize,
    reset_default_quantizer_configs,
    set_default_pre_activation_quantizer_config,
)

pytestmark = pytest.mark.slow


def table_chain() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,)),
            HQuantize(name="inp_q"),
            HDense(8, activation="relu", name="d1"),
            HActivation("tanh", name="tanh"),
            HDense(5, name="d2"),
            HActivation("sigmoid", name="sigmoid"),
            HDense(3, name="d3"),
        ]
    )


def build(make, mode: str) -> keras.Model:
    set_default_pre_activation_quantizer_config({"overflow_mode": mode})
    try:
        return make()
    finally:
        reset_default_quantizer_configs()


CASES = [
    # Each mode on a convolutional model (the two CNNs cover every layer kind between
    # them) and on the table chain; saturation acts per quantizer, whatever the layer.
    (branchy_cnn, "SAT_SYM", (8, 8, 2)),
    (fused_batchnorm_model, "SAT", (6, 6, 2)),
    (table_chain, "SAT", (6,)),
    (table_chain, "SAT_SYM", (6,)),
]


@pytest.mark.parametrize(("make", "mode", "shape"), CASES, ids=lambda c: getattr(c, "__name__", c))
def test_saturating_models_bit_exact(make, mode, shape, tmp_path):
    rng = np.random.default_rng(21)
    keras.utils.set_random_seed(21)
    model = build(make, mode)
    x = rng.normal(size=(300, *shape)).astype("float32")
    y = [rng.normal(size=(300, *t.shape[1:])).astype("float32") for t in model.outputs]
    hs.train_briefly(model, x, y)
    hs.scramble_bitwidths(model, rng)
    model_hls = hs.convert_compiled(model, x, tmp_path)
    n_out = sum(int(np.prod(t.shape[1:])) for t in model.outputs) * len(x)
    far = hs.out_of_range(x, rng)
    for data in (x, far):
        assert hs.mismatches(model, model_hls, data) == (0, n_out)
    # Far inputs really saturate: some outputs sit at their format's maximum.
    quantizer = model.layers[1].pre_activation_quantizer
    assert quantizer.config["overflow_mode"] == mode
    k, i, f = quantizer.exact_format()
    first = keras.Model(model.inputs, model.layers[1].output).predict(far, verbose=0)
    assert np.any(first == 2.0**i - 2.0**-f)


@pytest.mark.parametrize("mode", ["WRAP", "SAT", "SAT_SYM"])
def test_corner_formats_bit_exact(mode, tmp_path):
    """A 1-bit signed element (SAT_SYM keeps -2^i there), a width-0 one, ordinary ones."""
    from test_overflow import CALIBRATION, FRACTIONAL_BITS

    model = keras.Sequential(
        [
            keras.Input((6,)),
            HQuantize(name="inp_q", pre_activation_quantizer_config={"overflow_mode": mode}),
            HDense(3, name="d"),
        ]
    )
    quantizer = model.get_layer("inp_q").pre_activation_quantizer
    quantizer.fractional_bits.assign(FRACTIONAL_BITS[None].astype("float32"))
    model_hls = hs.convert_compiled(model, CALIBRATION, tmp_path)
    rng = np.random.default_rng(22)
    far = rng.normal(scale=20, size=(500, 6)).astype("float32")
    for data in (CALIBRATION, far):
        assert hs.mismatches(model, model_hls, data) == (0, 3 * len(data))
