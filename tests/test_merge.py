"""HSubtract and HMultiply: values against exact rationals, EBOPs by hand, refusals,
round trip, and hls4ml's C simulation on every output."""

import hls_support as hs
import keras
import numpy as np
import pytest
import reference as ref

from HGQ import HMultiply, HQuantize, HSubtract, Signature, compute_bops


def signature_pair(widths=(3, 4)):
    """Signed inputs of 3 elements, w bits with 2 integer bits: (k=1, i=2, f=w-3)."""
    inputs = [keras.Input((3,), name=f"in{n}") for n in range(len(widths))]
    sigs = [
        Signature(1, w, 2, name=f"sig{n}")(t)
        for n, (t, w) in enumerate(zip(inputs, widths, strict=True))
    ]
    return inputs, sigs


def grid_data(rng, n, widths, span=None):
    """Values on each Signature's grid: integers in [-span, span) (default: the whole
    range, 2^(w-1)) times the LSB 2^-(w-3)."""
    return [
        (
            rng.integers(-(span or 2 ** (w - 1)), span or 2 ** (w - 1), size=(n, 3))
            * 2.0 ** (3 - w)
        ).astype("float32")
        for w in widths
    ]


@pytest.mark.smoke
@pytest.mark.parametrize(
    "widths, expected",
    [((3, 4), 3 * (3 * 4)), ((3, 4, 2), 3 * (3 * 4 + 7 * 2))],
)
def test_multiply_ebops_by_hand(widths, expected, rng):
    inputs, sigs = signature_pair(widths)
    model = keras.Model(inputs, HMultiply(name="mul")(sigs))
    assert compute_bops(model, grid_data(rng, 64, widths), verbose=False) == expected


def test_subtract_prices_its_adders_and_takes_two_inputs(rng):
    inputs, sigs = signature_pair()
    model = keras.Model(inputs, HSubtract(name="sub")(sigs))
    # One 2-operand adder per element: 1/2 * (3 + 4) bits + 1 carry = 4.5, three elements.
    assert compute_bops(model, grid_data(rng, 64, (3, 4)), verbose=False) == 13.5
    a, b, c = (keras.Input((3,)) for _ in range(3))
    with pytest.raises(ValueError, match="exactly two inputs, got 3"):
        HSubtract()([HQuantize()(a), HQuantize()(b), HQuantize()(c)])
    with pytest.raises(ValueError, match="input 1 has shape.*does not broadcast"):
        HMultiply()([HQuantize()(a), HQuantize()(keras.Input((4,)))])


@pytest.mark.smoke
@pytest.mark.parametrize("cls", [HSubtract, HMultiply])
def test_values_equal_exact_rationals_in_and_out_of_range(cls, rng):
    inputs, sigs = signature_pair()
    layer = cls(name="merge")
    model = keras.Model(inputs, layer(sigs))
    f = rng.integers(0, 4, size=(1, 3)).astype("float32")
    layer.pre_activation_quantizer.fractional_bits.assign(f)
    # Calibrated on small values, tested on the ports' whole range: the result wraps.
    compute_bops(model, grid_data(rng, 200, (3, 4), span=1), verbose=False)
    k, i, f_out = layer.pre_activation_quantizer.exact_format()
    test = grid_data(rng, 200, (3, 4))
    got = model.predict(test, verbose=0)
    a, b = (ref.to_fractions(x) for x in test)
    exact = a - b if cls is HSubtract else a * b
    want = ref.wrap_array(ref.quantize_array(exact, f_out[None], ref.truncate), k, i, f_out)
    assert np.array_equal(got, want.astype(np.float64))
    unwrapped = ref.quantize_array(exact, f_out[None], ref.truncate).astype(np.float64)
    assert not np.array_equal(got, unwrapped)  # the test really overflowed


@pytest.mark.slow
@pytest.mark.parametrize("cls, n_inputs", [(HSubtract, 2), (HMultiply, 2), (HMultiply, 3)])
def test_conversion_is_bit_exact(cls, n_inputs, tmp_path):
    rng = np.random.default_rng(5)
    inputs = [keras.Input((4,), name=f"x{n}") for n in range(n_inputs)]
    quantized = [HQuantize(name=f"inp_q{n}")(t) for n, t in enumerate(inputs)]
    model = keras.Model(inputs, cls(name="merge")(quantized))
    x = [rng.normal(scale=2, size=(256, 4)).astype("float32") for _ in range(n_inputs)]
    hs.train_briefly(model, x, rng.normal(size=(256, 4)).astype("float32"))
    hs.scramble_bitwidths(model, rng)
    model_hls = hs.convert_compiled(model, x, tmp_path)
    assert hs.mismatches(model, model_hls, x) == (0, 256 * 4)
    far = [hs.out_of_range(a, rng) for a in x]
    assert hs.mismatches(model, model_hls, far) == (0, 256 * 4)


def test_round_trip(tmp_path, rng):
    inputs, sigs = signature_pair()
    model = keras.Model(inputs, HMultiply(name="mul")(sigs))
    data = grid_data(rng, 64, (3, 4))
    ebops = compute_bops(model, data, verbose=False)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.predict(data, verbose=0), model.predict(data, verbose=0))
    assert compute_bops(loaded, data, verbose=False) == ebops
