"""Train an HGQ CNN on scikit-learn's 8x8 digits, compare it with a float CNN, deploy it.

The same steps as digits_mlp.py with a small convolutional network: real data that
ships with scikit-learn, Keras's progress output, the per-layer EBOPs table, accuracy
and EBOPs next to the float model, then hls4ml conversion and a bit-exact check.

    .venv/bin/python examples/digits_cnn.py [--epochs 60] [--beta 3e-6]
"""

from __future__ import annotations

# isort: off
import HGQ  # noqa: F401  (selects the Keras backend: must precede keras)
import keras

# isort: on
from digits_common import run_example

from HGQ import HConv2D, HDense, HQuantize, PFlatten, PMaxPool2D

#: Start from 4 fractional bits instead of the guide's 2: with 2, the small kernels
#: of this CNN begin too coarse and the penalty keeps them there (~94% accuracy).
START_BITS = {"init_bw": 4}


def hgq_cnn(beta: float) -> keras.Model:
    quantized = {
        "bops_reg_factor": beta,
        "kernel_quantizer_config": START_BITS,
        "pre_activation_quantizer_config": START_BITS,
    }
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            HQuantize(
                name="inp_q", bops_reg_factor=beta, pre_activation_quantizer_config=START_BITS
            ),
            HConv2D(8, 3, padding="same", activation="relu", **quantized),
            PMaxPool2D(2),
            HConv2D(16, 3, padding="same", activation="relu", **quantized),
            PMaxPool2D(2),
            PFlatten(),
            HDense(10, **quantized),
        ],
        name="hgq_cnn",
    )


def float_cnn() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ],
        name="float_cnn",
    )


def main() -> None:
    run_example(__doc__, "digits_cnn", hgq_cnn, float_cnn, sample_shape=(8, 8, 1))


if __name__ == "__main__":
    main()
