"""EBOPs of the logic that multiplies nothing (HGQ.logic_costs): the rule by hand, each
layer that has such logic priced by hand, the training surrogate equal to the exact
count, and an MLP's EBOPs left as the original HGQ defined them."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from HGQ import (
    HActivation,
    HAdd,
    HDense,
    HQuantize,
    HSoftmax,
    HSubtract,
    PGlobalAvgPool1D,
    PGlobalMaxPool1D,
    PMaxPool1D,
    Signature,
)
from HGQ.bops import compute_bops
from HGQ.logic_costs import COMPARISON_WEIGHT, reduction_cost, table_cost


@pytest.mark.smoke
def test_rule_by_hand():
    # Two 8-bit operands: one adder, 8 bits plus one carry.
    assert reduction_cost(np.float64(16), np.float64(2), np) == 9.0
    # Four 3-bit operands: three adders of 3 bits, the tree grows 2 carry bits each.
    assert reduction_cost(np.float64(12), np.float64(4), np) == 3 / 4 * 12 + 3 * 2
    # One operand (or none): nothing to add.
    assert reduction_cost(np.float64(5), np.float64(1), np) == 0.0
    assert reduction_cost(np.float64(0), np.float64(0), np) == 0.0
    # A table of 8 input bits to 4 output bits: 4 LUT6 per output bit.
    assert table_cost(np.float64(8), np.float64(4), np) == 16.0
    assert table_cost(np.float64(0), np.float64(4), np) == 0.0


def per_element_signature(bits: list[int]) -> Signature:
    """Unsigned elements of the given widths (0: a constant zero), one channel each."""
    return Signature(keep_negative=0, bits=[[b] for b in bits], int_bits=[[b] for b in bits])


def calibrated(model: keras.Model, shape: tuple[int, ...]) -> float:
    x = np.ones((4, *shape), "float32")
    return float(compute_bops(model, x, verbose=False))


def surrogate(layer) -> float:
    return float(keras.ops.convert_to_numpy(layer.bops_surrogate()))


@pytest.mark.parametrize(
    "pool, expected",
    [
        # Widths [3, 2, 0, 4]: three operands that are not constant zero, 9 bits.
        (PGlobalAvgPool1D(), 2 / 3 * 9 + 2 * math.log2(3)),
        (PGlobalMaxPool1D(), COMPARISON_WEIGHT * (2 / 3 * 9 + 2 * math.log2(3))),
        # Windows [3, 2] (one comparison) and [0, 4] (nothing to compare).
        (PMaxPool1D(2), COMPARISON_WEIGHT * (5 / 2 + 1)),
    ],
    ids=["global average", "global max", "max pool 2"],
)
def test_pools_by_hand(pool, expected):
    inp = keras.Input((4, 1))
    model = keras.Model(inp, pool(per_element_signature([3, 2, 0, 4])(inp)))
    assert calibrated(model, (4, 1)) == pytest.approx(expected, rel=1e-12)
    assert pool.compute_exact_bops() == pytest.approx(expected, rel=1e-12)
    assert surrogate(pool) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("merge", [HAdd, HSubtract])
def test_merges_by_hand(merge):
    # Element 0: 3 + 2 bits, one adder: 5/2 + 1. Element 1: 0 + 5 bits, nothing to add.
    inp_a, inp_b = keras.Input((2,)), keras.Input((2,))
    a = Signature(keep_negative=0, bits=[3, 0], int_bits=[3, 0])(inp_a)
    b = Signature(keep_negative=0, bits=[2, 5], int_bits=[2, 5])(inp_b)
    layer = merge(name="merge")
    model = keras.Model([inp_a, inp_b], layer([a, b]))
    x = [np.ones((4, 2), "float32")] * 2
    costs = compute_bops(model, x, verbose=False)
    assert costs.by_layer()["merge"] == 3.5
    assert costs.rows[-1].parts == {"adders": 3.5}
    assert costs.products == 0.0
    assert surrogate(layer) == pytest.approx(3.5, rel=1e-6)


def test_softmax_by_hand():
    # A row of two 3-bit inputs; e and r with 2 fractional bits (3 bits: one integer bit).
    inp = keras.Input((2,))
    softmax = HSoftmax(name="softmax")
    model = keras.Model(inp, softmax(Signature(keep_negative=0, bits=3, int_bits=3)(inp)))
    for quantizer in (softmax.exp_quantizer, softmax.inv_quantizer):
        quantizer.fractional_bits.assign(np.full(quantizer.fractional_bits.shape, 2.0, "float32"))
    costs = compute_bops(model, np.ones((4, 2), "float32"), verbose=False)
    expected = {
        "products": 2 * 3 * 3,  # e * r per element
        "comparisons": COMPARISON_WEIGHT * (6 / 2 + 1),  # the row maximum
        # the row sum of e (one adder), and x - max per element (one adder each)
        "adders": (6 / 2 + 1) + 2 * (6 / 2 + 1),
        # exp: 4-bit index (x - max has one more bit), 3 bits out, per element;
        # reciprocal: the sum's 3 + log2(2) = 4 bits, 3 bits out, per row.
        "tables": 2 * 3 * 2 ** (4 - 6) + 3 * 2 ** (4 - 6),
    }
    assert costs.rows[-1].parts == pytest.approx(expected, rel=1e-12)
    assert float(costs) == pytest.approx(sum(expected.values()), rel=1e-12)
    assert costs.products == 18.0
    assert surrogate(softmax) == pytest.approx(sum(expected.values()), rel=1e-6)


def test_activation_table_by_hand():
    inp = keras.Input((3,))
    activation = HActivation("sigmoid", name="sigmoid")
    relu = HActivation("relu", name="relu")
    model = keras.Model(inp, relu(activation(Signature(keep_negative=1, bits=7, int_bits=3)(inp))))
    x = np.linspace(-4, 4, 12, dtype="float32").reshape(4, 3)
    costs = compute_bops(model, x, verbose=False)
    out_bits = activation.exact_output_bitwidth()
    assert out_bits.shape == (3,) and np.all(out_bits > 0)
    # A 7-bit index: 2 LUT6 per output bit of each element; ReLU has no table.
    assert costs.by_layer()["sigmoid"] == 2.0 * out_bits.sum()
    assert costs.rows[-2].parts == {"tables": 2.0 * out_bits.sum()}
    assert costs.by_layer()["relu"] == 0.0
    assert surrogate(activation) == pytest.approx(2.0 * out_bits.sum(), rel=1e-6)


def test_mlp_ebops_are_the_original_definition(rng):
    """An MLP has no logic outside its products (test_bops prices them by hand)."""
    model = keras.Sequential(
        [keras.Input((6,)), HQuantize(), HDense(5, activation="relu"), HDense(3)]
    )
    x = rng.normal(size=(128, 6)).astype("float32")
    costs = compute_bops(model, x, verbose=False)
    assert set(costs.by_kind()) == {"products"}
    assert float(costs) == costs.products == sum(r.parts.get("products", 0) for r in costs.rows)


@pytest.mark.slow
def test_pool_penalty_reaches_the_layer_before_it(rng):
    """The pool has no β: its cost is penalised with that of the layer feeding it, so
    training shrinks that layer's output bits where the pool sums them."""
    inp = keras.Input((8, 2))
    dense = HDense(4, name="phi", bops_reg_factor=1e-3)
    pool = PGlobalAvgPool1D()
    model = keras.Model(inp, pool(dense(HQuantize()(inp))))
    model(rng.normal(size=(2, 8, 2)).astype("float32"), training=True)
    assert pool.upstream_bops_reg_factor() is dense.bops_reg_factor_variable
    pool_loss = float(keras.ops.convert_to_numpy(pool.losses[-1]))
    assert pool_loss == pytest.approx(1e-3 * surrogate(pool), rel=1e-5)
    assert pool_loss > 0
