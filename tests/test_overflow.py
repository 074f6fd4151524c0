"""Overflow modes (WRAP, SAT, SAT_SYM) and the calibration margin ``cover_factor``.

Inference is checked against the rational reference of ``reference.py``: rounding
half up, then ap_fixed's saturation, with integer bits found by search.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import reference as ref

from HGQ import HQuantize
from HGQ.bops import compute_bops


def calibrated_input_layer(mode: str, x_cal: np.ndarray, frac_bits: np.ndarray) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input(x_cal.shape[1:]),
            HQuantize(name="inp_q", pre_activation_quantizer_config={"overflow_mode": mode}),
        ]
    )
    model.get_layer("inp_q").pre_activation_quantizer.fractional_bits.assign(
        frac_bits[None].astype("float32")
    )
    compute_bops(model, x_cal, verbose=False)
    return model


def reference_outputs(x_cal, x, frac_bits, mode: str, cover_factor: int = 1) -> np.ndarray:
    q_cal = ref.quantize_array(ref.to_fractions(x_cal), frac_bits[None])
    k, i = ref.calibrate(q_cal * cover_factor, frac_bits)
    q = ref.quantize_array(ref.to_fractions(x), frac_bits[None])
    out = np.empty(q.shape, dtype=object)
    for idx in np.ndindex(q.shape):
        e = idx[1:]
        args = (q[idx], int(k[e]), int(i[e]), int(frac_bits[e]))
        out[idx] = ref.wrap(*args) if mode == "WRAP" else ref.saturate(*args, mode == "SAT_SYM")
    return out.astype(np.float64)


# Element 0: signed, 1 bit wide (values -0.5 and 0 at f=1): SAT_SYM keeps -0.5 there.
# Element 1: f=-3 on small values, width 0 (always 0). Elements 2-5: ordinary formats.
CALIBRATION = np.array(
    [
        [-0.5, 0.3, 1.25, -3.0, 0.0, 7.9],
        [0.0, -0.2, 0.5, 2.5, 0.75, -0.1],
        [-0.25, 0.1, 0.0, -1.0, 0.5, 3.0],
    ],
    dtype="float32",
)
FRACTIONAL_BITS = np.array([1, -3, 2, 1, 3, 0])


@pytest.mark.smoke
@pytest.mark.parametrize("mode", ["WRAP", "SAT", "SAT_SYM"])
def test_overflow_modes_match_the_reference(mode, rng):
    model = calibrated_input_layer(mode, CALIBRATION, FRACTIONAL_BITS)
    k, i, f = model.get_layer("inp_q").pre_activation_quantizer.exact_format()
    assert (k[0], k[0] + i[0] + f[0]) == (1, 1)  # the 1-bit signed corner
    assert k[1] + i[1] + f[1] <= 0  # the width-0 corner
    far = rng.normal(scale=20, size=(300, 6)).astype("float32")
    ties = ((rng.integers(-40, 40, size=(300, 6)) + 0.5) * 2.0**-FRACTIONAL_BITS).astype("float32")
    for x in (CALIBRATION, far, ties, np.zeros((4, 6), "float32")):
        expected = reference_outputs(CALIBRATION, x, FRACTIONAL_BITS, mode)
        np.testing.assert_array_equal(model.predict(x, verbose=0), expected)


def test_saturation_differs_from_wrap_far_out():
    """A guard on the test above: the three modes really disagree far outside."""
    x = np.full((1, 6), 50.0, "float32")
    outs = {
        mode: calibrated_input_layer(mode, CALIBRATION, FRACTIONAL_BITS).predict(x, verbose=0)
        for mode in ("WRAP", "SAT", "SAT_SYM")
    }
    assert not np.array_equal(outs["WRAP"], outs["SAT"])
    negative = -x
    sat = calibrated_input_layer("SAT", CALIBRATION, FRACTIONAL_BITS)
    sym = calibrated_input_layer("SAT_SYM", CALIBRATION, FRACTIONAL_BITS)
    assert not np.array_equal(sat.predict(negative, verbose=0), sym.predict(negative, verbose=0))


@pytest.mark.parametrize("cover_factor", [1, 2, 3])
def test_cover_factor_widens_the_recorded_range(cover_factor):
    model = keras.Sequential([keras.Input((6,)), HQuantize(name="inp_q")])
    quantizer = model.get_layer("inp_q").pre_activation_quantizer
    quantizer.fractional_bits.assign(FRACTIONAL_BITS[None].astype("float32"))
    compute_bops(model, CALIBRATION, verbose=False, cover_factor=cover_factor)
    q_cal = ref.quantize_array(ref.to_fractions(CALIBRATION), FRACTIONAL_BITS[None])
    k, i = ref.calibrate(q_cal * cover_factor, FRACTIONAL_BITS)
    got_k, got_i, _ = quantizer.exact_format()
    np.testing.assert_array_equal(got_k, k)
    np.testing.assert_array_equal(got_i, i)


@pytest.mark.parametrize("bad", [0.5, -1, float("nan"), "2", True])
def test_bad_cover_factor_is_refused_and_model_untouched(bad):
    model = keras.Sequential([keras.Input((6,)), HQuantize(name="inp_q")])
    compute_bops(model, CALIBRATION, verbose=False)
    before = [v.numpy().copy() for v in model.variables]
    with pytest.raises(ValueError, match="cover_factor must be a finite number >= 1"):
        compute_bops(model, CALIBRATION * 4, verbose=False, cover_factor=bad)
    for variable, value in zip(model.variables, before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_bad_overflow_mode_and_kernel_overflow_mode_are_refused():
    from HGQ import HDense

    with pytest.raises(ValueError, match="Unknown overflow_mode 'CLIP'.*WRAP"):
        HDense(3, pre_activation_quantizer_config={"overflow_mode": "CLIP"})
    with pytest.raises(ValueError, match="overflow_mode applies to activations only"):
        HDense(3, kernel_quantizer_config={"overflow_mode": "SAT"})
