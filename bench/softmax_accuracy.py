"""HSoftmax against a float64 softmax of the same fixed-point logits.

Logits are N(0, sigma) quantized to 6 fractional bits (an HQuantize frozen there); the
three HSoftmax quantizers all get ``f`` fractional bits. Prints the largest and mean
absolute error per (row length, f), the bound ``(3 + n) 2^-(f+1)`` the tests assert,
and how often the float softmax's most probable element is not among the largest
outputs of HSoftmax.

    KERAS_BACKEND=jax python bench/softmax_accuracy.py
"""

from __future__ import annotations

import argparse

import keras
import numpy as np

from HGQ import HQuantize, HSoftmax, compute_bops


def measure(n: int, f: int, sigma: float, samples: int, seed: int) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    model = keras.Sequential([keras.Input((n,)), HQuantize(name="q"), HSoftmax(name="sm")])
    fb = model.get_layer("q").pre_activation_quantizer.fractional_bits
    fb.assign(np.full(fb.shape, 6.0, "float32"))
    layer = model.get_layer("sm")
    for quantizer in (layer.exp_quantizer, layer.inv_quantizer, layer.pre_activation_quantizer):
        quantizer.fractional_bits.assign(np.full(quantizer.fractional_bits.shape, f, "float32"))
    x = rng.normal(scale=sigma, size=(samples, n)).astype("float32")
    compute_bops(model, x, verbose=False)
    z = np.round(x.astype(np.float64) * 64) / 64  # the quantized logits (no tie at 1/128)
    exact = np.exp(z - z.max(axis=-1, keepdims=True))
    exact /= exact.sum(axis=-1, keepdims=True)
    got = model.predict(x, verbose=0, batch_size=4096)
    error = np.abs(got - exact)
    top = got == got.max(axis=-1, keepdims=True)
    differs = ~top[np.arange(samples), exact.argmax(axis=-1)]
    return float(error.max()), float(error.mean()), float(differs.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--sigma", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"logits N(0, {args.sigma}) on a 1/64 grid, {args.samples} rows")
    print(f"{'n':>3} {'f':>3} {'max error':>10} {'mean error':>11} {'bound':>8} {'top-1 lost':>11}")
    for n in (4, 8, 16):
        for f in (4, 6, 8, 10):
            worst, mean, differs = measure(n, f, args.sigma, args.samples, args.seed)
            bound = (3 + n) * 2.0 ** -(f + 1)
            print(f"{n:>3} {f:>3} {worst:>10.5f} {mean:>11.6f} {bound:>8.4f} {differs:>10.2%}")


if __name__ == "__main__":
    main()
