"""Accuracy-vs-cost fronts on jets (the hls4ml jet set or an ``.npz`` like it).

Runs, on the same split:

- **float**: the plain Keras MLP (same widths), its test accuracy at the epoch of best
  validation accuracy: the reference the quantized fronts are measured against;
- **scheduled**: the README's plain front workflow (``HQuantize`` + ``HDense``
  16-64-32-32-5, batch 1024, β held then ramped by ``ConstantThenLogRamp``,
  ``CalibratedBOPs``, ``ParetoFront`` on validation accuracy, validation loss and
  EBOPs), every kept checkpoint priced by alkaid's LUT estimate (``HGQ.rtl``);
- **fixed β** (``--betas``): one training per β, one point each.

``--arch bn`` trains the HGQ paper's 16-64-64-32-5 with batch normalisation folded into
the hidden layers (``HDenseBatchNorm``; the float reference uses Dense + BatchNormalization).

Checkpoints are chosen on validation accuracy (a fifth of the training split, so 16,000
jets of the shared 100k set) and reported with their test accuracy, at EBOPs and LUT
budgets. The data: ``HGQ.datasets.load_jet_tagging(path)``, 80/20 split, standardised.

    KERAS_BACKEND=jax .venv/bin/python bench/jets.py --data ../shared/data/jets/jets_dev.npz
        [--arch bn] [--epochs 120] [--betas 1e-6 1e-5 1e-4] [--seeds 0 1] [--json FILE]
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
from train_overhead import hgq_model as hgq_mlp  # the same 16-64-32-32-5 MLPs
from train_overhead import plain_model as float_mlp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
from jet_tagging import split_validation  # noqa: E402

from HGQ import (  # noqa: E402
    HDense,
    HDenseBatchNorm,
    HQuantize,
    set_default_kernel_quantizer_config,
    set_default_pre_activation_quantizer_config,
)
from HGQ.bops import compute_bops  # noqa: E402
from HGQ.callbacks import (  # noqa: E402
    BetaScheduler,
    CalibratedBOPs,
    ConstantThenLogRamp,
    ParetoFront,
    ResetMinMax,
)
from HGQ.datasets import load_jet_tagging  # noqa: E402

LUT_BUDGETS = (1_000, 2_000, 3_000, 5_000, 7_000, 10_000, 15_000)
BN_WIDTHS = (64, 64, 32, 5)  # the HGQ paper's jet tagger, batch norm after each hidden layer


def hgq_model(arch: str, beta: float) -> keras.Model:
    """``mlp``: 16-64-32-32-5; ``bn``: 16-64-64-32-5, batch norm folded into the hidden layers."""
    if arch == "mlp":
        return hgq_mlp(beta)
    layers = [keras.Input((16,)), HQuantize(name="inp_q", bops_reg_factor=beta)]
    for width in BN_WIDTHS[:-1]:
        layers.append(HDenseBatchNorm(width, activation="relu", bops_reg_factor=beta))
    layers.append(HDense(BN_WIDTHS[-1], bops_reg_factor=beta))
    return keras.Sequential(layers)


def float_model(arch: str) -> keras.Model:
    if arch == "mlp":
        return float_mlp()
    layers: list = [keras.Input((16,))]
    for width in BN_WIDTHS[:-1]:
        layers += [keras.layers.Dense(width), keras.layers.BatchNormalization()]
        layers.append(keras.layers.ReLU())
    layers.append(keras.layers.Dense(BN_WIDTHS[-1]))
    return keras.Sequential(layers)


VALIDATION_FRACTION = 0.2
CALIBRATION_SAMPLES = 20_000


def compile_model(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    logits = model.predict(x, batch_size=4096, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def lut_estimate(model: keras.Model) -> float:
    """alkaid's LUT estimate of the calibrated ``model`` (no synthesis)."""
    from HGQ.rtl import convert_to_rtl

    with tempfile.TemporaryDirectory() as directory:
        return float(convert_to_rtl(model, directory, write=False).estimate(per_layer=False)["lut"])


def float_reference(data, args, seed: int) -> dict:
    x_fit, y_fit, x_val, y_val, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    model = float_model(args.arch)
    compile_model(model, args.lr)
    best = keras.callbacks.ModelCheckpoint(
        os.path.join(args.workdir, f"float_{seed}.weights.h5"),
        monitor="val_accuracy",
        mode="max",
        save_best_only=True,
        save_weights_only=True,
    )
    start = time.perf_counter()
    model.fit(
        x_fit,
        y_fit,
        validation_data=(x_val, y_val),
        epochs=args.epochs,
        batch_size=args.batch,
        verbose=0,
        callbacks=[best],
    )
    seconds = time.perf_counter() - start
    model.load_weights(best.filepath)
    return {
        "seed": seed,
        "val_accuracy": accuracy(model, x_val, y_val),
        "test_accuracy": accuracy(model, x_test, y_test),
        "seconds": seconds,
    }


def scheduled_front(data, args, seed: int) -> dict:
    x_fit, y_fit, x_val, y_val, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    x_calib = x_fit[:CALIBRATION_SAMPLES]
    schedule = ConstantThenLogRamp(
        args.beta0, args.beta1, hold=args.hold, ramp=max(1, args.epochs - args.hold)
    )
    model = hgq_model(args.arch, args.beta0)
    compile_model(model, args.lr)
    directory = os.path.join(args.workdir, f"front_{seed}")
    os.makedirs(directory, exist_ok=True)
    front = ParetoFront(directory, metrics=("val_accuracy", "val_loss", "ebops"), sides=(1, -1, -1))
    start = time.perf_counter()
    history = model.fit(
        x_fit,
        y_fit,
        validation_data=(x_val, y_val),
        epochs=args.epochs,
        batch_size=args.batch,
        verbose=0,
        callbacks=[ResetMinMax(), BetaScheduler(schedule), CalibratedBOPs(x_calib), front],
    )
    seconds = time.perf_counter() - start
    rows = []
    for record in front.front:
        kept = keras.models.load_model(record["path"], compile=False)
        ebops = compute_bops(kept, x_calib, bsz=4096, verbose=False)
        rows.append(
            {
                "epoch": record["epoch"],
                "beta": float(history.history["beta"][record["epoch"]]),
                "val_accuracy": record["val_accuracy"],
                "val_loss": record["val_loss"],
                "ebops": ebops,
                "test_accuracy": accuracy(kept, x_test, y_test),
                "lut_estimate": lut_estimate(kept) if args.luts else None,
            }
        )
        os.remove(record["path"])
    rows.sort(key=lambda r: r["ebops"])
    return {"seed": seed, "rows": rows, "seconds": seconds}


def fixed_beta_point(data, args, beta: float, seed: int) -> dict:
    x_fit, y_fit, x_val, y_val, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    model = hgq_model(args.arch, beta)
    compile_model(model, args.lr)
    model.fit(
        x_fit,
        y_fit,
        epochs=args.epochs,
        batch_size=args.batch,
        verbose=0,
        callbacks=[ResetMinMax()],
    )
    ebops = compute_bops(model, x_fit[:CALIBRATION_SAMPLES], bsz=4096, verbose=False)
    return {
        "seed": seed,
        "beta": beta,
        "ebops": ebops,
        "val_accuracy": accuracy(model, x_val, y_val),
        "test_accuracy": accuracy(model, x_test, y_test),
        "lut_estimate": lut_estimate(model) if args.luts else None,
    }


def best_under(rows: list[dict], budget: float, cost: str) -> dict | None:
    """The row of best validation accuracy (ties: lower validation loss) within budget."""
    fitting = [r for r in rows if r[cost] is not None and r[cost] <= budget]
    return max(fitting, key=lambda r: (r["val_accuracy"], -r.get("val_loss", 0.0)), default=None)


def report(result: dict) -> None:
    floats = result["float"]
    float_test = float(np.mean([f["test_accuracy"] for f in floats]))
    print(f"\nfloat MLP test accuracy (best-validation epoch): {float_test:.4f}")
    for run in result["scheduled"]:
        rows = run["rows"]
        print(f"\nscheduled, seed {run['seed']}: {len(rows)} checkpoints, {run['seconds']:.0f} s")
        print(
            f"{'budget':>8}  {'cost':>12}  {'epoch':>5}  {'val acc':>8}  {'test acc':>8}  "
            f"{'vs float':>8}"
        )
        for cost in ("lut_estimate", "ebops"):
            for budget in LUT_BUDGETS:
                row = best_under(rows, budget, cost)
                if row is None:
                    print(f"{budget:>8,}  {cost:>12}  {'-':>5}")
                    continue
                print(
                    f"{budget:>8,}  {cost:>12}  {row['epoch']:>5}  {row['val_accuracy']:>8.4f}  "
                    f"{row['test_accuracy']:>8.4f}  {row['test_accuracy'] - float_test:>+8.4f}"
                )
    for point in result["fixed"]:
        lut = point["lut_estimate"]
        print(
            f"fixed β {point['beta']:g} seed {point['seed']}: {point['ebops']:,.0f} EBOPs, "
            f"{lut if lut is None else f'{lut:,.0f}'} LUTs, test {point['test_accuracy']:.4f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="hls4ml jet file or an .npz of jets")
    parser.add_argument("--arch", choices=["mlp", "bn"], default="mlp")
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--beta0", type=float, default=1e-6)
    parser.add_argument("--beta1", type=float, default=3e-4)
    parser.add_argument("--hold", type=int, default=10)
    parser.add_argument("--betas", type=float, nargs="*", default=[])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--no-float", action="store_true")
    parser.add_argument("--no-luts", dest="luts", action="store_false")
    parser.add_argument("--kernel-config", default="{}", help="JSON: default kernel quantizer")
    parser.add_argument(
        "--activation-config", default="{}", help="JSON: default pre-activation quantizer"
    )
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--workdir", default=None)
    parser.add_argument(
        "--export-split", metavar="FILE", help="write the first seed's split (.npz) and stop"
    )
    args = parser.parse_args()
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="hgq_jets_")

    set_default_kernel_quantizer_config(json.loads(args.kernel_config))
    set_default_pre_activation_quantizer_config(json.loads(args.activation_config))
    x_train, x_test, y_train, y_test = load_jet_tagging(path=args.data)
    if args.export_split:
        x_fit, y_fit, x_val, y_val = split_validation(
            x_train, y_train, VALIDATION_FRACTION, args.seeds[0]
        )
        np.savez(
            args.export_split,
            x_fit=x_fit,
            y_fit=y_fit,
            x_val=x_val,
            y_val=y_val,
            x_test=x_test,
            y_test=y_test,
        )
        return
    result: dict = {"args": dict(vars(args)), "float": [], "scheduled": [], "fixed": []}
    for seed in args.seeds:
        data = (*split_validation(x_train, y_train, VALIDATION_FRACTION, seed), x_test, y_test)
        if not args.no_float:
            result["float"].append(float_reference(data, args, seed))
            print("float", result["float"][-1], flush=True)
        result["scheduled"].append(scheduled_front(data, args, seed))
        for beta in args.betas:
            result["fixed"].append(fixed_beta_point(data, args, beta, seed))
            print("fixed", result["fixed"][-1], flush=True)
    if not result["float"]:
        result["float"] = [{"test_accuracy": float("nan")}]
    report(result)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
