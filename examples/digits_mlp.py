"""Train an HGQ MLP on scikit-learn's 8x8 digits and compare it with a float model.

Real data that ships with scikit-learn (no download). Prints Keras's progress bar,
then the per-layer EBOPs table from compute_bops, then accuracy and EBOPs of the
quantized model next to the float model of the same shape. Finally converts the
model with hls4ml, compiles its C simulation with g++ and checks that it computes
exactly what Keras computes, on the test set and on inputs far outside it.

    ./scripts/demo.sh [--epochs 60] [--beta 3e-6]
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

# isort: off
import HGQ  # noqa: F401  (selects the Keras backend: must precede keras)
import keras

# isort: on
from HGQ import HDense, HQuantize
from HGQ.bops import ResetMinMax, compute_bops
from HGQ.hls4ml_hook import convert_from_hgq_model, precision_table

HIDDEN = (32, 16)


def load_data(seed: int = 0):
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")  # pixel intensities 0..16 -> [0, 1]
    y = digits.target.astype("int32")
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


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


def float_ebops(model: keras.Model, bits: int = 32) -> float:
    """What the same network costs with every operand 32 bits wide, for scale."""
    return float(sum(np.prod(layer.kernel.shape) * bits * bits for layer in model.layers))


def accuracy(model: keras.Model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--beta", type=float, default=3e-6, help="bops_reg_factor")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output-dir", default="build/hls4ml/digits_mlp")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    x_train, x_test, y_train, y_test = load_data()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    print(f"Keras backend: {keras.backend.backend()}")
    print(f"digits: {len(x_train)} train / {len(x_test)} test samples, 64 features\n")

    print("== float model")
    reference = float_mlp()
    reference.compile(keras.optimizers.Adam(3e-3), loss, metrics=["accuracy"])
    reference.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=2)

    print(f"\n== HGQ model (bops_reg_factor={args.beta:g})")
    model = hgq_mlp(args.beta)
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


if __name__ == "__main__":
    main()
