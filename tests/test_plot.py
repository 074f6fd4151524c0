"""HGQ.plot: figures built without pyplot, checked against independently computed data."""

from __future__ import annotations

import importlib
import sys
from types import SimpleNamespace

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")  # headless: nothing may need a display

import keras  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from HGQ import HDense, HQuantize  # noqa: E402
from HGQ.bops import compute_bops  # noqa: E402

plot = importlib.import_module("HGQ.plot")

RECORDS = [
    {"epoch": 30, "path": "e30.keras", "val_accuracy": 0.97, "ebops": 4000.0},
    {"epoch": 3, "path": "e3.keras", "val_accuracy": 0.80, "ebops": 250.0},
    {"epoch": 12, "path": "e12.keras", "val_accuracy": 0.95, "ebops": 1834.0},
    {"epoch": 7, "path": "e7.keras", "val_accuracy": 0.90, "ebops": 900.0},
]


def _model() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8,)),
            HQuantize(name="inp_q"),
            HDense(4, activation="relu", name="d1"),
            HDense(3, name="d2"),
        ]
    )


@pytest.fixture(scope="module")
def calibrated() -> keras.Model:
    model = _model()
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    compute_bops(model, x, verbose=False)
    return model


def _image_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.images]


def _span_by_ints(values: np.ndarray, frac_bits: np.ndarray) -> np.ndarray:
    """Bits from the highest to the lowest set bit, computed with Python ints."""
    out = np.zeros(values.shape, np.int64)
    for index, (value, f) in enumerate(zip(values.ravel(), frac_bits.ravel(), strict=True)):
        scaled = abs(float(value)) * 2.0 ** int(f)
        m = int(scaled)
        assert m == scaled, "deployed kernel value off its grid"
        if m:
            lowest = (m & -m).bit_length() - 1
            out.flat[index] = m.bit_length() - lowest
    return out


# ----------------------------------------------------------------------------- front
def test_front_records_points_and_log_axis() -> None:
    fig = plot.front(RECORDS)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "EBOPs"
    assert ax.get_ylabel() == "val_accuracy"

    expected = sorted((r["ebops"], r["val_accuracy"]) for r in RECORDS)
    (scatter,) = ax.collections
    assert sorted(map(tuple, scatter.get_offsets().tolist())) == expected
    # Every record here is on the front, so the staircase passes through all of them.
    (line,) = ax.lines
    assert list(zip(line.get_xdata(), line.get_ydata(), strict=True)) == expected
    assert line.get_drawstyle() == "steps-post"
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(r["epoch"]) for r in RECORDS)


def test_front_staircase_drops_dominated_points() -> None:
    records = [*RECORDS, {"epoch": 40, "val_accuracy": 0.85, "ebops": 2000.0}]
    ax = plot.front(records, annotate=False).axes[0]
    (line,) = ax.lines
    assert (2000.0, 0.85) not in list(zip(line.get_xdata(), line.get_ydata(), strict=True))
    assert len(ax.collections[0].get_offsets()) == len(records)
    assert not ax.texts


def test_front_object_and_overlay() -> None:
    holder = SimpleNamespace(front=RECORDS)
    fig = plot.front(holder, label="run a")
    ax = fig.axes[0]
    second = [{"epoch": 1, "val_accuracy": 0.5, "ebops": 10.0}]
    assert plot.front(second, ax=ax, label="run b") is fig
    assert len(fig.axes) == 1
    assert len(ax.lines) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["run a", "run b"]


def test_front_missing_key_names_it() -> None:
    with pytest.raises(ValueError, match=r"'val_accuracy'.*\['ebops', 'epoch'\]"):
        plot.front([{"epoch": 1, "ebops": 10.0}])


# ------------------------------------------------------------------------- bitwidths
def test_bitwidths_axes_and_kernel_image(calibrated: keras.Model) -> None:
    fig = plot.bitwidths(calibrated)
    assert isinstance(fig, Figure)
    maps = _image_axes(fig)
    # inp_q: activation only; d1 and d2: kernel and activation. Each map has a colorbar.
    assert len(maps) == 5
    assert len(fig.axes) == 10

    titles = {ax.get_title().split(" (")[0]: ax for ax in maps}
    assert set(titles) == {
        "inp_q: activation",
        "d1: kernel",
        "d1: activation",
        "d2: kernel",
        "d2: activation",
    }
    for name in ("d1", "d2"):
        layer = calibrated.get_layer(name)
        expected = _span_by_ints(
            layer.deployed_kernel(), layer.kernel_quantizer.rounded_fractional_bits()
        )
        shown = np.asarray(titles[f"{name}: kernel"].images[0].get_array())
        np.testing.assert_array_equal(shown, expected)
        activation = np.asarray(titles[f"{name}: activation"].images[0].get_array())
        np.testing.assert_array_equal(activation, layer.exact_output_bitwidth().reshape(1, -1))
    assert titles["inp_q: activation"].images[0].get_array().shape == (1, 8)


def test_bitwidths_uncalibrated_raises() -> None:
    with pytest.raises(ValueError, match="compute_bops"):
        plot.bitwidths(_model())


# --------------------------------------------------------------------------- history
def test_history_dict_panels_and_log_scales() -> None:
    logs = {
        "loss": [1.0, 0.5, 0.3],
        "bops": [1e4, 3e3, 1e3],
        "ebops": [9e3, 2e3, 8e2],
        "beta": [1e-6, 1e-5, 1e-4],
        "accuracy": [0.5, 0.7, 0.8],
    }
    fig = plot.history(logs)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "bops", "ebops", "beta"]
    assert [ax.get_yscale() for ax in fig.axes] == ["linear", "log", "log", "log"]
    for ax, key in zip(fig.axes, ["loss", "bops", "ebops", "beta"], strict=True):
        np.testing.assert_array_equal(ax.lines[0].get_ydata(), logs[key])


def test_history_object_with_val_loss() -> None:
    held = SimpleNamespace(history={"loss": [1.0, 0.5], "val_loss": [1.2, 0.7]}, epoch=[0, 1])
    fig = plot.history(held)
    assert len(fig.axes) == 1
    assert [line.get_label() for line in fig.axes[0].lines] == ["loss", "val_loss"]


def test_history_without_known_keys_raises() -> None:
    with pytest.raises(ValueError, match="accuracy"):
        plot.history({"accuracy": [0.5, 0.6]})


# ---------------------------------------------------------------------- output, import
def test_savefig_png(tmp_path, calibrated: keras.Model) -> None:
    for index, fig in enumerate(
        [plot.front(RECORDS), plot.bitwidths(calibrated), plot.history({"loss": [1.0, 0.5]})]
    ):
        path = tmp_path / f"figure{index}.png"
        fig.savefig(path)
        assert path.read_bytes().startswith(b"\x89PNG")
        assert path.stat().st_size > 1000


def test_import_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "HGQ.plot")
    with pytest.raises(ImportError, match=r'pip install "hgq-keras\[plot\]"'):
        importlib.import_module("HGQ.plot")
