"""Draw the jets fronts of ``jets.py`` and ``hgq2_jets.py`` (their ``--json`` files).

For each scheduled run: the test accuracy of the checkpoint chosen on validation within
each LUT budget (a staircase over the budget), and each fixed-β point, against alkaid's
LUT estimate (the common currency: the two libraries count EBOPs differently). The
float reference and issue 24's targets are drawn as horizontal lines.

    .venv/bin/python bench/plot_jets.py --ours ours.json [--hgq2 hgq2.json ...]
        [--out bench/jets_front.png]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from jets import best_under

STYLES = {"ours": ("tab:blue", "o"), "hgq2": ("tab:red", "s")}


def chosen_staircase(rows: list[dict], cost: str) -> tuple[np.ndarray, np.ndarray]:
    """Budgets at each checkpoint's cost and the test accuracy chosen on validation there."""
    budgets = np.array(sorted({r[cost] for r in rows if r[cost] is not None}))
    chosen = [best_under(rows, b, cost)["test_accuracy"] for b in budgets]
    return budgets, np.array(chosen)


def runs_of(path: str) -> tuple[str, list[tuple[str, list[dict]]], list[dict], float | None]:
    with open(path) as handle:
        result = json.load(handle)
    if "library" in result:  # hgq2_jets.py
        arch = result.get("args", {}).get("arch", "mlp")
        return "hgq2", [(f"HGQ2 0.2.0 {arch}, scheduled", result["rows"])], result["fixed"], None
    arch = result["args"].get("arch", "mlp")
    runs = [(f"ours {arch}, scheduled, seed {r['seed']}", r["rows"]) for r in result["scheduled"]]
    floats = [f["test_accuracy"] for f in result["float"]]
    return "ours", runs, result["fixed"], float(np.mean(floats)) if floats else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ours", nargs="+", default=[])
    parser.add_argument("--hgq2", nargs="*", default=[])
    parser.add_argument("--float", type=float, help="float reference (default: from --ours)")
    parser.add_argument("--out", default="jets_front.png")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    reference = args.float
    for path in args.ours + args.hgq2:
        library, runs, fixed, float_test = runs_of(path)
        reference = reference if reference is not None else float_test
        color, marker = STYLES[library]
        for i, (label, rows) in enumerate(runs):
            budgets, chosen = chosen_staircase(rows, "lut_estimate")
            style = "-" if i == 0 else ":"
            ax.step(budgets, chosen, where="post", color=color, ls=style, label=label)
        points = [p for p in fixed if p["lut_estimate"] and p["test_accuracy"] > 0.5]
        if points:
            ax.plot(
                [p["lut_estimate"] for p in points],
                [p["test_accuracy"] for p in points],
                marker,
                color=color,
                mfc="none",
                label=f"{runs[0][0].split(',')[0]}, fixed β (last epoch)",
            )
    if reference is not None:
        ax.axhline(reference, color="k", lw=0.8, label=f"float MLP {reference:.4f}")
        ax.plot([3000], [reference - 0.010], "k*", ms=10, label="issue 24 targets")
        ax.plot([7000], [reference - 0.004], "k*", ms=10)
    ax.set_xscale("log")
    ax.set_xlabel("LUTs (alkaid estimate of the built circuit)")
    ax.set_ylabel("test accuracy (checkpoint chosen on validation)")
    ax.set_ylim(0.6, 0.75)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
