"""Where the first epoch's compile time goes: the HGQ training step, one ingredient at a time.

The first epoch of a Keras fit on JAX is mostly tracing and compiling the training step,
twice (full batches and the last partial batch). This script builds the 16-64-32-32-5
MLP of ``train_overhead.py`` in five variants, each adding one ingredient of HGQ
training, and times the compile of its training step in a new Python process per run:

    plain      keras Dense layers
    fixed      HGQ layers with frozen bitwidths (trainable=False), no EBOPs penalty, no
               regularizer: quantization-aware training at fixed per-element widths
    trainable  + the bitwidths trained by the optimizer
    ebops      + the EBOPs penalty (bops_reg_factor 1e-6)
    default    + L1(1e-6) on the bitwidths: the usage guide's defaults

For each it prints JAX's trace, lowering and XLA compile seconds of one training-step
compile (medians over alternating runs), their sum against plain's, and the number of
kernels XLA compiles for the step (JAX only: counted in an XLA dump).

    python bench/compile_budget.py [--batch 1024] [--repeats 3] [--optimizer adam|sgd]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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

WIDTHS = (64, 32, 32, 5)
VARIANTS = ("plain", "fixed", "trainable", "ebops", "default")
EVENTS = {
    "trace": "/jax/core/compile/jaxpr_trace_duration",
    "lower": "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "compile": "/jax/core/compile/backend_compile_duration",
}


def build(variant: str) -> keras.Model:
    """The benchmark MLP with the ingredients of ``variant`` (see the module docstring)."""
    layers: list = [keras.Input((16,))]
    if variant == "plain":
        for i, width in enumerate(WIDTHS):
            layers.append(keras.layers.Dense(width, activation="relu" if i < 3 else None))
        return keras.Sequential(layers)
    quantizer: dict = {}
    if variant in ("fixed", "trainable", "ebops"):
        quantizer["regularizer"] = None
    if variant == "fixed":
        quantizer["trainable"] = False
    beta = 0.0 if variant in ("fixed", "trainable") else 1e-6
    configs = {"pre_activation_quantizer_config": quantizer}
    layers.append(HQuantize(name="inp_q", bops_reg_factor=beta, **configs))
    for i, width in enumerate(WIDTHS):
        activation = "relu" if i < 3 else None
        layers.append(
            HDense(
                width,
                activation=activation,
                bops_reg_factor=beta,
                kernel_quantizer_config=quantizer,
                **configs,
            )
        )
    return keras.Sequential(layers)


def time_step_compile(variant: str, batch: int, optimizer: str) -> dict[str, float]:
    """Seconds of the trace, lowering and compile of one training-step compile."""
    events: list[tuple[str, float]] = []
    if keras.backend.backend() == "jax":
        from jax import monitoring

        monitoring.register_event_duration_secs_listener(
            lambda name, secs, **_: events.append((name, secs))
        )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 16)).astype("float32")
    y = rng.integers(0, 5, size=batch).astype("int32")
    keras.utils.set_random_seed(0)
    model = build(variant)
    opt = keras.optimizers.Adam(1e-3) if optimizer == "adam" else keras.optimizers.SGD(1e-2)
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # A first step on another batch size compiles everything else (initializers,
    # optimizer state); the timed step then compiles only the training step.
    model.train_on_batch(x[:8], y[:8])
    events.clear()
    start = time.perf_counter()
    model.train_on_batch(x, y)
    result = {"step": time.perf_counter() - start}
    for key, name in EVENTS.items():
        # The training step is the largest event of its kind in this call.
        result[key] = max((secs for n, secs in events if n == name), default=float("nan"))
    return result


def count_kernels(variant: str, batch: int, optimizer: str) -> int:
    """Kernels XLA:CPU compiles for the training step (object files in an XLA dump)."""
    with tempfile.TemporaryDirectory() as dump:
        run_single(variant, batch, optimizer, {"XLA_FLAGS": f"--xla_dump_to={dump}"})
        objects = [p.name for p in Path(dump).iterdir() if p.name.endswith(".o")]
        steps = sorted({n.split(".")[0] for n in objects if ".jit_train_step." in n})
        return sum(1 for n in objects if n.startswith(steps[-1] + ".")) if steps else 0


def run_single(variant: str, batch: int, optimizer: str, env: dict[str, str] | None = None):
    """One variant in a new Python process; its timings as a dict."""
    command = [sys.executable, __file__, "--single", variant, "--batch", str(batch)]
    command += ["--optimizer", optimizer]
    out = subprocess.run(
        command, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})}
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per variant")
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--single", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(json.dumps(time_step_compile(args.single, args.batch, args.optimizer)))
        return

    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        for variant in VARIANTS:
            runs[variant].append(run_single(variant, args.batch, args.optimizer))
    jax = keras.backend.backend() == "jax"
    print(
        f"backend: {keras.backend.backend()}, batch {args.batch}, {args.optimizer}, "
        f"medians of {args.repeats} new processes; seconds of one training-step compile"
    )
    header = ("variant", "trace", "lower", "compile", "sum", "ratio")
    print("{:>10} {:>6} {:>6} {:>8} {:>6} {:>6} kernels".format(*header))
    plain_sum = None
    for variant in VARIANTS:
        med = {k: statistics.median(r[k] for r in runs[variant]) for k in EVENTS}
        total = sum(med.values())
        plain_sum = plain_sum or total
        kernels = count_kernels(variant, args.batch, args.optimizer) if jax else "-"
        print(
            f"{variant:>10} {med['trace']:>6.3f} {med['lower']:>6.3f} {med['compile']:>8.3f} "
            f"{total:>6.3f} {total / plain_sum:>6.2f} {kernels}"
        )


if __name__ == "__main__":
    main()
