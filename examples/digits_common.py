"""What the digits examples share: the data, accuracy, the front, and the deployment check."""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

# isort: off
import HGQ  # noqa: F401  (selects the Keras backend: must precede keras)
import keras

# isort: on
from HGQ.bops import ResetMinMax, compute_bops
from HGQ.callbacks import ParetoFront
from HGQ.hls4ml_hook import convert_from_hgq_model, precision_table


def load_data(seed: int = 0, sample_shape: tuple[int, ...] = (64,)):
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")  # pixel intensities 0..16 -> [0, 1]
    x = x.reshape(-1, *sample_shape)
    y = digits.target.astype("int32")
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def accuracy(model: keras.Model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


def verify_deployment(model: keras.Model, x_test: np.ndarray, output_dir: str) -> None:
    """Convert, compile the C simulation, and count outputs equal to Keras's, bit for bit."""
    model_hls = convert_from_hgq_model(model, output_dir)
    model_hls.compile()
    print(precision_table(model_hls))
    rng = np.random.default_rng(0)
    far = (x_test * 8 + rng.normal(scale=4, size=x_test.shape)).astype("float32")
    for label, x in (("test set", x_test), ("far outside the calibrated range", far)):
        expected = model.predict(x, verbose=0)
        got = np.asarray(model_hls.predict(np.ascontiguousarray(x))).reshape(expected.shape)
        equal = int(np.sum(got == expected))
        print(f"bit-exact: {equal}/{expected.size} outputs ({label})")


def verify_rtl(
    model: keras.Model, x_test: np.ndarray, output_dir: str, ebops: float, cutoff: float = 5.0
) -> None:
    """Verilog through alkaid, its verilator simulation checked bit for bit, then LUTs
    (yosys, UltraScale+), flip-flops and clock cycles next to the EBOPs."""
    from HGQ.rtl import convert_to_rtl

    project = convert_to_rtl(model, output_dir, latency_cutoff=cutoff, clock_period=5.0)
    project.compile()
    rng = np.random.default_rng(0)
    far = (x_test * 8 + rng.normal(scale=4, size=x_test.shape)).astype("float32")
    for label, x in (("test set", x_test), ("far outside the calibrated range", far)):
        expected = model.predict(x, verbose=0)
        got = np.asarray(project.predict(x)).reshape(expected.shape)
        equal = int(np.sum(got == expected))
        print(f"verilator bit-exact: {equal}/{expected.size} outputs ({label})")
    r = project.resources()
    print(
        f"{ebops:,.0f} EBOPs -> {r['lut']:,} LUTs (yosys; alkaid estimates "
        f"{r['lut_estimate']:,.0f}), {r['ff']:,} flip-flops, {r['latency']['cycles']} clock cycles "
        f"(pipelined at {cutoff:g} ns of alkaid's estimated delay per stage)"
    )


def train_float_reference(
    model: keras.Model, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int
) -> keras.Model:
    """The same network in float, trained the same way, quietly."""
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(3e-3), loss, metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    return model


def estimated_luts(model: keras.Model) -> float | None:
    """alkaid's LUT estimate of the calibrated ``model`` as Verilog (no synthesis, well
    under a second for these models), or None without the rtl extra."""
    if importlib.util.find_spec("alkaid") is None:
        return None
    from HGQ.rtl import convert_to_rtl

    with tempfile.TemporaryDirectory() as directory:
        return convert_to_rtl(model, directory, write=False).estimate(per_layer=False)["lut"]


def front_rows(
    front: ParetoFront, x_calibration: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> list[dict[str, Any]]:
    """Each kept checkpoint reloaded, calibrated as ``CalibratedBOPs`` did, and tested;
    with the rtl extra, also its LUTs as alkaid estimates them (``lut_estimate``)."""
    rows = []
    for record in front.front:
        model = keras.models.load_model(record["path"])
        ebops = compute_bops(model, x_calibration, bsz=1024, verbose=False)
        if ebops != record["ebops"]:
            raise RuntimeError(f"{record['path']}: {ebops} EBOPs, {record['ebops']} recorded")
        row = dict(record, test_accuracy=accuracy(model, x_test, y_test), model=model)
        luts = estimated_luts(model)
        if luts is not None:
            row["lut_estimate"] = luts
        rows.append(row)
    return sorted(rows, key=lambda row: row["ebops"])


def pick_deployed(rows: list[dict[str, Any]], tolerance: float = 0.01) -> dict[str, Any]:
    """The cheapest checkpoint within ``tolerance`` of the best validation accuracy."""
    best = max(row["val_accuracy"] for row in rows)
    good_enough = [row for row in rows if row["val_accuracy"] >= best - tolerance]
    return min(good_enough, key=lambda row: row["ebops"])


def print_front(rows: list[dict[str, Any]], chosen: dict[str, Any]) -> None:
    luts = all("lut_estimate" in row for row in rows)
    print(
        f"{'epoch':>6} {'val accuracy':>13} {'EBOPs':>9} {'test accuracy':>14}"
        + (f" {'est. LUTs':>10}" if luts else "")
    )
    for row in rows:
        mark = "  <- deployed" if row is chosen else ""
        print(
            f"{row['epoch']:>6} {row['val_accuracy']:>13.4f} {row['ebops']:>9,.0f} "
            f"{row['test_accuracy']:>14.4f}"
            + (f" {row['lut_estimate']:>10,.0f}" if luts else "")
            + mark
        )


def write_figures(front: ParetoFront, chosen: dict[str, Any], output_dir: str) -> None:
    """The front and the chosen model's bitwidth maps as PNGs, where matplotlib is installed."""
    try:
        from HGQ import plot
    except ImportError as error:
        print(f"(no figures: {error})")
        return
    os.makedirs(output_dir, exist_ok=True)
    for name, figure in (
        ("front.png", plot.front(front)),
        ("bitwidths.png", plot.bitwidths(chosen["model"])),
    ):
        path = os.path.join(output_dir, name)
        figure.savefig(path, dpi=120)
        print(f"wrote {path}")


def float_ebops(model: keras.Model, bits: int = 32) -> float:
    """What the same network costs with every operand 32 bits wide, for scale."""
    kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    return float(sum(np.prod(kernel.shape) * bits * bits for kernel in kernels))


def run_example(
    doc: str,
    name: str,
    hgq_model: Callable[[float], keras.Model],
    float_model: Callable[[], keras.Model],
    sample_shape: tuple[int, ...],
) -> None:
    """Train float and HGQ twins, calibrate, compare, convert and check bit-exactness."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--beta", type=float, default=3e-6, help="bops_reg_factor")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output-dir", default=f"build/hls4ml/{name}")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    x_train, x_test, y_train, y_test = load_data(sample_shape=sample_shape)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    print(f"Keras backend: {keras.backend.backend()}")
    print(f"digits: {len(x_train)} train / {len(x_test)} test samples of shape {sample_shape}\n")

    print("== float model")
    reference = float_model()
    reference.compile(keras.optimizers.Adam(3e-3), loss, metrics=["accuracy"])
    reference.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=2)

    print(f"\n== HGQ model (bops_reg_factor={args.beta:g})")
    model = hgq_model(args.beta)
    model.compile(keras.optimizers.Adam(3e-3), loss, metrics=["accuracy"])
    model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        callbacks=[ResetMinMax()],
        verbose=2,
    )

    print("\n== compute_bops (calibrates integer bits on the training set)")
    ebops = compute_bops(model, x_train, bsz=1024)

    acc_float = accuracy(reference, x_test, y_test)
    acc_hgq = accuracy(model, x_test, y_test)
    print("\n== result on the held-out test set")
    print(f"{'model':<8} {'accuracy':>9} {'EBOPs':>12}")
    print(f"{'float':<8} {acc_float:>9.4f} {float_ebops(reference):>12,.0f}  (32-bit operands)")
    print(f"{'HGQ':<8} {acc_hgq:>9.4f} {ebops:>12,.0f}")

    print(f"\n== hls4ml conversion ({args.output_dir})")
    verify_deployment(model, x_test, args.output_dir)
