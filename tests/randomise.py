"""Random integer bitwidths (and biases) for tests, so formats are truly heterogeneous."""

from __future__ import annotations

import keras
import numpy as np
import reference as ref

from HGQ import HDense

# Fractional bits (low, high) of a model's input quantizer, its other outputs and its
# kernels. "wide" models have one kernel layer: inputs of up to 13 significant bits
# (more than the 11 of a TF32 tensor-core operand; GPUs use TF32 for float32 products
# unless told otherwise) and outputs fine enough (15-16 fractional bits) to keep every
# bit of the products, with every sum still within float32's 24 bits. "narrow" is the
# usual small-width case.
BIT_RANGES = {
    "narrow": {"input": (0, 4), "output": (0, 4), "kernel": (1, 5)},
    "wide": {"input": (9, 10), "output": (15, 16), "kernel": (5, 6)},
}


def randomise_bits(quantizer, rng: np.random.Generator, low: int, high: int) -> None:
    """Every group of ``quantizer`` gets its own fractional bits in [low, high]."""
    fb = quantizer.fractional_bits
    fb.assign(rng.integers(low, high + 1, size=fb.shape).astype("float32"))


def randomise_model(model: keras.Model, rng: np.random.Generator) -> None:
    """Outputs 0..4 fractional bits, HDense kernels 1..5 and random biases."""
    for layer in model.layers:
        quantizer = getattr(layer, "pre_activation_quantizer", None)
        if quantizer is not None:
            randomise_bits(quantizer, rng, 0, 4)
        if isinstance(layer, HDense):
            randomise_bits(layer.kernel_quantizer, rng, 1, 5)
            layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))


def input_significant_bits(model: keras.Model, x) -> int:
    """Most significant bits of any value the model's first layer hands to its products."""
    quantized = keras.ops.convert_to_numpy(keras.Model(model.inputs[0], model.layers[0].output)(x))
    return ref.significant_bits(ref.to_fractions(quantized))
