"""Global pooling over particles (Deep Sets) and images: exact values, bitwidths, EBOPs of
the next layer, round trip and hls4ml's C simulation on every output."""

from fractions import Fraction

import hls_support as hs
import keras
import numpy as np
import pytest

from HGQ import (
    HDense,
    HQuantize,
    PGlobalAveragePooling1D,
    PGlobalAvgPool1D,
    PGlobalAvgPool2D,
    PGlobalMaxPool1D,
    PGlobalMaxPool2D,
    PGlobalMaxPooling2D,
    Signature,
    compute_bops,
)


def test_keras_style_aliases():
    assert PGlobalAveragePooling1D is PGlobalAvgPool1D
    assert PGlobalMaxPooling2D is PGlobalMaxPool2D


@pytest.mark.smoke
@pytest.mark.parametrize("cls", [PGlobalMaxPool1D, PGlobalAvgPool1D])
def test_values_and_bitwidths_by_hand(cls):
    # Four particles, two features, declared per element: feature 0 of particle p has
    # (k=0, i=1, f=p) -> width 1+p; feature 1 is (k=1, i=2, f=1) -> width 4.
    # Max: width max_p = 4 (feature 0, p=3) and 4. Average of 4: + log2(4) = 2 -> 6 and 6.
    keep = [[0, 1]] * 4
    bits = [[1 + p, 4] for p in range(4)]
    ints = [[1, 2]] * 4
    inp = keras.Input((4, 2))
    pooled = cls(name="pool")(Signature(keep, bits, ints, name="sig")(inp))
    model = keras.Model(inp, HDense(1, use_bias=False, name="d")(pooled))
    x = np.array(
        [
            [[1.0, -2.0], [1.5, 3.5], [0.25, -0.5], [1.875, 1.0]],
            [[0.0, 0.0], [0.5, -4.0], [1.0, 2.5], [0.125, 3.5]],
        ],
        "float32",
    )
    compute_bops(model, x, verbose=False)
    layer = model.get_layer("pool")
    expected_bits = [4, 4] if cls is PGlobalMaxPool1D else [6, 6]
    np.testing.assert_array_equal(layer.exact_output_bitwidth(), expected_bits)
    got = keras.ops.convert_to_numpy(layer(x))
    for n in range(2):
        for c in range(2):
            column = [Fraction(float(v)) for v in x[n, :, c]]
            want = max(column) if cls is PGlobalMaxPool1D else sum(column) / 4
            assert Fraction(float(got[n, c])) == want
    # The next layer's EBOPs use those widths: kernel 0.75 (2 bits) and 1.25 (3 bits).
    dense = model.get_layer("d")
    dense.kernel.assign(np.array([[0.75], [1.25]], "float32"))
    fb = dense.kernel_quantizer.fractional_bits
    fb.assign(np.full(fb.shape, 2.0, "float32"))
    width = expected_bits[0]
    # The pool itself: per feature a tree over 4 operands, (n-1)/n * sum of widths +
    # (n-1) * log2(n): feature 0 (widths 1..4) 3/4 * 10 + 6 = 13.5, feature 1 (4 x 4
    # bits) 3/4 * 16 + 6 = 18. Adders for the average, comparisons (x1.5) for the max.
    pool = 31.5 if cls is PGlobalAvgPool1D else 1.5 * 31.5
    assert compute_bops(model, x, verbose=False) == pool + width * 2 + width * 3


def test_average_over_a_count_that_is_not_a_power_of_two_is_refused_at_build():
    with pytest.raises(ValueError, match="averages 6 values.*power of two.*global max"):
        keras.Sequential([keras.Input((6, 3)), HQuantize(), PGlobalAvgPool1D()])
    with pytest.raises(ValueError, match="averages 12 values"):
        keras.Sequential([keras.Input((3, 4, 2)), HQuantize(), PGlobalAvgPool2D()])


def test_keepdims_and_round_trip(tmp_path):
    model = keras.Sequential(
        [keras.Input((4, 4, 3)), HQuantize(name="inp_q"), PGlobalMaxPool2D(keepdims=True)]
    )
    assert model.outputs[0].shape == (None, 1, 1, 3)
    x = np.random.default_rng(0).normal(size=(32, 4, 4, 3)).astype("float32")
    compute_bops(model, x, verbose=False)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.layers[-1].keepdims is True
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def deep_sets(pool, shape=(8, 3), keepdims=False, as_output=False):
    layers = [
        keras.Input(shape),
        HQuantize(name="inp_q"),
        HDense(6, activation="relu", name="phi"),
        pool(keepdims=keepdims, name="pool"),
    ]
    if not as_output:
        layers.append(HDense(2, name="rho"))
    return keras.Sequential(layers)


@pytest.mark.slow
@pytest.mark.parametrize(
    "pool, shape, keepdims, as_output",
    [
        (PGlobalAvgPool1D, (8, 3), False, False),
        (PGlobalMaxPool1D, (8, 3), False, False),
        (PGlobalMaxPool1D, (5, 3), False, True),
        (PGlobalAvgPool2D, (2, 4, 3), False, True),
        (PGlobalMaxPool2D, (3, 3, 3), True, False),
    ],
)
def test_conversion_is_bit_exact(pool, shape, keepdims, as_output, tmp_path):
    rng = np.random.default_rng(4)
    model = deep_sets(pool, shape, keepdims, as_output)
    x = rng.normal(scale=2, size=(256, *shape)).astype("float32")
    y = rng.normal(size=(256, *model.outputs[0].shape[1:])).astype("float32")
    hs.train_briefly(model, x, y)
    hs.scramble_bitwidths(model, rng)
    model_hls = hs.convert_compiled(model, x, tmp_path)
    n_out = 256 * int(np.prod(model.outputs[0].shape[1:]))
    assert hs.mismatches(model, model_hls, x) == (0, n_out)
    assert hs.mismatches(model, model_hls, hs.out_of_range(x, rng)) == (0, n_out)
