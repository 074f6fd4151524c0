"""The usage guide's Getting Started snippet runs as written (on small data)."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

GUIDE_SNIPPET = """
import numpy as np
from HGQ import HDense, HQuantize
from HGQ.bops import compute_bops, ResetMinMax
from {sequential_module} import Sequential

rng = np.random.default_rng(0)
X_train = rng.normal(size=(256, 16)).astype("float32")
y_train = X_train[:, :10] * 0.5
bsz = 64
callbacks = []

bops_reg_factor = 1e-5

model = Sequential([
    HQuantize(bops_reg_factor=bops_reg_factor, name='inp_q', input_shape=(16)),
    HDense(10, activation='relu', bops_reg_factor=bops_reg_factor),
    HDense(10, bops_reg_factor=bops_reg_factor),
])
model.compile(optimizer="adam", loss="mse")

callbacks.append(ResetMinMax())

history = model.fit(X_train, y_train, batch_size=bsz, epochs=2, callbacks=callbacks, verbose=0)

bops = compute_bops(model, X_train, bsz=bsz)
assert bops > 0
assert "bops" in history.history
print("GUIDE OK", bops)
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )


@pytest.mark.smoke
@pytest.mark.slow
def test_guide_snippet_with_keras_import():
    result = _run(GUIDE_SNIPPET.format(sequential_module="keras.models"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GUIDE OK" in result.stdout


@pytest.mark.smoke
@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None, reason="TensorFlow not installed"
)
def test_guide_snippet_verbatim_with_tensorflow_keras_import():
    result = _run(GUIDE_SNIPPET.format(sequential_module="tensorflow.keras.models"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GUIDE OK" in result.stdout


def test_int_input_shape_from_the_guide_is_accepted():
    from HGQ import HQuantize

    layer = HQuantize(name="inp_q", input_shape=(16))
    assert layer._input_shape_arg == (16,)
