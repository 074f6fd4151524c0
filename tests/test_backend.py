"""The backend fallback rule: no configured backend and no TensorFlow -> JAX."""

import json
import os
import subprocess
import sys

import pytest

from HGQ._backend import choose_backend


@pytest.mark.parametrize(
    "env, config, tf, config_available, expected",
    [
        (None, None, False, True, "jax"),
        (None, None, True, True, None),  # Keras's own default (TensorFlow) is installed
        ("torch", None, False, True, None),  # the user's choice wins
        (None, "torch", False, True, None),  # keras.json's choice wins
        # Keras itself writes "tensorflow" into a new keras.json; without TF that is no choice
        (None, "tensorflow", False, False, "jax"),
    ],
)
def test_choose_backend(env, config, tf, config_available, expected):
    assert choose_backend(env, config, tf, config_available) == expected


def _import_in_clean_env(tmp_path, keras_json=None, block_tensorflow=True):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(tmp_path)
    if keras_json is not None:
        (tmp_path / "keras.json").write_text(json.dumps(keras_json))
    block = "import sys; sys.modules['tensorflow'] = None\n" if block_tensorflow else ""
    code = block + "import HGQ, keras; print(keras.backend.backend())"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def test_import_without_tensorflow_or_config_uses_jax(tmp_path):
    result = _import_in_clean_env(tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "jax"


def test_keras_written_default_config_does_not_break_import_without_tensorflow(tmp_path):
    # What Keras writes on its first import, whatever backend it runs.
    result = _import_in_clean_env(tmp_path, keras_json={"backend": "tensorflow"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "jax"


def test_keras_json_backend_is_respected(tmp_path):
    result = _import_in_clean_env(tmp_path, keras_json={"backend": "jax"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "jax"
