"""Train the HGQ jet tagger of the hls4ml benchmark and keep its accuracy-vs-EBOPs front.

The hls4ml LHC jet-tagging benchmark classifies jets into five classes (g, q, t, W, Z)
from 16 high-level substructure features. This example trains the benchmark's MLP for
it, ``HQuantize -> 64 -> 32 -> 32 (HDense, ReLU) -> 5 (HDense, logits)`` (``--batch-norm``
folds a batch normalisation into each hidden layer), in one run whose β (the weight of
the EBOPs penalty) is held small for the first epochs, so the model learns the task, and
then rises geometrically, so the run walks down the accuracy-vs-EBOPs trade-off. Every
epoch the exact EBOPs are measured on a calibration subset of the training data
(``CalibratedBOPs``), and each epoch that no other epoch beats on validation accuracy,
validation loss and EBOPs together is checkpointed (``ParetoFront``) under
``<output-dir>/front``.

After training, each kept checkpoint is reloaded, calibrated with ``compute_bops`` on the
same calibration data (which gives exactly the EBOPs recorded during training) and
evaluated on the test split. With the ``rtl`` extra installed (alkaid), each one is also
traced to its circuit: alkaid's LUT estimate is printed next to its EBOPs, and alkaid's
bit-exact interpreter of that circuit runs every test jet, whose logits must equal the
calibrated Keras model's bit for bit (the count of equal jets is printed). The front is
printed as a table and, if matplotlib is installed, drawn to ``<output-dir>/front.png``.
A kept checkpoint, calibrated so, is what ``HGQ.rtl.convert_to_rtl`` writes as Verilog
and ``HGQ.hls4ml_hook.convert_from_hgq_model`` converts for hls4ml.

Run it with::

    KERAS_BACKEND=jax .venv/bin/python examples/jet_tagging.py \\
        [--data path/to/hls4ml_lhc_jets_hlf.arff] [--epochs 120] [--max-samples 50000]

The data are the OpenML data set ``hls4ml_lhc_jets_hlf`` (id 42468,
https://www.openml.org/d/42468), split 80/20 and standardised as in hls4ml tutorial
part 1 by ``HGQ.datasets.load_jet_tagging``. Without ``--data`` it is downloaded through
scikit-learn (and cached under ``--data-home``); a machine without internet access needs
the ARFF file (or a populated scikit-learn cache) copied over, and the script says so
and exits with status 1 when it has neither.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

# isort: off
import HGQ  # noqa: F401  (selects the Keras backend: must precede keras)
import keras

# isort: on
from HGQ import HDense, HDenseBatchNorm, HQuantize
from HGQ.bops import compute_bops
from HGQ.callbacks import (
    BetaScheduler,
    CalibratedBOPs,
    ConstantThenLogRamp,
    ParetoFront,
    ResetMinMax,
)
from HGQ.datasets import JET_CLASSES, DatasetUnavailableError, load_jet_tagging

N_FEATURES = 16
HIDDEN = (64, 32, 32)

# Defaults of the full run, shared by `run` and the command line; measured on the
# physics-real jets of bench/jets.py (bench/README.md, "jets.py"). Adam's step is the
# one that matters most: at 1e-3 the bitwidths move a thousandth of a bit per step and
# the run ends far above the cheapest models; 1e-2 gave 3 points more accuracy at
# <= 3,000 EBOPs and 1.6 at <= 7,000 (three seeds).
EPOCHS = 120
HOLD = 10
BETA0 = 1e-6
BETA1 = 3e-4
BATCH_SIZE = 1024
LEARNING_RATE = 1e-2
VALIDATION_FRACTION = 0.2
CALIBRATION_SAMPLES = 100_000
OUTPUT_DIR = os.path.join("build", "jet_tagging")


def build_model(
    beta: float = BETA0, n_classes: int = len(JET_CLASSES), batch_norm: bool = False
) -> keras.Model:
    """The HGQ jet tagger: quantized input, three Dense+ReLU layers, logits.

    ``batch_norm``: fold a batch normalisation into each hidden layer
    (``HDenseBatchNorm``; free in firmware). On the physics-real jets of bench/jets.py
    it did not help (bench/README.md), so the default is the plain MLP. The last layer
    emits logits: the argmax on the FPGA needs no softmax.
    """
    layers: list[Any] = [
        keras.Input((N_FEATURES,)),
        HQuantize(name="inp_q", bops_reg_factor=beta),
    ]
    hidden = HDenseBatchNorm if batch_norm else HDense
    layers += [hidden(n, activation="relu", bops_reg_factor=beta) for n in HIDDEN]
    layers.append(HDense(n_classes, bops_reg_factor=beta))
    return keras.Sequential(layers, name="jet_tagger")


def split_validation(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out a shuffled ``fraction`` of the training data for validation.

    ``fit(validation_split=...)`` takes the *last* samples, which is only a fair sample
    when the data are already shuffled; an explicit shuffled split does not depend on
    that. Returns ``(x_fit, y_fit, x_val, y_val)``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction!r}.")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(fraction * len(x))))
    if n_val >= len(x):
        raise ValueError(f"{len(x)} training samples are too few to hold out {fraction:.0%}.")
    val, fit = order[:n_val], order[n_val:]
    return x[fit], y[fit], x[val], y[val]


def predict_logits(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """The (calibrated) model's logits on ``x``, as float64.

    ``x`` is padded to whole batches: a short last batch would have another shape, and
    the predict step would be compiled a second time for it.
    """
    size = min(batch_size, len(x))
    padded = np.concatenate([x, x[np.arange(-len(x) % size) % len(x)]])
    return np.asarray(model.predict(padded, batch_size=size, verbose=0)[: len(x)], np.float64)


def format_front(rows: Sequence[dict[str, Any]]) -> str:
    """The front as a text table, cheapest model first."""
    header = (
        f"{'epoch':>5}  {'beta':>9}  {'val acc':>8}  {'test acc':>8}  {'EBOPs':>9}  "
        f"{'LUTs':>9}  {'bit-exact':>13}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        luts = "-" if row.get("luts") is None else f"{row['luts']:,.0f}"
        exact = "-" if row.get("exact_jets") is None else f"{row['exact_jets']}/{row['jets']}"
        lines.append(
            f"{row['epoch']:>5}  {row['beta']:>9.3g}  {row['val_accuracy']:>8.4f}  "
            f"{row['test_accuracy']:>8.4f}  {row['ebops']:>9,.0f}  {luts:>9}  {exact:>13}"
        )
    return "\n".join(lines)


def circuit_check(model: keras.Model, x: np.ndarray, logits: np.ndarray) -> dict[str, Any]:
    """alkaid's LUT estimate of the calibrated ``model`` and how many rows of ``x`` its
    circuit's bit-exact interpreter maps to exactly ``logits`` (the model's own).

    Empty when the ``rtl`` extra (alkaid) is not installed.
    """
    try:
        from HGQ.rtl import convert_to_rtl
    except ImportError:
        return {}
    with tempfile.TemporaryDirectory() as directory:
        project = convert_to_rtl(model, directory, write=False)
        luts = float(project.estimate(per_layer=False)["lut"])
        circuit = np.asarray(project.emulate(x))
    exact = int(np.sum(np.all(circuit == logits, axis=-1)))
    return {"luts": luts, "exact_jets": exact, "jets": len(x)}


def save_front_plot(rows: Sequence[dict[str, Any]], path: str) -> bool:
    """Draw validation and test accuracy against EBOPs; skip quietly without matplotlib.

    matplotlib is an optional extra of HGQ, so the example must not need it. Returns
    whether the figure was written.
    """
    try:
        from HGQ import plot
    except ImportError:
        print("matplotlib is not installed: no front plot (pip install 'hgq-keras[plot]').")
        return False
    fig = plot.front(rows, y="val_accuracy", label="validation")
    plot.front(rows, y="test_accuracy", ax=fig.axes[0], label="test", annotate=False)
    fig.axes[0].set_ylabel("accuracy")
    fig.savefig(path, dpi=150)
    return True


def _clear_old_checkpoints(directory: str) -> None:
    """Remove the checkpoints a previous run left, so the front on disk is this run's."""
    for path in glob.glob(os.path.join(directory, "epoch=*.keras")):
        os.remove(path)


def run(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    epochs: int = EPOCHS,
    *,
    beta0: float = BETA0,
    beta1: float = BETA1,
    hold: int | None = None,
    batch_size: int = BATCH_SIZE,
    learning_rate: float = LEARNING_RATE,
    validation_fraction: float = VALIDATION_FRACTION,
    calibration_samples: int | None = CALIBRATION_SAMPLES,
    output_dir: str | os.PathLike[str] = OUTPUT_DIR,
    batch_norm: bool = False,
    seed: int = 0,
    verbose: int = 2,
) -> list[dict[str, Any]]:
    """Train one β-ramped run, then reload, calibrate and test every front checkpoint.

    ``hold``: epochs at ``beta0`` before the ramp (default: ``HOLD``, or a tenth of
    ``epochs`` when that is fewer); the ramp reaches ``beta1`` at the last epoch.
    ``calibration_samples``: how many training samples calibrate the EBOPs (``None`` or
    0: all of them); the integer bits come from the ranges seen there, so too few
    samples let rare larger values wrap at inference.

    Returns the front, cheapest first: dicts with ``epoch`` (0-based, as in the
    checkpoint names), ``path``, ``beta``, ``val_accuracy``, ``val_loss``, ``ebops``
    (exact, of the reloaded and calibrated checkpoint) and ``test_accuracy``; with the
    ``rtl`` extra also ``luts`` (alkaid's estimate), ``jets`` (test jets) and
    ``exact_jets`` (those whose logits the circuit reproduces bit for bit).
    """
    keras.utils.set_random_seed(seed)
    output_dir = os.fspath(output_dir)
    front_dir = os.path.join(output_dir, "front")
    os.makedirs(front_dir, exist_ok=True)
    _clear_old_checkpoints(front_dir)

    x_fit, y_fit, x_val, y_val = split_validation(x_train, y_train, validation_fraction, seed)
    # The fit split is already shuffled, so its first samples are a random subset.
    x_calib = x_fit[:calibration_samples] if calibration_samples else x_fit

    if hold is None:
        hold = min(HOLD, epochs // 10)
    schedule = ConstantThenLogRamp(beta0, beta1, hold=hold, ramp=max(1, epochs - hold))

    model = build_model(beta0, batch_norm=batch_norm)
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    pareto = ParetoFront(
        front_dir, metrics=("val_accuracy", "val_loss", "ebops"), sides=(1, -1, -1)
    )
    history = model.fit(
        x_fit,
        y_fit,
        validation_data=(x_val, y_val),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        verbose=verbose,
        callbacks=[  # loggers before readers: Keras calls them in this order
            ResetMinMax(),
            BetaScheduler(schedule),
            CalibratedBOPs(x_calib, bsz=batch_size),
            pareto,
        ],
    )

    rows = []
    for record in pareto.front:
        loaded = keras.models.load_model(record["path"], compile=False)
        ebops = compute_bops(loaded, x_calib, bsz=batch_size, verbose=False)
        logits = predict_logits(loaded, x_test, batch_size)
        if ebops != record["ebops"]:
            warnings.warn(
                f"epoch {record['epoch']}: the reloaded checkpoint calibrates to {ebops} "
                f"EBOPs, but {record['ebops']} were recorded while training.",
                stacklevel=2,
            )
        rows.append(
            {
                "epoch": record["epoch"],
                "path": record["path"],
                "beta": float(history.history["beta"][record["epoch"]]),
                "val_accuracy": record["val_accuracy"],
                "val_loss": record["val_loss"],
                "ebops": ebops,
                "test_accuracy": float(np.mean(np.argmax(logits, axis=-1) == y_test)),
                **circuit_check(loaded, x_test, logits),
            }
        )
    rows.sort(key=lambda row: (row["ebops"], row["epoch"]))
    if rows and "luts" not in rows[0]:
        print("No LUT estimates or bit-exact checks: they need the rtl extra (alkaid).")

    print(f"\nPareto front ({len(rows)} checkpoints in {front_dir}):")
    print(format_front(rows))
    if rows:
        plot_path = os.path.join(output_dir, "front.png")
        if save_front_plot(rows, plot_path):
            print(f"front plot: {plot_path}")
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; defaults are those of the full benchmark run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--epochs", type=int, default=EPOCHS, help="training epochs (default: %(default)s)")
    add(
        "--data",
        metavar="PATH",
        help="local copy of hls4ml_lhc_jets_hlf (.arff, .arff.gz, .csv) or an .npz of "
        "jets (arrays x, y; see HGQ.datasets.load_jet_tagging); default: download it from OpenML",
    )
    add("--data-home", metavar="DIR", help="scikit-learn's download cache for the download")
    add("--beta0", type=float, default=BETA0, help="β while held (default: %(default)g)")
    add("--beta1", type=float, default=BETA1, help="β at the last epoch (default: %(default)g)")
    add(
        "--hold",
        type=int,
        help=f"epochs at beta0 first (default: {HOLD}, or a tenth of --epochs if fewer)",
    )
    add("--batch-size", type=int, default=BATCH_SIZE, help="jets per step (default: %(default)s)")
    add("--lr", type=float, default=LEARNING_RATE, help="Adam learning rate (default: %(default)g)")
    add(
        "--calibration-samples",
        type=int,
        default=CALIBRATION_SAMPLES,
        metavar="N",
        help="training jets that calibrate EBOPs and integer bits; 0: all (default: %(default)s)",
    )
    add("--max-samples", type=int, metavar="N", help="use at most N training and N test jets")
    add("--batch-norm", action="store_true", help="fold a batch norm into each hidden layer")
    add("--seed", type=int, default=0, help="weights, shuffling and split (default: %(default)s)")
    add("--output-dir", default=OUTPUT_DIR, metavar="DIR", help="(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.hold is not None and not 0 <= args.hold < args.epochs:
        parser.error("--hold must be at least 0 and less than --epochs (the ramp needs epochs)")
    if args.max_samples is not None and args.max_samples < 2:
        parser.error("--max-samples must be at least 2")
    if args.calibration_samples < 0:
        parser.error("--calibration-samples must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Load the data (or explain why it cannot be had, exit status 1), then ``run``."""
    args = parse_args(argv)
    try:
        x_train, x_test, y_train, y_test = load_jet_tagging(
            path=args.data, data_home=args.data_home
        )
    except (DatasetUnavailableError, FileNotFoundError, ValueError) as err:
        # An expected situation (offline machine, wrong path), not a bug: no traceback.
        print(f"error: {err}", file=sys.stderr)
        if isinstance(err, DatasetUnavailableError):
            print("With the file at hand, pass it here as --data PATH.", file=sys.stderr)
        raise SystemExit(1) from None
    if args.max_samples is not None:
        # load_jet_tagging's split is shuffled, so leading samples are a random subset.
        x_train, y_train = x_train[: args.max_samples], y_train[: args.max_samples]
        x_test, y_test = x_test[: args.max_samples], y_test[: args.max_samples]

    print(f"Keras backend: {keras.backend.backend()}")
    print(f"jet tagging: {len(x_train)} training / {len(x_test)} test jets, classes {JET_CLASSES}")
    run(
        x_train,
        y_train,
        x_test,
        y_test,
        args.epochs,
        beta0=args.beta0,
        beta1=args.beta1,
        hold=args.hold,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        calibration_samples=args.calibration_samples,
        output_dir=args.output_dir,
        batch_norm=args.batch_norm,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
