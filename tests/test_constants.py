"""Structurally constant activations cost nothing downstream.

A unit whose weights are all pruned outputs its bias: a constant, which both
deployment paths fold into the logic it feeds. EBOPs price such inputs at 0 bits
(products with a constant weight, a softmax row of constants, table inputs, adders):
the folded constant is added like a bias, which EBOPs do not price either. A constant
times a variable (``HMultiply``, ``HEinsum``) stays a constant multiplication, priced
like a kernel. Every expected value below is worked out by hand from the formats.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from HGQ import HDense, HEinsum, HMultiply, HSoftmax, Signature
from HGQ.bops import compute_bops


def set_kernel(layer, kernel, frac_bits=2, bias=None):
    layer.kernel.assign(np.asarray(kernel, "float32"))
    fb = layer.kernel_quantizer.fractional_bits
    fb.assign(np.full(fb.shape, float(frac_bits), "float32"))
    if bias is not None:
        layer.bias.assign(np.asarray(bias, "float32"))


def pruned_unit_model():
    """3 signed 4-bit inputs -> HDense(2, relu): unit 0 reads them, unit 1 has no
    weights and bias 1.5 (a constant) -> HDense(1) with weights 0.75 and 1.25."""
    inp = keras.Input((3,))
    sig = Signature(1, 4, 2, name="sig")(inp)
    d1 = HDense(2, activation="relu", name="d1")(sig)
    model = keras.Model(inp, HDense(1, use_bias=False, name="d2")(d1))
    set_kernel(model.get_layer("d1"), [[0.75, 0.0], [0.5, 0.0], [1.0, 0.0]], bias=[0.0, 1.5])
    set_kernel(model.get_layer("d2"), [[0.75], [1.25]])
    return model


def grid_inputs(rng, n, shape):
    """Values on the grid of Signature(1, 4, 2): sign, 2 integer bits, 1 fractional."""
    return (rng.integers(-8, 8, size=(n, *shape)) / 2).astype("float32")


@pytest.mark.smoke
def test_products_with_a_pruned_units_bias_cost_nothing(rng):
    model = pruned_unit_model()
    x = grid_inputs(rng, 256, (3,))
    costs = compute_bops(model, x, verbose=False)
    d1, d2 = model.get_layer("d1"), model.get_layer("d2")
    out = np.asarray(keras.ops.convert_to_numpy(d1(x)))
    assert np.all(out[:, 1] == 1.5)  # the constant the firmware folds
    widths = d1.exact_output_bitwidth()
    assert widths[1] > 0  # its format is not empty: only the mask makes it free
    np.testing.assert_array_equal(d1.exact_output_varies(), [True, False])
    # d1: 4 bits x spans 2 (0.75), 1 (0.5), 1 (1.0) for unit 0, nothing for unit 1.
    # d2: unit 0's width x 2 (0.75); unit 1 is constant: 0 (the original HGQ: w1 x 3).
    rows = {row.name: row.ebops for row in costs.rows}
    assert rows["d1"] == 4 * 2 + 4 * 1 + 4 * 1
    assert rows["d2"] == widths[0] * 2
    # The training surrogate sees the same mask.
    mask = keras.ops.convert_to_numpy(d2.input_bitwidth())
    assert mask[1] == 0 and mask[0] == widths[0]


def test_a_constant_softmax_row_costs_nothing(rng):
    inp = keras.Input((2,))
    sig = Signature(1, 4, 2, name="sig")(inp)
    logits = HDense(3, name="logits")(sig)
    model = keras.Model(inp, HSoftmax(name="sm")(logits))
    set_kernel(model.get_layer("logits"), np.zeros((2, 3)), bias=[0.5, -0.25, 1.0])
    compute_bops(model, grid_inputs(rng, 64, (2,)), verbose=False)
    softmax = model.get_layer("sm")
    assert softmax.compute_exact_bops() == 0.0
    assert not softmax.exact_output_varies().any()
    # Weights back on two logits: the row varies and is priced again (comparing or
    # adding a variable to a constant is taken as free, so it takes two).
    set_kernel(model.get_layer("logits"), [[0.0, 0.25, 0.5], [0.0, 0.0, 0.0]])
    compute_bops(model, grid_inputs(rng, 64, (2,)), verbose=False)
    assert softmax.exact_output_varies().all()
    parts = softmax.exact_cost_parts()
    assert parts["products"] > 0 and parts["comparisons"] > 0 and parts["tables"] > 0


def test_a_constant_times_a_variable_is_priced_by_its_bits_and_two_constants_are_not(rng):
    """HMultiply and HEinsum: constant a (a pruned HDense's bias) times variable b costs
    span(a) * w_b per product, the constant's set bits as for a kernel weight; constant
    times constant costs 0."""
    inp = keras.Input((2,))
    sig = Signature(1, 4, 2, name="sig")(inp)
    a = HDense(2, name="a")(sig)
    b = HDense(2, name="b")(sig)
    c = HDense(2, name="c")(sig)
    product = HMultiply(name="ab")([a, b])
    folded = HMultiply(name="ac")([a, c])
    contracted = HEinsum("bi,bi->b", name="dot")([a, b])
    model = keras.Model(inp, [product, folded, contracted])
    set_kernel(model.get_layer("a"), np.zeros((2, 2)), bias=[0.75, 1.5])
    f_a = model.get_layer("a").pre_activation_quantizer.fractional_bits
    f_a.assign(np.full(f_a.shape, 3.0, "float32"))
    set_kernel(model.get_layer("b"), [[0.5, 0.25], [0.75, 1.0]], bias=[0.0, 0.0])
    set_kernel(model.get_layer("c"), np.zeros((2, 2)), bias=[0.25, 0.5])
    compute_bops(model, grid_inputs(rng, 64, (2,)), verbose=False)
    # a's formats (3 fractional bits): 0.75 = 0.110 is 3 bits wide, 1.5 = 1.100 is 4;
    # their set bits span 2 (11) each.
    np.testing.assert_array_equal(model.get_layer("a").exact_output_bitwidth(), [3, 4])
    wb = model.get_layer("b").exact_output_bitwidth().astype(float)
    assert wb.min() > 0
    assert model.get_layer("ab").compute_exact_bops() == 2 * wb[0] + 2 * wb[1]
    assert model.get_layer("ac").compute_exact_bops() == 0.0
    assert model.get_layer("dot").compute_exact_bops() == 2 * wb[0] + 2 * wb[1]
    assert model.get_layer("ab").exact_output_varies().all()
    assert not model.get_layer("ac").exact_output_varies().any()
    # The training surrogate prices the same: a's operand widths are the spans.
    spans = keras.ops.convert_to_numpy(model.get_layer("ab").input_operand(0)[0])
    np.testing.assert_array_equal(spans, [2, 2])
