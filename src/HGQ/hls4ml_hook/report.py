"""A readable table of the types hls4ml chose for each layer of a converted model."""

from __future__ import annotations

from typing import Any

TYPE_KEYS = ("result_t", "accum_t", "weight_t", "bias_t", "table_t")


def _type_name(attribute: Any) -> str | None:
    precision = getattr(attribute, "precision", None)
    if precision is None:
        return None
    return str(precision)


def precision_table(model_hls: Any) -> str:
    """One line per hls4ml layer: its class and every fixed-point type it uses.

    A ``FixedPointQuantizer`` casts each element to its own format; its line shows
    the range of element widths instead of one type.
    """
    lines = []
    for node in model_hls.graph.values():
        parts = []
        if node.class_name == "FixedPointQuantizer":
            _, width, _ = node.mask_kbi
            parts.append(f"per-element widths {int(width.min())}..{int(width.max())} bits")
        for key in TYPE_KEYS:
            if key == "table_t" and node.class_name != "UnaryLUT":
                continue  # hls4ml gives every activation a default table type it never uses
            name = _type_name(node.attributes.get(key))
            if name is not None:
                parts.append(f"{key}={name}")
        lines.append(f"{node.name:<24} {node.class_name:<20} {'  '.join(parts)}")
    return "\n".join(lines)
