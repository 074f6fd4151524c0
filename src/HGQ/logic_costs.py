"""EBOPs of the logic that multiplies nothing: adder trees, comparisons and tables.

The original EBOPs count products only: ``bw_a * bw_b`` per multiplication, which for
a constant kernel (shift-and-add, as da4ml builds it) already covers the adders that
accumulate the products. Sums outside a product (pools, ``HAdd``, the softmax's row
sum), comparisons (max pools, the softmax's row maximum) and lookup tables
(``HActivation``, the softmax's exponential and reciprocal) also take LUTs; these
rules price them in the same currency (about one LUT per adder bit):

- **a sum of n operands** (per output element): a balanced tree of ``n - 1`` adders,
  each about as wide as the mean operand plus the carries the tree grows by:
  ``(n - 1) / n * sum(bw) + (n - 1) * log2(n)``, with ``n`` the operands that are not
  constant zero (0 bits);
- **a maximum of n operands**: ``COMPARISON_WEIGHT`` times that (a comparison is an
  adder's carry chain, the select a multiplexer on top);
- **a table** from ``b_in`` to ``b_out`` bits: ``b_out * 2^(b_in - 6)``, LUT6s per
  output bit (da4ml's estimate, from five input bits up).

Every function takes ``xp``, ``numpy`` for the exact count or ``keras.ops`` for the
differentiable training surrogate, so both follow one rule.
"""

from __future__ import annotations

from typing import Any

#: A maximum's comparison and select against an adder of the same width. Measured
#: with yosys on max pools of 8-bit inputs: 1.6-1.7 (da4ml's estimate: 1.5).
COMPARISON_WEIGHT = 1.5

#: Inputs of one LUT (UltraScale+, Versal, Agilex ALMs count alike).
LUT_INPUTS = 6


def reduction_cost(total_bits: Any, operands: Any, xp: Any) -> Any:
    """EBOPs of summing ``operands`` values whose widths add up to ``total_bits``
    (elementwise arrays: one entry per output). 0 for one operand or none."""
    n = xp.maximum(operands, 1.0)
    cost = (n - 1.0) / n * total_bits + (n - 1.0) * xp.log2(n)
    return xp.where(total_bits > 0, cost, 0.0 * cost)


def table_cost(input_bits: Any, output_bits: Any, xp: Any) -> Any:
    """EBOPs of lookup tables from ``input_bits`` to ``output_bits`` wide values."""
    cost = output_bits * xp.power(2.0, input_bits - float(LUT_INPUTS))
    return xp.where((input_bits > 0) & (output_bits > 0), cost, 0.0 * cost)
