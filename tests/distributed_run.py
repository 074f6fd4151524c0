"""Train, calibrate and convert an HGQ MLP on two devices; print what the test compares.

Run by ``test_distributed.py`` in a fresh process, because the device count is fixed
before the backend starts (``XLA_FLAGS`` for JAX, logical CPU devices for
TensorFlow). ``KERAS_BACKEND=jax``: ``keras.distribution.DataParallel``;
``KERAS_BACKEND=tensorflow``: ``tf.distribute.MirroredStrategy``. The same weights are
then calibrated again on one device; the last line of stdout is a JSON summary.

    python tests/distributed_run.py OUTPUT_DIR
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any

BACKEND = os.environ.get("KERAS_BACKEND", "jax")
DEVICES = 2
BATCH = 64  # divisible by DEVICES: JAX refuses a batch it cannot split evenly

if BACKEND == "tensorflow":  # logical devices must exist before TensorFlow starts
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(DEVICES)]
    )

# isort: off
import HGQ  # noqa: F401, E402  (selects the Keras backend: must precede keras)
import keras  # noqa: E402

# isort: on
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hls_support as hs  # noqa: E402

from HGQ import HDense, HQuantize, ResetMinMax, compute_bops  # noqa: E402
from HGQ.calibration import _activation_quantizers  # noqa: E402


def halves_data(n: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every batch's first half in [0, 1], its second half in [-4, 6].

    Data parallelism gives each device a contiguous half of the batch, so a record
    kept per device would hold [0, 1] on the first device: only a record global over
    devices holds the negative minimum and the maximum above 1.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(n, 6)).astype("float32")
    for start in range(0, n, BATCH):
        wide = slice(start + BATCH // 2, start + BATCH)
        x[wide] = rng.uniform(-4, 6, size=x[wide].shape)
    y = rng.normal(size=(n, 3)).astype("float32")
    return x, y


def first_halves(x: np.ndarray) -> np.ndarray:
    """What the first device sees: the first half of every batch."""
    return np.concatenate([x[s : s + BATCH // 2] for s in range(0, len(x), BATCH)])


def mlp() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,)),
            HQuantize(name="inp_q"),
            HDense(8, activation="relu", name="d1"),
            HDense(3, name="d2"),
        ]
    )


def replica_copies(variable: Any) -> list[np.ndarray]:
    """The value each device holds (JAX: the shards of a replicated array; TF: the
    mirrored components), to see that the devices agree."""
    value = variable.value
    if hasattr(value, "addressable_shards"):
        return [np.asarray(shard.data) for shard in value.addressable_shards]
    if hasattr(value, "values"):
        return [np.asarray(component) for component in value.values]
    return [np.asarray(value)]


def records(model: keras.Model) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(q.vmin.numpy(), q.vmax.numpy()) for q in _activation_quantizers(model)]


def distribute() -> tuple[contextlib.AbstractContextManager, int, Any]:
    """(scope to build the model in, device count, how to go back to one device)."""
    if BACKEND == "jax":
        import jax

        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
        return (
            contextlib.nullcontext(),
            len(jax.devices()),
            lambda: keras.distribution.set_distribution(None),
        )
    if BACKEND == "tensorflow":
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(DEVICES)])
        return strategy.scope(), strategy.num_replicas_in_sync, lambda: None
    raise SystemExit(f"no data-parallel setup for backend {BACKEND!r}")


def main(output_dir: str) -> None:
    x, y = halves_data()
    scope, devices, single_device = distribute()
    keras.utils.set_random_seed(0)
    with scope:
        model = mlp()
        model.compile(keras.optimizers.Adam(0.01), "mse")
    history = model.fit(
        x, y, epochs=2, batch_size=BATCH, shuffle=False, callbacks=[ResetMinMax()], verbose=0
    )
    quantizers = _activation_quantizers(model)
    # Training-time records: every device holds the same, and the first device's
    # copy of the input's record has the second half's range.
    trained = [replica_copies(v) for q in quantizers for v in (q.vmin, q.vmax)]
    train_copies_agree = all(
        all(np.array_equal(c, copies[0]) for c in copies) for copies in trained
    )
    input_q = model.get_layer("inp_q").pre_activation_quantizer
    first_copy_min = float(replica_copies(input_q.vmin)[0].min())
    first_copy_max = float(replica_copies(input_q.vmax)[0].max())

    ebops = compute_bops(model, x, bsz=BATCH, verbose=False)
    calibrated = records(model)
    calibrated_copies_agree = all(
        all(np.array_equal(c, copies[0]) for c in copies)
        for q in quantizers
        for copies in (replica_copies(q.vmin), replica_copies(q.vmax))
    )
    model_hls = hs.convert_compiled(model, x, os.path.join(output_dir, "hls4ml"))
    rng = np.random.default_rng(1)
    exact_in = hs.mismatches(model, model_hls, x)
    exact_far = hs.mismatches(model, model_hls, hs.out_of_range(x, rng))

    weights = model.get_weights()
    single_device()
    single = mlp()
    single.set_weights(weights)
    ebops_single = compute_bops(single, x, bsz=len(x), verbose=False)
    single_records = records(single)
    # What a per-device record would have held: the first device's data alone.
    ebops_first_halves = compute_bops(single, first_halves(x), verbose=False)

    summary = {
        "backend": keras.backend.backend(),
        "devices": devices,
        "train_bops": [float(b) for b in history.history["bops"]],
        "train_copies_agree": train_copies_agree,
        "train_first_copy_input_range": [first_copy_min, first_copy_max],
        "calibrated_copies_agree": calibrated_copies_agree,
        "quantizers": len(quantizers),
        "records_equal": [
            bool(np.array_equal(a, c) and np.array_equal(b, d))
            for (a, b), (c, d) in zip(calibrated, single_records, strict=True)
        ],
        "ebops": ebops,
        "ebops_single": ebops_single,
        "ebops_first_halves": ebops_first_halves,
        "mismatches_in_range": list(exact_in),
        "mismatches_far": list(exact_far),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1])
