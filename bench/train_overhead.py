"""Training overhead of HGQ against the same plain Keras MLP, in one run.

Model: 16-64-32-32-5 (HQuantize + 4 HDense vs 4 Dense), 200,000 synthetic samples
(``--samples``; ``--data`` tiles a jets file to that many instead), Adam, same backend,
same data. Prints steady-state seconds per epoch (median), first-epoch seconds, their
ratios, and the time of compute_bops on all samples.

    python bench/train_overhead.py [--epochs 6] [--batches 1024 16384] [--fresh-process]
                                   [--compilation-cache] [--calibrated-bops 20000]
                                   [--samples 1000000 --data jets.npz]
                                   [--hgq2-python /path/to/hgq2-venv/bin/python]

``--fresh-process`` also times each model's first epoch in a new Python process per
run (one model per process, as a user's training script runs it), so neither model
profits from the other's warm-up. ``--compilation-cache`` (JAX) adds the same
measurement for a re-run of the script with JAX's persistent compilation cache on:
one untimed run per model fills a fresh cache, then the timed runs read from it.
``--calibrated-bops N`` adds HGQ runs with ``CalibratedBOPs`` on N samples (exact EBOPs
every epoch) and prints what that costs per epoch. ``--hgq2-python`` adds HGQ2 0.2.0's
same MLP (``bench/hgq2_jets.py --time``, run by that interpreter, in HGQ2's own venv
outside this repository) to each alternation, on the same data; its first epoch is
that of a new process, so compare it with ``--fresh-process``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

# isort: off
import HGQ  # noqa: F401  (selects the Keras backend: must precede keras)
import keras

# isort: on
import numpy as np

from HGQ import HDense, HQuantize
from HGQ.bops import compute_bops
from HGQ.callbacks import CalibratedBOPs, ResetMinMax

N_SAMPLES = 200_000
WIDTHS = (64, 32, 32, 5)


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)

    def on_train_begin(self, logs=None):
        self.times: list[float] = []


def plain_model() -> keras.Model:
    layers = [keras.Input((16,))]
    for i, width in enumerate(WIDTHS):
        layers.append(keras.layers.Dense(width, activation="relu" if i < 3 else None))
    return keras.Sequential(layers)


def hgq_model(beta: float = 1e-6) -> keras.Model:
    layers = [keras.Input((16,)), HQuantize(name="inp_q", bops_reg_factor=beta)]
    for i, width in enumerate(WIDTHS):
        layers.append(HDense(width, activation="relu" if i < 3 else None, bops_reg_factor=beta))
    return keras.Sequential(layers)


def time_fit(model: keras.Model, x, y, batch: int, epochs: int, callbacks) -> list[float]:
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    timer = EpochTimer()
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=[*callbacks, timer])
    return timer.times


def time_calibrated_bops(model: keras.Model, data: np.ndarray, calls: int = 6) -> float:
    """Median seconds of ``CalibratedBOPs``' epoch-end work after its first (compiling) call."""
    callback = CalibratedBOPs(data)
    callback.set_model(model)
    times = []
    for epoch in range(calls):
        start = time.perf_counter()
        callback.on_epoch_end(epoch, {})
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def make_data(samples: int = N_SAMPLES, path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``samples`` synthetic rows, or the rows of a jets file tiled to ``samples``."""
    if path is not None:
        from HGQ.datasets import load_jet_tagging

        x_train, x_test, y_train, y_test = load_jet_tagging(path=path)
        x_all, y_all = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
        index = np.arange(samples) % len(x_all)
        return x_all[index].astype("float32"), y_all[index].astype("int32")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, 16)).astype("float32")
    y = np.argmax(x[:, :5] + 0.3 * rng.normal(size=(samples, 5)), axis=1).astype("int32")
    return x, y


def hgq2_epochs(python: str, data_file: str, batch: int, epochs: int) -> list[float]:
    """Epoch seconds of HGQ2's MLP, trained by ``python`` (HGQ2's venv) in a new process."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hgq2_jets.py")
    command = [python, script, "--time", data_file, "--batch", str(batch)]
    command += ["--epochs", str(epochs)]
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_single(kind: str, batch: int, samples: int, path: str | None) -> None:
    """Train one model for 2 epochs in this process and print its epoch times as JSON."""
    x, y = make_data(samples, path)
    keras.utils.set_random_seed(0)
    model = plain_model() if kind == "plain" else hgq_model()
    callbacks = [] if kind == "plain" else [ResetMinMax()]
    print(json.dumps(time_fit(model, x, y, batch, 2, callbacks)))


def first_epoch_in_new_process(
    kind: str, batch: int, cache_dir: str | None, data_args: list[str]
) -> float:
    """First-epoch seconds of one model trained in a new Python process."""
    env = dict(os.environ)
    if cache_dir is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
        # The default (1 s) would skip the training step, which compiles in less.
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.1"
    out = subprocess.run(
        [sys.executable, __file__, "--single", kind, "--batches", str(batch), *data_args],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])[0]


def first_epochs_in_fresh_processes(
    batch: int, repeats: int, data_args: list[str], cached: bool = False
) -> tuple[float, float]:
    """Median first-epoch seconds of plain and HGQ, each run in its own new process.

    ``cached``: the runs share a new persistent compilation cache, filled by one
    untimed run per model first (a re-run of the same training script).
    """
    firsts: dict[str, list[float]] = {"plain": [], "hgq": []}
    with tempfile.TemporaryDirectory() if cached else contextlib.nullcontext() as cache_dir:
        if cached:
            for kind in firsts:
                first_epoch_in_new_process(kind, batch, cache_dir, data_args)
        for _ in range(repeats):
            for kind in firsts:
                firsts[kind].append(first_epoch_in_new_process(kind, batch, cache_dir, data_args))
    return statistics.median(firsts["plain"]), statistics.median(firsts["hgq"])


def print_fresh_process_firsts(
    batches: list[int], repeats: int, data_args: list[str], cached: bool
) -> None:
    for batch in batches:
        p_first, h_first = first_epochs_in_fresh_processes(batch, repeats, data_args, cached)
        ratio = h_first / p_first
        print(f"{batch:>6} plain {p_first:.2f} s, hgq {h_first:.2f} s, ratio {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batches", type=int, nargs="+", default=[1024, 16384])
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per model")
    parser.add_argument(
        "--fresh-process", action="store_true", help="also time first epochs in new processes"
    )
    parser.add_argument(
        "--compilation-cache",
        action="store_true",
        help="also time first epochs of re-runs with JAX's persistent compilation cache",
    )
    parser.add_argument(
        "--calibrated-bops",
        type=int,
        default=0,
        metavar="N",
        help="also time HGQ with CalibratedBOPs on the first N samples (e.g. 20000)",
    )
    parser.add_argument("--samples", type=int, default=N_SAMPLES)
    parser.add_argument("--data", help="a jets file (hls4ml or .npz) tiled to --samples rows")
    parser.add_argument("--hgq2-python", help="HGQ2's venv interpreter: also time HGQ2")
    parser.add_argument("--single", choices=["plain", "hgq"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_args = ["--samples", str(args.samples)] + (["--data", args.data] if args.data else [])
    if args.single:
        run_single(args.single, args.batches[0], args.samples, args.data)
        return

    x, y = make_data(args.samples, args.data)
    data_dir = tempfile.TemporaryDirectory()  # HGQ2 reads the data from a file there
    data_file = os.path.join(data_dir.name, "data.npz")
    if args.hgq2_python:
        np.savez(data_file, x=x, y=y)

    print(f"backend: {keras.backend.backend()}, samples: {len(x)}, epochs: {args.epochs}")
    print(
        f"{'batch':>6} {'plain s/ep':>11} {'hgq s/ep':>9} {'ratio':>6} "
        f"{'plain 1st':>10} {'hgq 1st':>8} {'ratio':>6}"
    )
    model = None
    calibrated_lines, hgq2_lines = [], []
    for batch in args.batches:
        plain_runs, hgq_runs, calibrated_runs, hgq2_runs = [], [], [], []
        for _ in range(args.repeats):  # alternate so machine noise hits all alike
            keras.utils.set_random_seed(0)
            plain_runs.append(time_fit(plain_model(), x, y, batch, args.epochs, []))
            keras.utils.set_random_seed(0)
            model = hgq_model()
            hgq_runs.append(time_fit(model, x, y, batch, args.epochs, [ResetMinMax()]))
            if args.calibrated_bops:
                keras.utils.set_random_seed(0)
                callbacks = [ResetMinMax(), CalibratedBOPs(x[: args.calibrated_bops])]
                calibrated_runs.append(time_fit(hgq_model(), x, y, batch, args.epochs, callbacks))
            if args.hgq2_python:
                hgq2_runs.append(hgq2_epochs(args.hgq2_python, data_file, batch, args.epochs))
        if calibrated_runs:
            h = statistics.median(t for run in hgq_runs for t in run[1:])
            c = statistics.median(t for run in calibrated_runs for t in run[1:])
            alone = time_calibrated_bops(model, x[: args.calibrated_bops])
            calibrated_lines.append(
                f"{batch:>6} hgq {h:.3f} s/epoch, + CalibratedBOPs({args.calibrated_bops}) "
                f"{c:.3f} s/epoch ({100 * (c / h - 1):+.1f}%); the callback alone "
                f"{alone * 1000:.0f} ms = {100 * alone / h:.1f}% of an epoch"
            )
        p_steady = statistics.median(t for run in plain_runs for t in run[1:])
        h_steady = statistics.median(t for run in hgq_runs for t in run[1:])
        p_first = statistics.median(run[0] for run in plain_runs)
        h_first = statistics.median(run[0] for run in hgq_runs)
        if hgq2_runs:
            g_steady = statistics.median(t for run in hgq2_runs for t in run[1:])
            g_first = statistics.median(run[0] for run in hgq2_runs)
            hgq2_lines.append(
                f"{batch:>6} hgq2 {g_steady:.3f} s/epoch = {g_steady / p_steady:.2f}x plain; "
                f"ours/hgq2 {h_steady / g_steady:.2f}; hgq2 first epoch (new process) "
                f"{g_first:.2f} s = {g_first / p_first:.2f}x plain's in-process first"
            )
        print(
            f"{batch:>6} {p_steady:>11.3f} {h_steady:>9.3f} {h_steady / p_steady:>6.2f} "
            f"{p_first:>10.2f} {h_first:>8.2f} {h_first / p_first:>6.2f}"
        )
    for line in calibrated_lines + hgq2_lines:
        print(line)
    data_dir.cleanup()
    if args.fresh_process:
        print("first epoch, one model per new process (medians):")
        print_fresh_process_firsts(args.batches, args.repeats, data_args, cached=False)
    if args.compilation_cache and keras.backend.backend() != "jax":
        print("--compilation-cache skipped: it times JAX's cache, and the backend is not JAX")
    elif args.compilation_cache:
        print("first epoch of a re-run, JAX persistent compilation cache (medians):")
        print_fresh_process_firsts(args.batches, args.repeats, data_args, cached=True)
    assert model is not None
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        compute_bops(model, x, bsz=16384, verbose=False)
        runs.append(time.perf_counter() - start)
    print(
        f"compute_bops on {len(x)} samples (bsz 16384): first {runs[0]:.2f} s, "
        f"then {statistics.median(runs[1:]):.2f} s"
    )


if __name__ == "__main__":
    main()
