"""compute_bops's result carries the per-layer rows; HGQ.summary prints them later."""

import pickle

import keras
import numpy as np
import pytest

import HGQ
from HGQ import HDense, HQuantize, Signature, compute_bops


def hand_model() -> tuple[keras.Model, np.ndarray]:
    """The hand-worked case of test_bops: a 2x2 kernel on a 1/4 grid, EBOPs 18.

    Signature: unsigned, 3 bits, 1 integer bit (k=0, i=1, f=2) for both inputs.
    Kernel [[0.75, 0], [0.5, 1.25]]: bit spans 2, 0, 1, 3 -> EBOPs 3*(2+1) + 3*(0+3) = 18.
    """
    inp = keras.Input((2,))
    dense = HDense(2, use_bias=False, name="dense")
    model = keras.Model(inp, dense(Signature(keep_negative=0, bits=3, int_bits=1, name="sig")(inp)))
    dense.kernel.assign(np.array([[0.75, 0.0], [0.5, 1.25]], "float32"))
    fb = dense.kernel_quantizer.fractional_bits
    fb.assign(np.full(fb.shape, 2.0, "float32"))
    return model, np.array([[0.25, 1.75], [1.0, 0.0]], "float32")


@pytest.mark.smoke
def test_result_is_the_total_and_holds_the_rows():
    model, x = hand_model()
    result = compute_bops(model, x, verbose=False)
    assert isinstance(result, float) and isinstance(result, HGQ.EBOPs)
    assert result == 18.0 and result + 1 == 19.0 and f"{result:,.1f}" == "18.0"
    assert [(r.name, r.type, r.ebops) for r in result.rows] == [
        ("sig", "Signature", 0.0),
        ("dense", "HDense", 18.0),
    ]
    sig = result.rows[0]
    np.testing.assert_array_equal(sig.keep_negative, [0, 0])
    np.testing.assert_array_equal(sig.int_bits, [1, 1])
    np.testing.assert_array_equal(sig.frac_bits, [2, 2])
    np.testing.assert_array_equal(sig.bits, [3, 3])
    assert sig.bits_mean == 3.0 and sig.bits_max == 3
    assert result.by_layer() == {"sig": 0.0, "dense": 18.0}
    again = pickle.loads(pickle.dumps(result))
    assert again == 18.0 and [r.name for r in again.rows] == ["sig", "dense"]


def test_rows_match_each_layers_formats(rng):
    model = keras.Sequential(
        [keras.Input((5,)), HQuantize(name="inp_q"), HDense(4, activation="relu"), HDense(3)]
    )
    result = compute_bops(model, rng.normal(size=(200, 5)) * 3, verbose=False)
    assert float(result) == sum(layer.compute_exact_bops() for layer in model.layers)
    for row, layer in zip(result.rows, model.layers, strict=True):
        k, i, f = layer.pre_activation_quantizer.exact_format()
        np.testing.assert_array_equal(row.keep_negative, k)
        np.testing.assert_array_equal(row.int_bits, i)
        np.testing.assert_array_equal(row.frac_bits, f)
        # Width from the formats, independently of the layer's own bitwidth map.
        np.testing.assert_array_equal(row.bits, np.maximum(k + i + f, 0))


def test_summary_prints_the_table_of_a_reloaded_calibrated_model(tmp_path, capsys):
    model, x = hand_model()
    first = compute_bops(model, x, verbose=True)
    printed = capsys.readouterr().out
    assert "int bits" in printed and "frac bits" in printed and "18" in printed
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    second = HGQ.summary(loaded)
    assert capsys.readouterr().out == printed
    assert second == first and second.by_layer() == first.by_layer()


def test_summary_of_an_uncalibrated_model_says_what_to_do():
    model = keras.Sequential([keras.Input((3,)), HQuantize(name="q"), HDense(2, name="d")])
    with pytest.raises(ValueError, match=r"not calibrated.*q, d.*compute_bops"):
        HGQ.summary(model)
