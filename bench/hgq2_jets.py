"""HGQ2's front on the same jets split as ``bench/jets.py`` (run in HGQ2's own venv).

HGQ2 (``pip install hgq2==0.2.0 alkaid==0.8.2``, in a virtual environment outside this
repository: it is never a dependency of HGQ) trains the same 16-64-32-32-5 MLP with its
recommended configuration (weights ``kbi`` with ``SAT_SYM``, data lanes ``kif`` with
``WRAP``, both rounding to nearest; its getting-started guide), the same β schedule as
ours (``PieceWiseSchedule``: held, then log-ramped), Adam and batch size, and its
``ParetoFront`` on validation accuracy, validation loss and EBOPs. Each kept checkpoint
is calibrated with ``trace_minmax`` on the same calibration jets (HGQ2's EBOPs) and
traced to a circuit by alkaid through HGQ2's own tracer plugin, with the options
``HGQ.rtl`` uses (adder-tree depth 2, no ternary fusion, no one-bit LUT packing), whose
LUT estimate is the common currency of the comparison.

The split comes from ``bench/jets.py --export-split FILE`` (our environment), so both
libraries see the same jets:

    /path/to/hgq2-venv/bin/python bench/hgq2_jets.py --split FILE [--json OUT]
        [--arch bn] [--betas 1e-6 1e-5 1e-4]

``--arch bn`` trains the HGQ paper's 16-64-64-32-5 with batch normalisation folded into
the hidden layers (``QBatchNormDense``) instead; ``--betas`` adds one fixed-β training
per value (its last epoch is the point). ``--time FILE`` only trains HGQ2's MLP on the
``x``, ``y`` arrays of FILE and prints its epoch seconds as JSON (for
``bench/train_overhead.py --hgq2-python``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from alkaid.trace import HWConfig, trace  # noqa: E402
from hgq.config import LayerConfigScope, QuantizerConfigScope  # noqa: E402
from hgq.layers import QBatchNormDense, QDense  # noqa: E402
from hgq.utils import trace_minmax  # noqa: E402
from hgq.utils.sugar import BetaScheduler, FreeEBOPs, ParetoFront, PieceWiseSchedule  # noqa: E402

WIDTHS = {"mlp": (64, 32, 32, 5), "bn": (64, 64, 32, 5)}
CALIBRATION_SAMPLES = 20_000


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def hgq2_mlp(beta: float, arch: str = "mlp") -> keras.Model:
    with QuantizerConfigScope(
        q_type="kbi", place="weight", overflow_mode="SAT_SYM", round_mode="RND"
    ):
        with QuantizerConfigScope(
            q_type="kif", place="datalane", overflow_mode="WRAP", round_mode="RND"
        ):
            with LayerConfigScope(enable_ebops=True, beta0=beta):
                layers = [keras.Input((16,))]
                widths = WIDTHS[arch]
                for i, width in enumerate(widths):
                    hidden = i < len(widths) - 1
                    relu = "relu" if hidden else None
                    kind = QBatchNormDense if hidden and arch == "bn" else QDense
                    layers.append(kind(width, activation=relu))
                return keras.Sequential(layers)


def lut_estimate(model: keras.Model) -> float | None:
    """alkaid's LUT estimate of HGQ2's model; None (with the reason printed) if tracing fails.

    alkaid 0.8.2 raised ``StopIteration`` inside its constant-matrix product on some of
    HGQ2's batch-normalised models (a sum over an empty list of variables).
    """
    from alkaid.converter import trace_model

    try:
        inputs, outputs = trace_model(
            model, HWConfig(1, 1, -1), {"hard_dc": 2, "binary_lut": False}
        )
        comb = trace(np.asarray(inputs).ravel().tolist(), np.asarray(outputs).ravel().tolist())
    except Exception as err:  # noqa: BLE001  (report and go on with the other checkpoints)
        print(f"alkaid could not trace this model: {type(err).__name__}: {err}", flush=True)
        return None
    return float(comb.cost)


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=4096, verbose=0), -1) == y))


def compile_model(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def time_epochs(args) -> None:
    d = np.load(args.time)
    keras.utils.set_random_seed(args.seed)
    model = hgq2_mlp(args.beta0, args.arch)
    compile_model(model, args.lr)
    timer = EpochTimer()
    model.fit(
        d["x"], d["y"], epochs=args.epochs, batch_size=args.batch, verbose=0, callbacks=[timer]
    )
    print(json.dumps(timer.times))


def fixed_beta_point(args, data, beta: float) -> dict:
    x_fit, y_fit, x_val, y_val, x_test, y_test = data
    keras.utils.set_random_seed(args.seed)
    model = hgq2_mlp(beta, args.arch)
    compile_model(model, args.lr)
    model.fit(x_fit, y_fit, epochs=args.epochs, batch_size=args.batch, verbose=0)
    ebops = trace_minmax(model, x_fit[:CALIBRATION_SAMPLES], batch_size=4096)
    return {
        "seed": args.seed,
        "beta": beta,
        "ebops": float(ebops),
        "val_accuracy": accuracy(model, x_val, y_val),
        "test_accuracy": accuracy(model, x_test, y_test),
        "lut_estimate": lut_estimate(model),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split")
    parser.add_argument("--time", help="only time training on this .npz (x, y)")
    parser.add_argument("--arch", choices=sorted(WIDTHS), default="mlp")
    parser.add_argument("--betas", type=float, nargs="*", default=[])
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--beta0", type=float, default=1e-6)
    parser.add_argument("--beta1", type=float, default=3e-4)
    parser.add_argument("--hold", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.time:
        time_epochs(args)
        return
    if not args.split:
        parser.error("--split FILE is required (from bench/jets.py --export-split)")

    d = np.load(args.split)
    data = tuple(d[k] for k in ("x_fit", "y_fit", "x_val", "y_val", "x_test", "y_test"))
    x_fit, y_fit, x_val, y_val, x_test, y_test = data
    x_calib = x_fit[:CALIBRATION_SAMPLES]
    keras.utils.set_random_seed(args.seed)
    model = hgq2_mlp(args.beta0, args.arch)
    compile_model(model, args.lr)
    schedule = PieceWiseSchedule(
        [
            (0, args.beta0, "constant"),
            (args.hold, args.beta0, "log"),
            (args.epochs, args.beta1, "constant"),
        ]
    )
    directory = tempfile.mkdtemp(prefix="hgq2_jets_")
    front = ParetoFront(directory, ["val_accuracy", "val_loss", "ebops"], [1, -1, -1])
    start = time.perf_counter()
    history = model.fit(
        x_fit,
        y_fit,
        validation_data=(x_val, y_val),
        epochs=args.epochs,
        batch_size=args.batch,
        verbose=0,
        callbacks=[FreeEBOPs(), BetaScheduler(schedule), front],
    )
    seconds = time.perf_counter() - start
    rows = []
    for path in sorted(os.listdir(directory)):
        epoch = int(path.split("_")[0].split("=")[1])
        kept = keras.models.load_model(os.path.join(directory, path), compile=False)
        ebops = trace_minmax(kept, x_calib, batch_size=4096)
        rows.append(
            {
                "epoch": epoch,
                "beta": float(history.history["beta"][epoch]),
                "val_accuracy": float(history.history["val_accuracy"][epoch]),
                "val_loss": float(history.history["val_loss"][epoch]),
                "ebops": float(ebops),
                "test_accuracy": accuracy(kept, x_test, y_test),
                "lut_estimate": lut_estimate(kept),
            }
        )
    rows.sort(key=lambda r: r["ebops"])
    for r in rows:
        print(r, flush=True)
    print(f"{len(rows)} checkpoints, training {seconds:.0f} s")
    fixed = []
    for beta in args.betas:
        fixed.append(fixed_beta_point(args, data, beta))
        print("fixed", fixed[-1], flush=True)
    if args.json:
        result = {"library": "hgq2 0.2.0", "args": vars(args), "rows": rows, "seconds": seconds}
        with open(args.json, "w") as handle:
            json.dump({**result, "fixed": fixed}, handle, indent=1)


if __name__ == "__main__":
    main()
