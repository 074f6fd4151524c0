"""Figures for HGQ training runs: the accuracy/EBOPs front, bitwidth maps, histories.

matplotlib is an optional extra (``pip install "hgq-keras[plot]"``), so the core
library never pays for it. Every function builds a ``matplotlib.figure.Figure``
directly instead of going through pyplot: no global "current figure" is touched,
nothing needs a display, and figures can be saved with ``fig.savefig`` from a
headless job or shown in a notebook alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

try:
    import matplotlib  # noqa: F401  (imported first so a missing package fails here)
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
except ImportError as error:  # pragma: no cover - exercised by monkeypatching in tests
    raise ImportError(
        'HGQ.plot needs matplotlib, an optional extra: pip install "hgq-keras[plot]"'
    ) from error

import numpy as np

from HGQ.fixed_point import bit_span
from HGQ.layers.base import HBaseLayer
from HGQ.model_layers import hgq_layers

__all__ = ["bitwidths", "front", "history"]

#: History keys drawn by ``history``, in panel order; the value says whether the
#: panel uses a log y axis (costs span orders of magnitude, and so does ``beta``
#: when it is ramped up during training).
_HISTORY_PANELS: dict[str, bool] = {"loss": False, "bops": True, "ebops": True, "beta": True}


# ----------------------------------------------------------------------------- front
def _front_records(source: Any) -> list[Mapping[str, Any]]:
    """The list of record dicts behind ``source`` (an object with ``.front``, or the list)."""
    records = getattr(source, "front", source)
    if isinstance(records, (Mapping, str, bytes)) or not isinstance(records, Iterable):
        raise TypeError(
            "front: pass a list of record dicts, or an object with a `.front` list of them; "
            f"got {type(records).__name__}"
        )
    records = list(records)
    if not records:
        raise ValueError("front: there are no records to plot")
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise TypeError(
                f"front: record {index} is a {type(record).__name__}, not a dict of metrics"
            )
    return records


def _check_keys(records: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> None:
    """Fail naming the first missing key and what the record has, so a typo is obvious."""
    for index, record in enumerate(records):
        for key in keys:
            if key not in record:
                raise ValueError(
                    f"front: record {index} has no key {key!r}; its keys are "
                    f"{sorted(map(str, record))}"
                )


def _pareto_indices(xs: np.ndarray, ys: np.ndarray, maximize: bool) -> list[int]:
    """Indices of the non-dominated points (lower x, better y), in increasing x.

    A point stays only if its y beats every point at lower or equal x: those are the
    corners of the staircase a cost/accuracy trade-off draws.
    """
    sign = 1.0 if maximize else -1.0
    # Sort by x, and at equal x the better y first so the worse twin is dropped.
    order = sorted(range(len(xs)), key=lambda i: (xs[i], -sign * ys[i]))
    kept: list[int] = []
    best = -np.inf
    for i in order:
        score = sign * ys[i]
        if score > best:
            kept.append(i)
            best = score
    return kept


def front(
    source: Any,
    x: str = "ebops",
    y: str = "val_accuracy",
    ax: Axes | None = None,
    label: str | None = None,
    annotate: bool = True,
    *,
    maximize: bool | None = None,
) -> Figure:
    """Scatter the records' ``y`` against ``x`` (log scale) and draw their Pareto staircase.

    ``source`` is a list of record dicts (each with ``epoch`` and the metric keys, e.g.
    ``{"epoch": 12, "val_accuracy": 0.95, "ebops": 1834.0}``) or an object holding such
    a list in ``.front`` (e.g. a checkpointing callback). Pass ``ax`` to draw onto an
    existing Axes so several runs can be overlaid (each with its own ``label``); the
    figure holding ``ax`` is returned. ``annotate`` writes each point's epoch next to
    it. ``maximize`` says whether a larger ``y`` is better; by default it is, unless
    ``y`` names a loss.
    """
    records = _front_records(source)
    _check_keys(records, [x, y, "epoch"] if annotate else [x, y])
    if maximize is None:
        maximize = "loss" not in y
    xs = np.array([float(r[x]) for r in records], np.float64)
    ys = np.array([float(r[y]) for r in records], np.float64)
    if np.any(~(xs > 0)):  # also catches NaN
        bad = [records[i].get("epoch", i) for i in np.flatnonzero(~(xs > 0))]
        raise ValueError(
            f"front: {x!r} must be positive for its log axis; it is not at epochs {bad}"
        )

    if ax is None:
        fig = Figure(figsize=(6.0, 4.0), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure

    kept = _pareto_indices(xs, ys, maximize)
    (line,) = ax.plot(xs[kept], ys[kept], drawstyle="steps-post", label=label)
    order = np.argsort(xs, kind="stable")
    ax.scatter(xs[order], ys[order], color=line.get_color(), s=16, zorder=line.get_zorder() + 1)
    if annotate:
        for i in order:
            ax.annotate(
                str(records[i]["epoch"]),
                (xs[i], ys[i]),
                textcoords="offset points",
                xytext=(3, 3),
                fontsize=7,
            )
    ax.set_xscale("log")
    ax.set_xlabel("EBOPs" if x == "ebops" else x)
    ax.set_ylabel(y)
    if label is not None:
        ax.legend()
    return fig


# ------------------------------------------------------------------------- bitwidths
def _as_2d(values: np.ndarray) -> np.ndarray:
    """Fold every axis but the last into rows: channels stay visible as columns."""
    values = np.asarray(values)
    if values.ndim == 0:
        return values.reshape(1, 1)
    if values.ndim == 1:
        return values.reshape(1, -1)
    return values.reshape(-1, values.shape[-1])


def _has_kernel(layer: Any) -> bool:
    return getattr(layer, "kernel_quantizer", None) is not None and hasattr(
        layer, "deployed_kernel"
    )


def _show_map(fig: Figure, ax: Axes, values: np.ndarray, title: str) -> None:
    """Draw one integer bitwidth map with its own colorbar (ranges differ per layer)."""
    grid = _as_2d(values)
    image = ax.imshow(
        grid,
        aspect="auto",
        interpolation="nearest",
        cmap="viridis",
        vmin=0,
        vmax=max(int(np.max(values, initial=0)), 1),
    )
    ax.set_title(f"{title} (mean {float(np.mean(values)):.2f} bits)", fontsize=9)
    # Pixels are elements: ticks at half-indices would suggest positions that do not exist.
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if grid.shape[0] == 1:  # a vector: one row, no row index to read
        ax.set_yticks([])
    colorbar = fig.colorbar(image, ax=ax)
    colorbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def bitwidths(model: Any) -> Figure:
    """Per-layer maps of deployed kernel bit spans and exact activation bitwidths.

    One row per HGQ layer: its kernel's bit spans (the widths EBOPs charges, from
    ``bit_span`` of the deployed kernel) on the left, when it has a kernel, and its
    output's exact bitwidths on the right, when it quantizes its output. Axes other
    than the last are folded into rows. The model must be calibrated with
    ``HGQ.bops.compute_bops(model, X)`` first: before that no integer bits exist, so
    there are no exact activation bitwidths to show.
    """
    rows: list[tuple[str, np.ndarray | None, np.ndarray | None]] = []
    for layer in hgq_layers(model):
        kernel_bits = activation_bits = None
        if isinstance(layer, HBaseLayer):
            if not layer.built:
                raise ValueError(
                    f"bitwidths: layer '{layer.name}' is not built; call "
                    "HGQ.bops.compute_bops(model, X) first to calibrate the model"
                )
            try:
                activation_bits = np.asarray(layer.exact_output_bitwidth())
            except RuntimeError as error:
                raise ValueError(
                    f"bitwidths: layer '{layer.name}' is not calibrated; call "
                    "HGQ.bops.compute_bops(model, X) first"
                ) from error
        if _has_kernel(layer):
            kernel_bits = bit_span(
                layer.deployed_kernel(), layer.kernel_quantizer.rounded_fractional_bits()
            )
        if kernel_bits is not None or activation_bits is not None:
            rows.append((layer.name, kernel_bits, activation_bits))
    if not rows:
        raise ValueError("bitwidths: the model has no HGQ layer with a kernel or output quantizer")

    fig = Figure(figsize=(10.0, 2.6 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for (name, kernel_bits, activation_bits), (kernel_ax, activation_ax) in zip(
        rows, axes, strict=True
    ):
        if kernel_bits is None:
            fig.delaxes(kernel_ax)  # an empty frame would read as "all zero"
        else:
            _show_map(fig, kernel_ax, kernel_bits, f"{name}: kernel")
            kernel_ax.set_xlabel("output channel")
        if activation_bits is None:
            fig.delaxes(activation_ax)
        else:
            _show_map(fig, activation_ax, activation_bits, f"{name}: activation")
            activation_ax.set_xlabel("last axis")
    return fig


# --------------------------------------------------------------------------- history
def history(history: Any) -> Figure:
    """Plot ``loss`` (with ``val_loss``), ``bops``, ``ebops`` and ``beta`` per epoch.

    ``history`` is a ``keras.callbacks.History`` (as ``fit`` returns) or its
    ``.history`` dict of per-epoch lists. Only the keys present get a panel; costs and
    ``beta`` use log y axes since they move by orders of magnitude in a run.
    """
    logs = getattr(history, "history", history)
    if not isinstance(logs, Mapping):
        raise TypeError(
            "history: pass a keras.callbacks.History or a dict of per-epoch lists; "
            f"got {type(history).__name__}"
        )
    panels = [
        key for key in _HISTORY_PANELS if key in logs or (key == "loss" and "val_loss" in logs)
    ]
    if not panels:
        raise ValueError(
            f"history: none of {sorted(_HISTORY_PANELS) + ['val_loss']} is in the history; "
            f"its keys are {sorted(map(str, logs))}"
        )

    fig = Figure(figsize=(6.0, 2.2 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    # A History also records which epochs ran (they start past 0 with initial_epoch).
    epochs = list(getattr(history, "epoch", []) or [])
    for key, ax in zip(panels, axes, strict=True):
        series = [key, "val_loss"] if key == "loss" else [key]
        for name in series:
            if name in logs:
                values = np.asarray(logs[name], np.float64)
                steps = epochs if len(epochs) == len(values) else np.arange(len(values))
                ax.plot(steps, values, label=name)
        if _HISTORY_PANELS[key]:
            ax.set_yscale("log")
        ax.set_ylabel(key)
        if key == "loss" and len(ax.lines) > 1:
            ax.legend()
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig
