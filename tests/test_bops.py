"""EBOPs: exact values computed by hand, and the effect of bops_reg_factor."""

import warnings

import keras
import numpy as np
import pytest

from HGQ import HDense, HQuantize, Signature
from HGQ.bops import ResetMinMax, compute_bops


def set_kernel(layer, kernel, f):
    layer.kernel.assign(np.asarray(kernel, "float32"))
    fb = layer.kernel_quantizer.fractional_bits
    fb.assign(np.broadcast_to(np.asarray(f, "float32"), fb.shape))


@pytest.mark.smoke
def test_dense_ebops_by_hand_with_signature_input():
    # Input: two unsigned 3-bit values. Kernel on a 1/4 grid:
    #   0.75 = 0b11 -> 2 bits, 0.5 = 0b10 -> 1 bit (span highest..lowest set bit),
    #   0.0 -> 0 bits, 1.25 = 0b101 -> 3 bits.
    # EBOPs = 3*2 + 3*1 (unit 0) + 3*0 + 3*3 (unit 1) = 18.
    inp = keras.Input((2,))
    sig = Signature(keep_negative=0, bits=3, int_bits=1)
    dense = HDense(2, use_bias=False)
    model = keras.Model(inp, dense(sig(inp)))
    set_kernel(dense, [[0.75, 0.0], [0.5, 1.25]], 2)
    x = np.array([[0.25, 1.75], [1.0, 0.0]], "float32")
    assert compute_bops(model, x, verbose=False) == 18.0
    assert dense.compute_exact_bops() == 18.0


def test_dense_ebops_by_hand_with_calibrated_heterogeneous_input():
    # HQuantize with f = 1 for both inputs, calibrated on:
    #   input 0 in [0, 3]   -> unsigned, i = 2 -> width 0+2+1 = 3
    #   input 1 in [-1, .5] -> signed,   i = 0 -> width 1+0+1 = 2
    # Kernel [[1.5], [3.0]] with f = 1: 1.5 = 0b11 -> 2 bits; 3.0 = 0b110 -> 2 bits.
    # EBOPs = 3*2 + 2*2 = 10.
    inp = keras.Input((2,))
    q = HQuantize(name="inp_q", pre_activation_quantizer_config={"init_bw": 1})
    dense = HDense(1, use_bias=False)
    model = keras.Model(inp, dense(q(inp)))
    set_kernel(dense, [[1.5], [3.0]], 1)
    x = np.array([[0.0, -1.0], [3.0, 0.5], [1.0, 0.0]], "float32")
    assert compute_bops(model, x, verbose=False) == 10.0
    np.testing.assert_array_equal(q.exact_output_bitwidth(), [3, 2])


def test_relu_output_is_unsigned_and_feeds_the_next_layer():
    # Layer 1: relu output, f = 2, calibrated max 1.0 -> ufixed: i = 1 -> 0+1+2 = 3 bits.
    inp = keras.Input((1,))
    sig = Signature(keep_negative=1, bits=4, int_bits=2)
    d1 = HDense(1, activation="relu", pre_activation_quantizer_config={"init_bw": 2})
    d2 = HDense(1, use_bias=False)
    model = keras.Model(inp, d2(d1(sig(inp))))
    set_kernel(d1, [[0.5]], 1)
    d1.bias.assign(np.zeros(1, "float32"))
    set_kernel(d2, [[0.75]], 2)  # 0b11 -> 2 bits
    x = np.array([[-2.0], [2.0], [0.5]], "float32")
    total = compute_bops(model, x, verbose=False)
    k, i, f = d1.pre_activation_quantizer.exact_format()
    assert (k[0], i[0], f[0]) == (0, 1, 2)
    # d1: 4 (signature) * 1 (0.5 on f=1 grid is 0b1) = 4; d2: 3 * 2 = 6.
    assert total == 10.0


def _train(beta, x, y):
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((x.shape[1],)),
            HQuantize(name="inp_q", bops_reg_factor=beta),
            HDense(16, activation="relu", bops_reg_factor=beta),
            HDense(3, bops_reg_factor=beta),
        ]
    )
    # Adam moves each bitwidth by at most ~lr per step: a large lr lets the
    # penalty act within a short test.
    model.compile(keras.optimizers.Adam(0.03), "mse")
    model.fit(x, y, epochs=10, batch_size=32, verbose=0, callbacks=[ResetMinMax()])
    return compute_bops(model, x, verbose=False), model


def test_ebops_fall_when_bops_reg_factor_rises(rng):
    x = rng.normal(size=(512, 8)).astype("float32")
    y = (x[:, :3] * 0.5).astype("float32")
    low, _ = _train(0.0, x, y)
    high, _ = _train(1e-3, x, y)
    assert high < 0.7 * low, (low, high)


@pytest.mark.smoke
def test_reset_minmax_logs_bops_in_history(rng):
    x = rng.normal(size=(128, 4)).astype("float32")
    model = keras.Sequential(
        [keras.Input((4,)), HQuantize(name="inp_q"), HDense(2, bops_reg_factor=1e-6)]
    )
    model.compile("adam", "mse")
    history = model.fit(x, x[:, :2], epochs=2, verbose=0, callbacks=[ResetMinMax()])
    assert len(history.history["bops"]) == 2
    assert all(b > 0 for b in history.history["bops"])


def test_compute_bops_prints_a_per_layer_table(rng, capsys):
    x = rng.normal(size=(64, 4)).astype("float32")
    model = keras.Sequential(
        [keras.Input((4,)), HQuantize(name="inp_q"), HDense(3, name="dense_a")]
    )
    total = compute_bops(model, x, bsz=16)
    out = capsys.readouterr().out
    assert "dense_a" in out and "inp_q" in out and "total" in out
    assert f"{total:,.0f}" in out


def test_partial_last_batch_padding_does_not_change_calibration(rng):
    """compute_bops pads the last batch with repeated samples (one compile, not two)."""
    from HGQ.calibration_data import pad_to

    x = rng.normal(size=(200, 6)).astype("float32")
    last = x[192:]
    padded = pad_to(last, 64)
    assert padded.shape == (64, 6)
    np.testing.assert_array_equal(padded[:8], last)
    assert {tuple(r) for r in padded[8:].tolist()} == {tuple(r) for r in last.tolist()}

    def calibrated(bsz):
        keras.utils.set_random_seed(3)
        model = keras.Sequential(
            [keras.Input((6,)), HQuantize(name="inp_q"), HDense(4, activation="relu")]
        )
        ebops = compute_bops(model, x, bsz=bsz, verbose=False)
        q = model.layers[-1].pre_activation_quantizer
        return ebops, q.exact_format(), q.vmin.numpy(), q.vmax.numpy()

    whole, padded_run = calibrated(200), calibrated(64)
    assert whole[0] == padded_run[0]
    for a, b in zip(whole[1], padded_run[1], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(whole[2], padded_run[2])
    np.testing.assert_array_equal(whole[3], padded_run[3])


def signature_pair_model() -> keras.Model:
    """Two named inputs, each declared fixed point: (k=1, i=2, f=3) and (k=0, i=1, f=2)."""
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    sig_a = Signature(keep_negative=1, bits=6, int_bits=2, name="sig_a")
    sig_b = Signature(keep_negative=0, bits=3, int_bits=1, name="sig_b")
    return keras.Model([a, b], [HDense(2, name="da")(sig_a(a)), HDense(2, name="db")(sig_b(b))])


def conforming_pair(rng) -> tuple[np.ndarray, np.ndarray]:
    a = rng.integers(-32, 32, size=(40, 3)) / 8  # on 1/8, in [-4, 4)
    b = rng.integers(0, 8, size=(40, 2)) / 4  # on 1/4, in [0, 2)
    return a.astype("float32"), b.astype("float32")


@pytest.mark.parametrize("as_dict", [False, True], ids=["list", "dict"])
def test_compute_bops_warns_when_data_does_not_fit_a_signature(rng, as_dict):
    model = signature_pair_model()
    a, b = conforming_pair(rng)
    b[0, 0] = 0.3  # off the 1/4 grid: truncated to 0.25
    b[5, 1] = 2.5  # beyond 2 - 1/4: wraps to 0.5
    b[7, 0] = -0.25  # negative into an unsigned port: wraps to 1.75
    data = {"a": a, "b": b} if as_dict else [a, b]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        compute_bops(model, data, verbose=False)
    messages = [str(w.message) for w in record if "Signature" in str(w.message)]
    assert messages == [
        "compute_bops: 3 of 80 calibration values fed to Signature 'sig_b' do not fit its "
        "declared format (keep_negative, bits, int_bits), so the input port truncates or "
        "wraps them (e.g. 0.3 is stored as 0.25). Quantize the data to that format before "
        "calibrating and deploying, or declare a format that holds it."
    ]


@pytest.mark.smoke
def test_compute_bops_is_silent_on_data_that_fits_its_signatures(rng):
    model = signature_pair_model()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert compute_bops(model, list(conforming_pair(rng)), verbose=False) > 0
    assert not [w for w in record if "Signature" in str(w.message)]
