"""Accuracy-vs-EBOPs fronts on scikit-learn's digits, beside the other libraries' figures.

Two ways to get a front, for the digits MLP (64-32-16-10, the demo's) and CNN
(``examples/digits_cnn.py``), and for the Deep Sets tagger of
``examples/particle_taggers.py`` on toy jets (``HGQ.particle_data``, 6,000 jets):

- **fixed β**: one training per β, calibrated on the training split, one point each;
- **scheduled**: one run whose β is held then ramped (``ConstantThenLogRamp``), with
  ``CalibratedBOPs`` and ``ParetoFront``; checkpoints are chosen on a validation split
  (20% of the training split) and reported with their test accuracy.

Data as in the issue that set the targets: ``load_digits``, x/16,
``train_test_split(test_size=0.25, random_state=0, stratify=y)``, Adam(3e-3), batch 64.

Every kept checkpoint of the scheduled run carries alkaid's LUT estimate (``HGQ.rtl``,
no synthesis); ``--luts`` adds it to the fixed-β points, ``--yosys`` synthesises them
too. EBOPs steer training; the LUTs are what the firmware costs.

    KERAS_BACKEND=jax .venv/bin/python bench/front.py --model mlp [--fixed-epochs 100]
        [--betas 1e-5 1e-4 3e-4] [--scheduled-epochs 300] [--kernel-init fixed magnitude]
        [--luts [--yosys]] [--json FILE]
    .venv/bin/python bench/front.py --compare before.json after.json   # at LUT budgets
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
from sklearn.model_selection import train_test_split

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

from digits_cnn import hgq_cnn  # noqa: E402
from digits_common import accuracy, front_rows, load_data  # noqa: E402
from digits_mlp import hgq_mlp  # noqa: E402
from particle_taggers import deep_sets  # noqa: E402

from HGQ import (  # noqa: E402
    get_default_kernel_quantizer_config,
    set_default_kernel_quantizer_config,
)
from HGQ.bops import compute_bops  # noqa: E402
from HGQ.callbacks import (  # noqa: E402
    BetaScheduler,
    CalibratedBOPs,
    ConstantThenLogRamp,
    ParetoFront,
    ResetMinMax,
)
from HGQ.particle_data import toy_particle_jets  # noqa: E402

BUDGETS = (2_000, 5_000, 10_000, 20_000)
TOY_JETS, TOY_PARTICLES = 6000, 16
FRONT_METRICS = ("val_accuracy", "val_loss", "ebops")

#: Measured on this machine with the same data and training settings (from the issue
#: that set the targets): (library, run, [(EBOPs, test accuracy), ...]).
ANCHORS = (
    ("HGQ 0.2.6", "fixed β, 200 epochs", [(1_790, 0.906), (7_877, 0.969)]),
    ("HGQ2 0.2.0", "fixed β, 200 epochs", [(2_094, 0.870), (14_230, 0.964)]),
)
#: HGQ2's one-run recipe (300 epochs, best checkpoint picked on the test set): best
#: test accuracy at or under each budget.
HGQ2_ONE_RUN = {4_000: 0.898, 6_000: 0.934, 10_000: 0.959, 20_000: 0.971}


def build(model_name: str, beta: float, kernel_init: str) -> keras.Model:
    """The example's model, its kernels starting as ``kernel_init`` says (``init_mode``)."""
    before = get_default_kernel_quantizer_config()["init_mode"]
    set_default_kernel_quantizer_config({"init_mode": kernel_init})
    try:
        if model_name == "deep_sets":
            model = deep_sets(TOY_PARTICLES, 3, 3, beta)
        else:
            model = hgq_mlp(beta) if model_name == "mlp" else hgq_cnn(beta)
    finally:
        set_default_kernel_quantizer_config({"init_mode": before})
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def firmware_luts(model: keras.Model, yosys: bool = False) -> dict:
    """alkaid's LUT estimate of the calibrated ``model`` (and yosys's count if asked)."""
    from HGQ.rtl import convert_to_rtl

    with tempfile.TemporaryDirectory() as directory:
        project = convert_to_rtl(model, directory, write=yosys)
        luts = {"lut_estimate": project.estimate(per_layer=False)["lut"]}
        if yosys:
            luts["lut"] = project.resources()["lut"]
    return luts


def fixed_beta_point(model_name, beta, epochs, kernel_init, data, seed, luts=0) -> dict:
    """One model trained at ``beta``; ``luts``: 0 none, 1 alkaid estimate, 2 also yosys."""
    x_train, x_test, y_train, y_test = data
    keras.utils.set_random_seed(seed)
    model = build(model_name, beta, kernel_init)
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0, callbacks=[ResetMinMax()])
    seconds = time.perf_counter() - start
    ebops = compute_bops(model, x_train, bsz=1024, verbose=False)
    point = {
        "beta": beta,
        "ebops": ebops,
        "test_accuracy": accuracy(model, x_test, y_test),
        "seconds": seconds,
    }
    if luts:
        point.update(firmware_luts(model, yosys=luts > 1))
    return point


def scheduled_front(model_name, schedule, epochs, kernel_init, data, seed, directory) -> list:
    """One run with β from ``schedule``; the kept checkpoints with their test accuracy."""
    x_train, x_test, y_train, y_test = data
    x_fit, x_val, y_fit, y_val = train_test_split(
        x_train, y_train, test_size=0.2, random_state=1, stratify=y_train
    )
    keras.utils.set_random_seed(seed)
    model = build(model_name, schedule(0), kernel_init)
    # Validation accuracy moves in steps of 1/270 here, so a cheap late epoch that
    # ties the best accuracy by chance would remove every earlier, dearer checkpoint;
    # the validation loss breaks such ties (a third metric to be beaten on).
    front = ParetoFront(directory, metrics=FRONT_METRICS, sides=(1, -1, -1))
    model.fit(
        x_fit,
        y_fit,
        epochs=epochs,
        batch_size=64,
        validation_data=(x_val, y_val),
        verbose=0,
        callbacks=[ResetMinMax(), BetaScheduler(schedule), CalibratedBOPs(x_fit), front],
    )
    # front_rows reloads each checkpoint, recalibrates it (raising unless it gives the
    # recorded EBOPs, the callback's promise) and tests it.
    rows = front_rows(front, x_fit, x_test, y_test)  # with alkaid's LUT estimate
    return [{key: value for key, value in row.items() if key != "model"} for row in rows]


def load_model_data(model_name: str):
    """``x_train, x_test, y_train, y_test`` for the model: digits, or toy jets."""
    if model_name != "deep_sets":
        return load_data(sample_shape=(64,) if model_name == "mlp" else (8, 8, 1))
    x, y = toy_particle_jets(TOY_JETS, particles=TOY_PARTICLES)
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


def lut_header(luts: int) -> str:
    return (f" {'est. LUT':>9}" if luts else "") + (f" {'yosys LUT':>9}" if luts > 1 else "")


def lut_cells(row: dict) -> str:
    cells = f" {row['lut_estimate']:>9,.0f}" if "lut_estimate" in row else ""
    return cells + (f" {row['lut']:>9,}" if "lut" in row else "")


def best_under(rows: list[dict], budget: float, chosen_by: str, cost: str = "ebops") -> dict | None:
    """The row with the best ``chosen_by`` whose ``cost`` is at or under ``budget``
    (ties: lower val loss, where recorded)."""
    fitting = [r for r in rows if r[cost] <= budget]
    return max(fitting, key=lambda r: (r[chosen_by], -r.get("val_loss", 0.0))) if fitting else None


def compare_in_luts(paths: list[str]) -> None:
    """Accuracy at LUT budgets (alkaid's estimate) of runs saved with ``--json --luts``:
    per file and budget, the test accuracy of the best fixed-β point, of the scheduled
    checkpoint chosen on validation accuracy, and the best test accuracy among the
    scheduled checkpoints."""
    results = []
    for path in paths:
        with open(path) as handle:
            results.append(json.load(handle))
    luts = [
        r["lut_estimate"]
        for result in results
        for run in result["runs"]
        for r in ([run] if run["kind"] == "fixed" else run["front"])
    ]
    budgets = sorted({100 * np.ceil(b / 100) for b in np.geomspace(min(luts), max(luts), 8)})
    print(f"{'est. LUTs':>10}" + "".join(f" {os.path.basename(p):>32}" for p in paths))
    print(f"{'':>10}" + f" {'fixed / sched. val / sched. best':>32}" * len(paths))
    for budget in budgets:
        cells = []
        for result in results:
            fixed = [run for run in result["runs"] if run["kind"] == "fixed"]
            front = [
                r for run in result["runs"] if run["kind"] == "scheduled" for r in run["front"]
            ]
            best_fixed = best_under(fixed, budget, "test_accuracy", "lut_estimate")
            chosen = best_under(front, budget, "val_accuracy", "lut_estimate")
            best = best_under(front, budget, "test_accuracy", "lut_estimate")
            cells.append(
                " / ".join(
                    f"{row['test_accuracy']:.4f}" if row else "-"
                    for row in (best_fixed, chosen, best)
                )
            )
        print(f"{budget:>10,.0f}" + "".join(f" {cell:>32}" for cell in cells))


def print_anchors() -> None:
    print("\nAnchors (same data and settings, from the issue):")
    for library, run, points in ANCHORS:
        listed = ", ".join(f"{e:,} EBOPs at {a:.3f}" for e, a in points)
        print(f"  {library:<11} {run:<22} {listed}")
    listed = ", ".join(f"<={b:,}: {a:.3f}" for b, a in HGQ2_ONE_RUN.items())
    print(f"  {'HGQ2 0.2.0':<11} {'one run, 300 epochs':<22} {listed} (picked on test)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mlp", "cnn", "deep_sets"), default="mlp")
    parser.add_argument("--betas", type=float, nargs="*", default=[1e-6, 1e-5, 1e-4, 3e-4])
    parser.add_argument("--fixed-epochs", type=int, default=100)
    parser.add_argument("--scheduled-epochs", type=int, default=300)
    parser.add_argument("--beta0", type=float, default=1e-6)
    parser.add_argument("--beta1", type=float, default=1e-3)
    parser.add_argument("--hold", type=int, default=20)
    parser.add_argument("--kernel-init", nargs="+", default=["fixed"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--luts", action="store_true", help="add alkaid's LUT estimate")
    parser.add_argument("--yosys", action="store_true", help="and yosys LUTs (fixed β)")
    parser.add_argument("--json", help="write all results to this file")
    parser.add_argument(
        "--compare", nargs="+", metavar="JSON", help="print accuracy at LUT budgets of saved runs"
    )
    args = parser.parse_args()
    if args.compare:
        compare_in_luts(args.compare)
        return
    luts = 2 if args.yosys else int(args.luts)

    data = load_model_data(args.model)
    results = {"model": args.model, "backend": keras.backend.backend(), "runs": []}
    print(f"{args.model}, Keras backend {keras.backend.backend()}")
    for kernel_init in args.kernel_init:
        if args.betas and args.fixed_epochs:
            print(f"\n== fixed β, {args.fixed_epochs} epochs, kernel init '{kernel_init}'")
            print(f"{'β':>8} {'EBOPs':>9} {'test acc':>9} {'train s':>8}{lut_header(luts)}")
            for beta in args.betas:
                point = fixed_beta_point(
                    args.model, beta, args.fixed_epochs, kernel_init, data, args.seed, luts
                )
                print(
                    f"{beta:>8.0e} {point['ebops']:>9,.0f} {point['test_accuracy']:>9.4f} "
                    f"{point['seconds']:>8.1f}{lut_cells(point)}",
                    flush=True,
                )
                results["runs"].append(dict(point, kind="fixed", kernel_init=kernel_init))
        if args.scheduled_epochs:
            ramp = args.scheduled_epochs - args.hold
            schedule = ConstantThenLogRamp(args.beta0, args.beta1, args.hold, ramp)
            print(
                f"\n== one scheduled run, {args.scheduled_epochs} epochs: β {args.beta0:g} for "
                f"{args.hold}, then to {args.beta1:g}; kernel init '{kernel_init}'"
            )
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as directory:
                rows = scheduled_front(
                    args.model,
                    schedule,
                    args.scheduled_epochs,
                    kernel_init,
                    data,
                    args.seed,
                    directory,
                )
            seconds = time.perf_counter() - start
            print(f"{len(rows)} checkpoints kept, {seconds:.0f} s")
            print(
                f"{'epoch':>6} {'EBOPs':>9} {'val acc':>8} {'test acc':>9}"
                f"{lut_header(int(all('lut_estimate' in row for row in rows)))}"
            )
            for row in rows:
                print(
                    f"{row['epoch']:>6} {row['ebops']:>9,.0f} {row['val_accuracy']:>8.4f} "
                    f"{row['test_accuracy']:>9.4f}{lut_cells(row)}"
                )
            print(f"{'budget':>8} {'chosen on validation':>22} {'best on test':>14}")
            for budget in BUDGETS:
                on_val = best_under(rows, budget, "val_accuracy")
                on_test = best_under(rows, budget, "test_accuracy")
                if on_val is None:
                    print(f"{budget:>8,} {'-':>22} {'-':>14}")
                    continue
                print(
                    f"{budget:>8,} {on_val['test_accuracy']:>11.4f} ({on_val['ebops']:>7,.0f}) "
                    f"{on_test['test_accuracy']:>14.4f}"
                )
            results["runs"].append(
                dict(kind="scheduled", kernel_init=kernel_init, seconds=seconds, front=rows)
            )
    if args.model == "mlp":  # the anchors were measured on the MLP
        print_anchors()
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
