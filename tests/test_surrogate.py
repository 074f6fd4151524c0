"""The training-time bitwidths equal what compute_bops counts, checked with exact arithmetic.

The reference here is Python's integers and fractions: a weight's deployed value is
``round_half_up(w * 2^F) / 2^F`` (or floor), and its EBOPs width is the span from its
highest to its lowest set bit. Nothing of the library is used to compute it.
"""

from __future__ import annotations

import math
from fractions import Fraction

import keras
import numpy as np
import pytest
from keras import ops

from HGQ.quantizer import HGQuantizer, calibrating


def reference_span(w: float, f: int, floor: bool) -> int:
    scaled = Fraction(float(w)) * Fraction(2) ** f
    m = math.floor(scaled) if floor else math.floor(scaled + Fraction(1, 2))
    m = abs(m)
    if m == 0:
        return 0
    return m.bit_length() - ((m & -m).bit_length() - 1)


def kernel_quantizer(shape, f_values, rnd_strategy="standard_round"):
    q = HGQuantizer({"rnd_strategy": rnd_strategy}, role="kernel")
    q.build(shape)
    q.fractional_bits.assign(np.asarray(f_values, "float32").reshape(shape))
    return q


def random_weights_and_bits(rng, n):
    f = rng.integers(-4, 12, size=n)
    kind = rng.integers(0, 5, size=n)
    magnitude = np.exp2(rng.uniform(-14, 6, size=n))
    # Corners: exactly a tie that rounds up to a power of two, just below it, values in
    # [2^-(f+1), 2^-f) (one LSB after rounding), and exact grid points.
    tie_up = np.exp2(rng.integers(-3, 4, size=n).astype(float)) - np.exp2(-f - 1.0)
    below_tie = np.nextafter(tie_up.astype(np.float32), np.float32(0))
    one_lsb = np.exp2(-f - 1.0) * rng.uniform(1.0, 2.0, size=n)
    on_grid = rng.integers(-300, 300, size=n) * np.exp2(-f.astype(float))
    w = np.select(
        [kind == 0, kind == 1, kind == 2, kind == 3],
        [magnitude, tie_up, below_tie, one_lsb],
        on_grid,
    )
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return (w * sign).astype(np.float32), f


@pytest.mark.smoke
@pytest.mark.parametrize("rnd_strategy", ["standard_round", "floor"])
def test_kernel_surrogate_bitwidth_is_the_deployed_bit_span(rnd_strategy):
    rng = np.random.default_rng(12)
    n = 4000
    w, f = random_weights_and_bits(rng, n)
    # Non-integer trainable bits deploy as round(f): the surrogate must count those.
    f_trained = f + rng.uniform(-0.45, 0.45, size=n)
    q = kernel_quantizer((n,), f_trained, rnd_strategy)
    got = ops.convert_to_numpy(q.surrogate_bitwidth(ops.convert_to_tensor(w)))
    floor = rnd_strategy == "floor"
    expected = np.array([reference_span(wi, int(fi), floor) for wi, fi in zip(w, f, strict=True)])
    assert (expected == 0).any() and (expected >= 5).any()
    mismatched = np.flatnonzero(got != expected)
    assert mismatched.size == 0, (
        f"{mismatched.size} of {n} widths differ, e.g. w={w[mismatched[:3]]}, "
        f"f={f[mismatched[:3]]}: got {got[mismatched[:3]]}, expected {expected[mismatched[:3]]}"
    )


def test_a_weight_in_the_last_half_lsb_costs_one_bit_not_zero():
    # 0.1 with f=3 rounds to 0.125 = 1 LSB: the old surrogate counted 0 bits.
    q = kernel_quantizer((3,), [3, 3, 0])
    w = ops.convert_to_tensor(np.array([0.1, 0.0625, 0.75], "float32"))
    got = ops.convert_to_numpy(q.surrogate_bitwidth(w))
    # 0.0625 * 8 = 0.5 rounds half up to 1 LSB; 0.75 with f=0 rounds to 1.
    np.testing.assert_array_equal(got, [1, 1, 1])


def test_kernel_surrogate_gradient_is_one_per_fractional_bit_where_nonzero():
    if keras.backend.backend() != "jax":
        pytest.skip("gradient checked with jax.grad")
    import jax

    w = np.array([0.3, 0.01, -1.7, 0.0], "float32")
    f0 = np.array([2, 2, 4, 5], "float32")
    q = kernel_quantizer((4,), f0)

    def total(f):
        with keras.StatelessScope(state_mapping=[(q.fractional_bits, f)]):
            return ops.sum(q.surrogate_bitwidth(ops.convert_to_tensor(w)))

    value, grads = jax.value_and_grad(total)(f0)
    assert float(value) == sum(reference_span(x, int(b), False) for x, b in zip(w, f0, strict=True))
    # 0.01 at f=2 and 0.0 quantize to 0: no cost, no gradient.
    np.testing.assert_array_equal(np.asarray(grads), [1, 0, 1, 0])


def reference_width(vmin: float, vmax: float, f: int) -> int:
    """Smallest k + i + f whose format holds [vmin, vmax], by exact rationals."""
    lo, hi, lsb = Fraction(float(vmin)), Fraction(float(vmax)), Fraction(2) ** -f
    k = 1 if lo < 0 else 0
    i = -64
    while not (hi <= Fraction(2) ** i - lsb and lo >= -(Fraction(2) ** i)):
        i += 1
    return max(k + i + f, 0)


@pytest.mark.smoke
def test_activation_surrogate_bitwidth_equals_the_calibrated_width():
    rng = np.random.default_rng(3)
    n = 512
    q = HGQuantizer({}, role="activation")
    q.build((None, n))
    f = rng.integers(-3, 9, size=n) + rng.uniform(-0.45, 0.45, size=n)
    q.fractional_bits.assign(f[None].astype("float32"))
    scale = np.exp2(rng.uniform(-6, 8, size=n))
    x = rng.normal(size=(64, n)) * scale
    # Exact powers of two and values one LSB below them sit on the integer-bit boundaries.
    x[0, : n // 4] = np.exp2(rng.integers(-3, 6, size=n // 4).astype(float))
    x[1, n // 4 : n // 2] = -np.exp2(rng.integers(-3, 6, size=n // 4).astype(float))
    x[:, n // 2 : n // 2 + 32] = np.abs(x[:, n // 2 : n // 2 + 32])  # unsigned elements
    with calibrating():
        q(x.astype("float32"), training=False)
    vmin, vmax = q.vmin.numpy()[0], q.vmax.numpy()[0]
    expected = np.array(
        [reference_width(a, b, round(c)) for a, b, c in zip(vmin, vmax, f, strict=True)]
    )
    got = ops.convert_to_numpy(q.surrogate_bitwidth())
    np.testing.assert_array_equal(got, expected)
    assert (expected == 0).sum() < n and expected.max() >= 10


@pytest.mark.slow
def test_logged_bops_of_the_last_epoch_match_the_exact_ebops_on_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from HGQ import HDense, HQuantize
    from HGQ.bops import compute_bops
    from HGQ.callbacks import ResetMinMax

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    x_train, _, y_train, _ = train_test_split(
        x, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    keras.utils.set_random_seed(0)
    beta = 1e-4
    model = keras.Sequential(
        [keras.Input((64,)), HQuantize(name="inp_q", bops_reg_factor=beta)]
        + [HDense(n, activation="relu", bops_reg_factor=beta) for n in (32, 16)]
        + [HDense(10, bops_reg_factor=beta)]
    )
    model.compile(
        keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = model.fit(
        x_train, y_train, epochs=20, batch_size=64, verbose=0, callbacks=[ResetMinMax()]
    )
    exact = compute_bops(model, x_train, bsz=1024, verbose=False)
    logged = history.history["bops"][-1]
    assert abs(logged - exact) <= 0.1 * exact, (logged, exact)
