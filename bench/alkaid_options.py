"""What each of alkaid's LUT-saving options changes, in yosys LUTs.

For each model family (``bench/families.py``) at one β: train, calibrate, trace with
``HGQ.rtl`` and write the circuit three times: as ``convert_to_rtl`` does, with alkaid's
fusion of three-input adders (``ternary_fuse=True``, alkaid's default, off in
``convert_to_rtl``), and with alkaid's packing of sums of one-bit inputs into LUTs
(``binary_lut``, off in ``convert_to_rtl``: it fails on some circuits in alkaid 0.8.2; a
failure is reported, not fatal). Each is synthesised
with yosys (``-nodsp``) and checked with alkaid's interpreter against Keras.

    KERAS_BACKEND=jax .venv/bin/python bench/alkaid_options.py [--models mlp ...]
        [--beta 1e-5] [--epochs 30] [--out build/alkaid_options]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

# isort: off
import HGQ  # noqa: F401  (selects the Keras backend: must precede keras)
import keras

# isort: on
import numpy as np
from alkaid.codegen import RTLModel
from alkaid.trace import HWConfig, trace
from families import FAMILIES, train_family

from HGQ.bops import compute_bops
from HGQ.rtl import solver_options
from HGQ.rtl.synthesis import synthesize
from HGQ.rtl.tracing import trace_model

VARIANTS = {
    "default": ({}, False),
    "ternary fusion": ({}, True),
    "binary LUTs": ({"binary_lut": None}, False),
}


def measure(family: str, beta: float, epochs: int, workdir: str) -> dict:
    model, (x_train, x_test, _, _), _ = train_family(family, beta, epochs)
    ebops = float(compute_bops(model, x_train, bsz=1024, verbose=False))
    expected = model.predict(x_test, verbose=0)
    row: dict = {"model": family, "beta": beta, "ebops": ebops}
    for label, (options, ternary) in VARIANTS.items():
        try:
            traced = trace_model(model, HWConfig(1, 1, -1), {**solver_options(2), **options})
        except AssertionError as error:  # alkaid's own check
            row[label] = {"lut": None, "estimate": None, "failed": str(error)[:200]}
            print(family, label, "failed:", str(error)[:200], flush=True)
            continue
        inputs = [v for x in traced.inputs for v in np.asarray(x).ravel()]
        outputs = [v for y in traced.outputs for v in np.asarray(y).ravel()]
        comb = trace(inputs, outputs)
        firmware = traced.input_layers[0](x_test, training=False)  # the host quantizes
        firmware = np.asarray(keras.ops.convert_to_numpy(firmware), np.float64)
        got = comb.predict(firmware.reshape(len(x_test), -1), n_threads=1)
        assert np.array_equal(np.asarray(got).reshape(expected.shape), expected), label
        path = os.path.join(workdir, f"{family}_{label.replace(' ', '_')}")
        name = f"{family}_model"
        rtl = RTLModel(comb, path, name, ternary_fuse=ternary, print_latency=False)
        rtl.write()
        estimate = sum(stage.cost for stage in rtl.fsm.logic.values())
        row[label] = {"lut": synthesize(path, name, dsp=False)["lut"], "estimate": estimate}
        print(family, label, row[label], flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=sorted(FAMILIES), choices=sorted(FAMILIES))
    parser.add_argument("--beta", type=float, default=1e-5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="hgq_alkaid_options_")
    os.makedirs(out, exist_ok=True)
    rows = [measure(family, args.beta, args.epochs, out) for family in args.models]
    print(f"\n{'model':<14}{'EBOPs':>9}" + "".join(f"{label:>20}" for label in VARIANTS))
    for row in rows:
        cells = "".join(
            f"{row[label]['lut']:>20,}" if row[label]["lut"] is not None else f"{'failed':>20}"
            for label in VARIANTS
        )
        print(f"{row['model']:<14}{row['ebops']:>9,.0f}{cells}")
    for label in list(VARIANTS)[1:]:
        built = [row for row in rows if row[label]["lut"] is not None]
        default = sum(row["default"]["lut"] for row in built)
        other = sum(row[label]["lut"] for row in built)
        print(f"{label}: {other / max(default, 1):.3f}x the default's LUTs on {len(built)} models")
    with open(os.path.join(out, "alkaid_options.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print(f"wrote {out}/alkaid_options.json")


if __name__ == "__main__":
    main()
