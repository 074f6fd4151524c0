"""Shared steps of the conversion tests: train briefly, calibrate, convert, compare.

The comparison is exact equality of every output of the compiled hls4ml C
simulation with the Keras model's inference, on the calibration data and on
inputs far outside the calibrated range (so wrap-around is exercised).
"""

from __future__ import annotations

import keras
import numpy as np
from randomise import randomise_bits

from HGQ.bops import compute_bops
from HGQ.hls4ml_hook import convert_from_hgq_model
from HGQ.layers import HBaseLayer


def whole_batches(data, batch_size: int = 64):
    """The first rows of ``data`` (an array or a list of them) that fill whole batches.

    A last, shorter batch makes JAX trace and compile the training step a second time
    (about 18 s for a small CNN here), which is most of a brief training's cost.
    """
    if isinstance(data, list):
        return [whole_batches(d, batch_size) for d in data]
    n = len(data)
    return data[: n - n % batch_size] if n >= batch_size else data


def train_briefly(model: keras.Model, x, y, epochs: int = 2, batch_size: int = 64) -> None:
    model.compile(keras.optimizers.Adam(0.01), "mse")
    x, y = whole_batches(x, batch_size), whole_batches(y, batch_size)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)


def scramble_bitwidths(model: keras.Model, rng: np.random.Generator, low=-1, high=5) -> None:
    """Give every element its own fractional bits, so formats are truly heterogeneous."""
    for layer in model.layers:
        if not isinstance(layer, HBaseLayer):
            continue
        quantizers = [layer.pre_activation_quantizer]
        if hasattr(layer, "kernel_quantizer"):
            quantizers.append(layer.kernel_quantizer)
        for quantizer in quantizers:
            randomise_bits(quantizer, rng, low, high)


def out_of_range(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Inputs many calibration ranges away: every layer overflows and must wrap."""
    return (x * 8 + rng.normal(scale=20, size=x.shape)).astype("float32")


def convert_compiled(model: keras.Model, x_cal, output_dir, **kwargs):
    compute_bops(model, x_cal, verbose=False)
    model_hls = convert_from_hgq_model(model, str(output_dir), **kwargs)
    model_hls.compile()
    return model_hls


def mismatches(model: keras.Model, model_hls, x) -> tuple[int, int]:
    """(number of outputs that differ, number of outputs) over all model outputs."""
    expected = model.predict(x, verbose=0, batch_size=1024)
    got = model_hls.predict(np.ascontiguousarray(x) if not isinstance(x, list) else x)
    expected = expected if isinstance(expected, list) else [expected]
    got = got if isinstance(got, list) else [got]
    differ = total = 0
    for e, g in zip(expected, got, strict=True):
        g = np.asarray(g).reshape(e.shape)
        differ += int(np.sum(e != g))
        total += e.size
    return differ, total
