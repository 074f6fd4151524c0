"""EBOPs against LUTs from open synthesis: how well the training's cost predicts hardware.

For each model family (``bench/families.py``: MLP, 2D CNN with max pool, 1D CNN with
average pool, Deep Sets, MLP-Mixer block, softmax head, attention block, gated
HMultiply; default layer settings) and each β: train with that fixed β on the family's
teacher task, calibrate (exact EBOPs), convert with ``HGQ.rtl.convert_to_rtl`` (alkaid,
combinational), check alkaid's interpreter of the circuit against Keras on the test
set and far outside the calibrated range, then synthesise with yosys (UltraScale+
LUT6 mapping, ``-nodsp``: products of two variables in LUTs too, as EBOPs price
them). Printed per point: EBOPs (and the products-only part, the original
HGQ's EBOPs), yosys LUTs, alkaid's LUT estimate, both ratios; then the ratio ranges
and the Pearson correlation of LUTs with EBOPs on logs over all points. A scatter
plot goes to ``<out>/resources.png``, the rows to ``<out>/resources.json``.

    KERAS_BACKEND=jax .venv/bin/python bench/resources.py [--models mlp cnn2d ...]
        [--betas 1e-6 1e-5 1e-4] [--epochs 30] [--no-yosys] [--out build/resources]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

# isort: off
import HGQ  # noqa: F401  (selects the Keras backend: must precede keras)

# isort: on
import numpy as np
from families import FAMILIES, train_family

from HGQ.bops import compute_bops
from HGQ.rtl import convert_to_rtl


def measure(family: str, beta: float, epochs: int, workdir: str, yosys: bool) -> dict:
    model, (x_train, x_test, _, y_test), trained = train_family(family, beta, epochs)
    ebops = compute_bops(model, x_train, bsz=1024, verbose=False)
    start = time.perf_counter()
    project = convert_to_rtl(model, os.path.join(workdir, f"{family}_{beta:g}"), write=yosys)
    converted = time.perf_counter() - start
    rng = np.random.default_rng(0)
    far = (x_test * 8 + rng.normal(scale=4, size=x_test.shape)).astype("float32")
    probe = np.concatenate([x_test, far])
    expected = model.predict(probe, verbose=0, batch_size=4096)
    got = np.asarray(project.emulate(probe)).reshape(expected.shape)
    estimate = project.estimate(per_layer=False)
    row = {
        "model": family,
        "beta": beta,
        "accuracy": float(np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test)),
        "ebops": float(ebops),
        "products": ebops.products,
        "by_kind": ebops.by_kind(),
        "lut_estimate": estimate["lut"],
        "delay_estimate": estimate["delay"],
        "exact": f"{int(np.sum(got == expected))}/{expected.size}",
        "seconds": {"train": round(trained, 1), "convert": round(converted, 1)},
    }
    if yosys:
        start = time.perf_counter()
        resources = project.resources(dsp=False)
        row["seconds"]["yosys"] = round(time.perf_counter() - start, 1)
        row["lut"] = resources["lut"]
        row["carry"] = resources["carry"]
    return row


def ratio(numerator: float | None, ebops: float) -> str:
    """``numerator / ebops`` for the table, '-' where either is missing or 0."""
    return f"{numerator / ebops:.2f}" if numerator is not None and ebops > 0 else "-"


def summary(rows: list[dict]) -> str:
    collapsed = [f"{r['model']} at β {r['beta']:g}" for r in rows if r["ebops"] <= 0]
    rows = [r for r in rows if r["ebops"] > 0]
    ebops = np.array([r["ebops"] for r in rows])
    lines = []
    if collapsed:
        lines.append(f"left out (0 EBOPs, the model collapsed): {', '.join(collapsed)}")
    for key, label in (("lut", "yosys LUT"), ("lut_estimate", "alkaid estimate")):
        if not all(key in r for r in rows):
            continue
        lut = np.array([r[key] for r in rows], dtype=np.float64)
        ratio = lut / ebops
        r_log = np.corrcoef(np.log(ebops), np.log(lut))[0, 1]
        lines.append(
            f"{label} / EBOPs: {ratio.min():.2f} to {ratio.max():.2f} (median "
            f"{np.median(ratio):.2f}); Pearson r on logs {r_log:.4f}"
        )
    if all("lut" in r for r in rows):
        lut = np.array([r["lut"] for r in rows], dtype=np.float64)
        estimate = np.array([r["lut_estimate"] for r in rows])
        lines.append(
            f"yosys LUT / alkaid estimate: {np.min(lut / estimate):.2f} to "
            f"{np.max(lut / estimate):.2f}"
        )
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
        if all("lut" in r for r in mine):
            axis.scatter(
                [r["ebops"] for r in mine], [r["lut"] for r in mine], label=f"{name} (yosys)"
            )
        axis.scatter(
            [r["ebops"] for r in mine],
            [r["lut_estimate"] for r in mine],
            marker="x",
            label=f"{name} (alkaid estimate)",
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
    parser.add_argument("--models", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--betas", nargs="+", type=float, default=[1e-6, 1e-5, 1e-4])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--no-yosys", action="store_true", help="alkaid's estimate only")
    parser.add_argument("--out", default="build/resources")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    yosys = not args.no_yosys
    rows = []
    print(
        f"{'model':<13} {'beta':>7} {'acc':>6} {'EBOPs':>8} {'products':>8} {'LUT':>7} "
        f"{'alkaid':>7} {'LUT/EBOPs':>9} {'est/EBOPs':>9}  exact"
    )
    with tempfile.TemporaryDirectory(prefix="hgq_resources_") as workdir:
        for family in args.models:
            for beta in args.betas:
                row = measure(family, beta, args.epochs, workdir, yosys)
                rows.append(row)
                lut = row.get("lut")
                print(
                    f"{family:<13} {beta:>7.0e} {row['accuracy']:>6.3f} {row['ebops']:>8,.0f} "
                    f"{row['products']:>8,.0f} {lut if lut is not None else '-':>7} "
                    f"{row['lut_estimate']:>7,.0f} "
                    f"{ratio(lut, row['ebops']):>9} "
                    f"{ratio(row['lut_estimate'], row['ebops']):>9}  {row['exact']}  "
                    f"{row['seconds']}",
                    flush=True,
                )
    print(summary(rows))
    with open(os.path.join(args.out, "resources.json"), "w") as stream:
        json.dump(rows, stream, indent=1)
    plot(rows, os.path.join(args.out, "resources.png"))


if __name__ == "__main__":
    main()
