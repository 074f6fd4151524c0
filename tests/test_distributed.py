"""Data-parallel training on two devices: records global, EBOPs and conversion unchanged.

The device count is fixed when a backend starts, so each case runs
``distributed_run.py`` in a fresh process on two host (CPU) devices: JAX through
``keras.distribution.DataParallel`` (``XLA_FLAGS=--xla_force_host_platform_device_count=2``),
TensorFlow through ``tf.distribute.MirroredStrategy`` over two logical CPU devices.
The data put each batch's narrow half on the first device and its wide half on the
second, so a min/max record kept per device would differ from one device's record;
the run calibrates the trained weights on one device too and reports both.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))


def run_on_two_devices(backend: str, output_dir: str) -> dict:
    """The JSON summary printed by ``distributed_run.py`` under ``backend``."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    if backend == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=2".strip()
        env["JAX_PLATFORMS"] = "cpu"  # two host devices, even on a machine with a GPU
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the two logical CPU devices, not a GPU
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "distributed_run.py"), output_dir],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_summary(summary: dict, backend: str) -> None:
    assert summary["backend"] == backend
    assert summary["devices"] == 2
    assert len(summary["train_bops"]) == 2
    # While training, both devices hold one record, and it covers the wide half of
    # the batch that only the second device computed.
    assert summary["train_copies_agree"]
    low, high = summary["train_first_copy_input_range"]
    assert low < 0 and high > 1, summary
    # Calibration: records equal one device's, over the whole data set.
    assert summary["calibrated_copies_agree"]
    assert summary["quantizers"] == 3
    assert summary["records_equal"] == [True] * 3, summary
    assert summary["ebops"] == summary["ebops_single"], summary
    # The check can fail: records of the first device's data alone cost less.
    assert summary["ebops_first_halves"] < summary["ebops"], summary
    assert summary["mismatches_in_range"] == [0, 512 * 3]
    assert summary["mismatches_far"] == [0, 512 * 3]


def test_jax_data_parallel_records_are_global_and_convert_exactly(tmp_path):
    pytest.importorskip("hls4ml")
    check_summary(run_on_two_devices("jax", str(tmp_path)), "jax")


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed"
)
def test_tensorflow_mirrored_strategy_records_are_global_and_convert_exactly(tmp_path):
    pytest.importorskip("hls4ml")
    check_summary(run_on_two_devices("tensorflow", str(tmp_path)), "tensorflow")
