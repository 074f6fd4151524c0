"""The save/load round trip the model tests share."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from HGQ.bops import compute_bops


def reload_and_compare(
    model: keras.Model, data: np.ndarray, tmp_path: Path, bops: float, outside: float = 8.0
) -> keras.Model:
    """Save ``model`` as .keras and load it back; return the loaded model.

    Asserts that both predict the same bits on ``data`` and on ``outside * data``
    (beyond the calibrated range, where outputs wrap), and that the loaded model's
    exact EBOPs on ``data`` equal ``bops``.
    """
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x_test = np.concatenate([data, outside * data]).astype("float32")
    np.testing.assert_array_equal(
        model.predict(x_test, verbose=0), loaded.predict(x_test, verbose=0)
    )
    assert compute_bops(loaded, data, verbose=False) == bops
    return loaded
