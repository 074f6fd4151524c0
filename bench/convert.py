"""Conversion and C-simulation compile time of HGQ models through hls4ml.

For each model: train briefly, calibrate, then time ``convert_from_hgq_model``
(median of 3; the first call also imports hls4ml's converter) and the g++ compile
of the C simulation, and check bit-exactness on 10,000 inputs (half of them far
outside the calibrated range). Reference figures for the 16-64-32-32-5 MLP from the
issue (same machine type): original HGQ 0.04 s + 6.2 s, HGQ2 0.33 s + 8.9 s.

    python bench/convert.py [--models mlp16 digits_mlp digits_cnn deep_sets]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

# isort: off
import HGQ  # noqa: F401  (selects the Keras backend: must precede keras)
import keras

# isort: on
import numpy as np

from HGQ import HDense, HQuantize
from HGQ.bops import compute_bops
from HGQ.hls4ml_hook import convert_from_hgq_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


def mlp16() -> tuple[keras.Model, np.ndarray]:
    layers = [keras.Input((16,)), HQuantize(name="inp_q", bops_reg_factor=1e-6)]
    for i, width in enumerate((64, 32, 32, 5)):
        activation = "relu" if i < 3 else None
        layers.append(HDense(width, activation=activation, bops_reg_factor=1e-6))
    x = np.random.default_rng(0).normal(size=(20_000, 16)).astype("float32")
    return keras.Sequential(layers), x


def digits_mlp() -> tuple[keras.Model, np.ndarray]:
    from digits_common import load_data
    from digits_mlp import hgq_mlp

    x_train, _, _, _ = load_data()
    return hgq_mlp(3e-6), x_train


def digits_cnn() -> tuple[keras.Model, np.ndarray]:
    from digits_cnn import hgq_cnn
    from digits_common import load_data

    x_train, _, _, _ = load_data(sample_shape=(8, 8, 1))
    return hgq_cnn(3e-6), x_train


def deep_sets() -> tuple[keras.Model, np.ndarray]:
    from particle_taggers import deep_sets as build

    from HGQ.particle_data import toy_particle_jets

    x, _ = toy_particle_jets(20_000)
    return build(x.shape[1], x.shape[2], 3, 1e-6), x


MODELS = {
    "mlp16": mlp16,
    "digits_mlp": digits_mlp,
    "digits_cnn": digits_cnn,
    "deep_sets": deep_sets,
}


def bench(name: str, workdir: Path) -> None:
    keras.utils.set_random_seed(0)
    model, x = MODELS[name]()
    n_out = model.output_shape[-1]
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    y = np.random.default_rng(1).integers(0, n_out, size=len(x))
    model.fit(x, y, epochs=2, batch_size=256, verbose=0)
    compute_bops(model, x, bsz=4096, verbose=False)

    convert_times = []
    for run in range(3):
        start = time.perf_counter()
        model_hls = convert_from_hgq_model(model, str(workdir / f"{name}_{run}"))
        convert_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    model_hls.compile()
    compile_time = time.perf_counter() - start

    rng = np.random.default_rng(2)
    x_check = x[rng.integers(0, len(x), size=5_000)]
    x_check = np.concatenate([x_check, x_check * 8 + rng.normal(scale=4, size=x_check.shape)])
    x_check = np.ascontiguousarray(x_check, dtype=np.float32)
    expected = model.predict(x_check, verbose=0, batch_size=4096)
    got = np.asarray(model_hls.predict(x_check)).reshape(expected.shape)
    print(
        f"{name:<11} convert {statistics.median(convert_times):6.3f} s "
        f"(first {convert_times[0]:.3f} s)   g++ compile {compile_time:5.1f} s   "
        f"bit-exact {int(np.sum(got == expected))}/{expected.size}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    print(f"Keras backend: {keras.backend.backend()}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            bench(name, Path(tmp))


if __name__ == "__main__":
    main()
