"""Train an HGQ MLP on scikit-learn's 8x8 digits and compare it with a float model.

Real data that ships with scikit-learn (no download). Prints Keras's progress bar,
then the per-layer EBOPs table from compute_bops, then accuracy and EBOPs of the
quantized model next to the float model of the same shape. Finally converts the
model with hls4ml, compiles its C simulation with g++ and checks that it computes
exactly what Keras computes, on the test set and on inputs far outside it.

    ./scripts/demo.sh [--epochs 60] [--beta 3e-6]
"""

from __future__ import annotations

# isort: off
import HGQ  # noqa: F401  (selects the Keras backend: must precede keras)
import keras

# isort: on
from digits_common import run_example

from HGQ import HDense, HQuantize

HIDDEN = (32, 16)


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
    run_example(__doc__, "digits_mlp", hgq_mlp, float_mlp, sample_shape=(64,))


if __name__ == "__main__":
    main()
