"""The per-layer cost of a calibrated model: rows as data, a total that acts as a float.

``compute_bops`` returned only its total while printing a table, so the per-layer
figures could not be logged or plotted. ``EBOPs`` is that total as a ``float`` (it
compares, adds and formats as one) that also carries the rows; ``summary(model)``
prints them for a model calibrated earlier (or loaded after calibration).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np

from HGQ.layers.base import QLayerBase
from HGQ.layers.parallelism import ParallelFactorMixin
from HGQ.model_layers import hgq_layers, uncalibrated_layers


@dataclass(frozen=True)
class LayerCost:
    """One layer's exact EBOPs and the formats of its output, per element.

    ``bits`` (the deployed width, 0 for an element that is always 0), ``keep_negative``,
    ``int_bits`` and ``frac_bits`` are integer arrays shaped like one sample of the
    layer's output. ``parts`` splits ``ebops`` by kind: ``products`` (the original
    HGQ's EBOPs) and the ``adders``, ``comparisons`` and ``tables`` of
    ``HGQ.logic_costs``. ``parallel_factor`` and ``positions`` are the kernel instances
    priced and the positions the kernel is applied to (None for layers without).
    """

    name: str
    type: str
    ebops: float
    bits: np.ndarray
    keep_negative: np.ndarray
    int_bits: np.ndarray
    frac_bits: np.ndarray
    parts: dict[str, float] = field(default_factory=dict)
    parallel_factor: int | None = None
    positions: int | None = None

    @property
    def parallel(self) -> str:
        """``'instances/positions'`` for a layer with a ``parallel_factor``, else ``'-'``."""
        if self.parallel_factor is None:
            return "-"
        return f"{self.parallel_factor}/{self.positions}"

    @property
    def bits_mean(self) -> float:
        return float(self.bits.mean())

    @property
    def bits_max(self) -> int:
        return int(self.bits.max())


class EBOPs(float):
    """A model's exact EBOPs: a float (the total) with the per-layer ``rows``."""

    rows: tuple[LayerCost, ...]

    def __new__(cls, rows: list[LayerCost]) -> EBOPs:
        result = super().__new__(cls, sum(row.ebops for row in rows))
        result.rows = tuple(rows)
        return result

    def __reduce__(self):
        return (EBOPs, (list(self.rows),))

    def by_layer(self) -> dict[str, float]:
        """``{layer name: EBOPs}``, e.g. to log with the training history."""
        return {row.name: row.ebops for row in self.rows}

    def by_kind(self) -> dict[str, float]:
        """The total split by kind (``LayerCost.parts``): ``products`` is the original
        HGQ's EBOPs, the rest the logic that multiplies nothing."""
        kinds: dict[str, float] = {}
        for row in self.rows:
            for kind, value in row.parts.items():
                kinds[kind] = kinds.get(kind, 0.0) + value
        return kinds

    @property
    def products(self) -> float:
        """The EBOPs of the original HGQ's definition: multiplications only."""
        return self.by_kind().get("products", 0.0)

    def table(self) -> str:
        """The per-layer table ``compute_bops`` and ``summary`` print."""
        columns = 6
        header = (
            "layer",
            "type",
            "output bits (mean/max)",
            "int bits",
            "frac bits",
            "parallel",
            "EBOPs",
        )
        cells = [
            (
                row.name,
                row.type,
                f"{row.bits_mean:.2f}/{row.bits_max}",
                _span(row.int_bits),
                _span(row.frac_bits),
                row.parallel,
            )
            for row in self.rows
        ]
        widths = [max(len(c[k]) for c in [header[:columns], *cells]) for k in range(columns)]
        lines = [
            "  ".join(f"{h:<{w}}" for h, w in zip(header[:columns], widths, strict=True))
            + f"  {header[columns]:>12}"
        ]
        for cell, row in zip(cells, self.rows, strict=True):
            lines.append(
                "  ".join(f"{c:<{w}}" for c, w in zip(cell, widths, strict=True))
                + f"  {row.ebops:>12,.0f}"
            )
        lines.append(f"{'total':<{sum(widths) + 2 * (columns - 1)}}  {float(self):>12,.0f}")
        logic = float(self) - self.products
        if logic:
            lines.append(
                f"(of which {self.products:,.0f} in products, the original HGQ's EBOPs, and "
                f"{logic:,.0f} in adders, comparisons and tables; 'parallel': kernel "
                "instances priced / positions)"
            )
        return "\n".join(lines)


def _span(values: np.ndarray) -> str:
    low, high = int(values.min()), int(values.max())
    return str(low) if low == high else f"{low}..{high}"


def layer_costs(layers: list[QLayerBase]) -> EBOPs:
    """The exact cost of each calibrated layer in ``layers``."""
    rows = []
    for layer in layers:
        k, i, f = (np.asarray(a, dtype=np.int64) for a in layer.exact_output_format())
        parts = {kind: float(v) for kind, v in layer.exact_cost_parts().items() if v}
        priced_parallel = isinstance(layer, ParallelFactorMixin)
        rows.append(
            LayerCost(
                name=layer.name,
                type=type(layer).__name__,
                ebops=float(sum(parts.values())),
                bits=np.asarray(layer.exact_output_bitwidth(), dtype=np.int64),
                keep_negative=k,
                int_bits=i,
                frac_bits=f,
                parts=parts,
                parallel_factor=layer.parallel_factor if priced_parallel else None,
                positions=layer.positions if priced_parallel else None,
            )
        )
    return EBOPs(rows)


def summary(model: keras.Model, print_fn=print) -> EBOPs:
    """Print the per-layer output formats and exact EBOPs of a calibrated model.

    The model must have been calibrated with ``compute_bops`` (a ``.keras`` file saved
    afterwards keeps its calibration). Returns the same ``EBOPs`` as ``compute_bops``.
    """
    layers = hgq_layers(model)
    if not layers:
        raise ValueError(f"HGQ.summary: model '{model.name}' contains no HGQ layers.")
    missing = uncalibrated_layers(layers)
    if missing:
        raise ValueError(
            f"HGQ.summary: model '{model.name}' is not calibrated (layer(s) "
            f"{', '.join(missing)} have no integer bits yet). Call "
            "HGQ.compute_bops(model, x_train) first."
        )
    costs = layer_costs(layers)
    print_fn(costs.table())
    return costs
