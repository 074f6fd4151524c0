"""EBOPs against LUTs from open synthesis: how well the training's cost predicts hardware.

For each model and β: train with that fixed β, calibrate (exact EBOPs), convert with
``HGQ.rtl.convert_to_rtl`` (da4ml, combinational), build the verilator simulation and
check it against Keras on the test set and far outside the calibrated range, then
synthesise with yosys (UltraScale+ LUT6 mapping). Printed: EBOPs, yosys LUTs, da4ml's
LUT estimate, da4ml's delay estimate, the LUT/EBOPs ratio and its range, and the
correlation of LUTs with EBOPs; a scatter plot goes to ``<out>/resources.png``.

Models: the digits MLP (64-32-16-10) and CNN of ``examples/``, and the jet-tagging MLP
(16-64-32-32-5, ``examples/jet_tagging.py``). The jet model trains on the OpenML data
when ``--jet-data`` points to the ARFF file; otherwise on a stand-in of the same shape
(16 standard-normal features, 5 classes from a fixed random teacher), which is said so
in the table: the resources follow the trained formats, not the physics.

    KERAS_BACKEND=jax .venv/bin/python bench/resources.py [--models mlp cnn jet]
        [--betas 1e-6 1e-5 1e-4 3e-4] [--epochs 60] [--out build/resources]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

# isort: off
import HGQ  # noqa: F401  (selects the Keras backend: must precede keras)
import keras

# isort: on
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

from digits_cnn import hgq_cnn  # noqa: E402
from digits_common import accuracy, load_data  # noqa: E402
from digits_mlp import hgq_mlp  # noqa: E402
from jet_tagging import build_model as jet_mlp  # noqa: E402

from HGQ.bops import ResetMinMax, compute_bops  # noqa: E402
from HGQ.rtl import convert_to_rtl  # noqa: E402


def jet_stand_in(n: int = 6000, seed: int = 0):
    """16 features, 5 classes from a fixed random two-layer teacher (no download)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype("float32")
    hidden = np.tanh(x @ rng.normal(size=(16, 12)))
    y = np.argmax(hidden @ rng.normal(size=(12, 5)), axis=1).astype("int32")
    cut = int(0.75 * n)
    return x[:cut], x[cut:], y[:cut], y[cut:]


def jet_data(path: str | None):
    if path is None:
        return jet_stand_in(), "stand-in"
    from HGQ.datasets import load_jet_tagging

    x_train, x_test, y_train, y_test = load_jet_tagging(path)
    return (x_train[:50_000], x_test[:20_000], y_train[:50_000], y_test[:20_000]), "OpenML"


def unrolled_ebops(model: keras.Model) -> float:
    """EBOPs with every kernel instance counted, as a fully unrolled circuit (da4ml, or
    hls4ml io_parallel) builds it: a layer's EBOPs price ``parallel_factor`` of its
    positions (1 by default: one kernel reused over a convolution's positions)."""
    total = 0.0
    for layer in model._flatten_layers(include_self=False):
        if not hasattr(layer, "compute_exact_bops"):
            continue
        positions = getattr(layer, "output_positions", None) or getattr(layer, "positions", 1)
        total += layer.compute_exact_bops() * positions / getattr(layer, "parallel_factor", 1)
    return total


def measure(build, beta: float, data, epochs: int, workdir: str) -> dict:
    x_train, x_test, y_train, y_test = data
    keras.utils.set_random_seed(0)
    model = build(beta)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(3e-3), loss, metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0, callbacks=[ResetMinMax()])
    trained = time.perf_counter() - start
    ebops = float(compute_bops(model, x_train, bsz=1024, verbose=False))
    start = time.perf_counter()
    project = convert_to_rtl(model, os.path.join(workdir, f"{model.name}_{beta:g}"))
    converted = time.perf_counter() - start
    start = time.perf_counter()
    project.compile()
    compiled = time.perf_counter() - start
    rng = np.random.default_rng(0)
    far = (x_test * 8 + rng.normal(scale=4, size=x_test.shape)).astype("float32")
    probe = np.concatenate([x_test, far])
    expected = model.predict(probe, verbose=0, batch_size=4096)
    got = np.asarray(project.predict(probe)).reshape(expected.shape)
    start = time.perf_counter()
    resources = project.resources()
    synthesised = time.perf_counter() - start
    return {
        "model": model.name,
        "beta": beta,
        "accuracy": accuracy(model, x_test, y_test),
        "ebops": ebops,
        "ebops_unrolled": unrolled_ebops(model),
        "lut": resources["lut"],
        "lut_estimate": resources["lut_estimate"],
        "carry": resources["carry"],
        "delay_estimate": resources["latency"]["delay_estimate"],
        "exact": f"{int(np.sum(got == expected))}/{expected.size}",
        "seconds": {
            "train": round(trained, 1),
            "convert": round(converted, 1),
            "verilator": round(compiled, 1),
            "yosys": round(synthesised, 1),
        },
    }


def summary(rows: list[dict]) -> str:
    ebops = np.array([r["ebops"] for r in rows])
    lut = np.array([r["lut"] for r in rows], dtype=np.float64)
    estimate = np.array([r["lut_estimate"] for r in rows])
    ratio = lut / ebops
    lines = [
        f"LUT/EBOPs: {ratio.min():.2f} to {ratio.max():.2f} (median {np.median(ratio):.2f})",
        f"Pearson r(EBOPs, LUT) = {np.corrcoef(ebops, lut)[0, 1]:.3f}; "
        f"on logs {np.corrcoef(np.log(ebops), np.log(lut))[0, 1]:.3f}",
        f"yosys LUT / da4ml estimate: {np.min(lut / estimate):.2f} to {np.max(lut / estimate):.2f}",
    ]
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no plot: matplotlib is not installed)")
        return
    figure, axis = plt.subplots(figsize=(5.5, 4))
    for name in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == name]
        axis.scatter([r["ebops"] for r in mine], [r["lut"] for r in mine], label=f"{name} (yosys)")
        axis.scatter(
            [r["ebops"] for r in mine],
            [r["lut_estimate"] for r in mine],
            marker="x",
            label=f"{name} (da4ml estimate)",
        )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("EBOPs (exact, after calibration)")
    axis.set_ylabel("LUTs")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn", "jet"])
    parser.add_argument("--betas", nargs="+", type=float, default=[1e-6, 1e-5, 1e-4, 3e-4])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--jet-data", default=None, help="hls4ml_lhc_jets_hlf ARFF file")
    parser.add_argument("--out", default="build/resources")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    digits = load_data()
    digits_images = load_data(sample_shape=(8, 8, 1))
    jet, jet_source = jet_data(args.jet_data) if "jet" in args.models else (None, "")
    builds = {
        "mlp": (hgq_mlp, digits, "digits"),
        "cnn": (hgq_cnn, digits_images, "digits"),
        "jet": (jet_mlp, jet, f"jets ({jet_source})"),
    }
    rows = []
    header = (
        f"{'model':<11} {'data':<18} {'beta':>7} {'acc':>6} {'EBOPs':>8} {'unrolled':>9} "
        f"{'LUT':>7} {'da4ml':>7} {'LUT/EBOPs':>9} {'delay':>6}  exact"
    )
    print(header)
    with tempfile.TemporaryDirectory(prefix="hgq_resources_") as workdir:
        for name in args.models:
            build, data, label = builds[name]
            for beta in args.betas:
                row = measure(build, beta, data, args.epochs, workdir)
                row["data"] = label
                rows.append(row)
                print(
                    f"{row['model']:<11} {label:<18} {beta:>7.0e} {row['accuracy']:>6.3f} "
                    f"{row['ebops']:>8,.0f} {row['ebops_unrolled']:>9,.0f} "
                    f"{row['lut']:>7,} {row['lut_estimate']:>7,.0f} "
                    f"{row['lut'] / row['ebops']:>9.2f} {row['delay_estimate']:>6.0f}  "
                    f"{row['exact']}  {row['seconds']}",
                    flush=True,
                )
    print(summary(rows))
    with open(os.path.join(args.out, "resources.json"), "w") as stream:
        json.dump(rows, stream, indent=1)
    plot(rows, os.path.join(args.out, "resources.png"))


if __name__ == "__main__":
    main()
