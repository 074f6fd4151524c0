"""Bitwidth maps are built once per traced training step, and the penalty is unchanged.

Each layer's EBOPs surrogate reads the maps of the layers above it; unmemoised, a
ladder of merges re-walks the graph once per path (exponential in the number of
merges). The memo must keep the penalty's value and gradient exactly what the
unmemoised maps give, and must not reuse a tensor outside the trace that built it.
"""

from __future__ import annotations

from collections import Counter

import keras
import numpy as np
import pytest

from HGQ import HAdd, HDense, HQuantize
from HGQ.layers import base
from HGQ.layers._per_pass import PassMemo

RUNGS = 6


def ladder() -> keras.Model:
    """Each rung adds the two previous outputs: 2^RUNGS paths from the top."""
    inp = keras.Input((4,))
    a = HQuantize(name="inp_q", bops_reg_factor=1e-3)(inp)
    b = HDense(4, name="d0", bops_reg_factor=1e-3)(a)
    for i in range(RUNGS):
        c = HDense(4, name=f"d{i + 1}", bops_reg_factor=1e-3)(HAdd(name=f"add{i}")([a, b]))
        a, b = b, c
    return keras.Model(inp, b)


def _data():
    rng = np.random.default_rng(3)
    return rng.normal(size=(64, 4)).astype("float32"), rng.normal(size=(64, 4)).astype("float32")


def _fit_one_step(model, x, y):
    model.compile(keras.optimizers.SGD(0.0), "mse")  # no update: the maps stay as they were
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)


def _varies_calls_in_one_step() -> Counter[str]:
    calls: Counter[str] = Counter()
    model = ladder()
    for layer in model.layers:
        if isinstance(layer, base.QLayerBase):
            original = layer.output_varies

            def counting(original=original, name=layer.name):
                calls[name] += 1
                return original()

            object.__setattr__(layer, "output_varies", counting)
    _fit_one_step(model, *_data())
    return calls


def test_each_map_is_built_once_per_training_step(monkeypatch):
    if keras.backend.backend() != "jax":
        pytest.skip("counts one JAX trace (TensorFlow may trace more than once)")
    calls = _varies_calls_in_one_step()
    assert calls and max(calls.values()) == 1, calls
    # The count is meaningful: without the memo the top of the ladder is re-walked
    # once per path below it.
    monkeypatch.setattr(PassMemo, "get", lambda self, key, compute: compute())
    unmemoised = _varies_calls_in_one_step()
    assert unmemoised["d0"] >= 2**RUNGS // 2, unmemoised


def test_penalty_is_the_unmemoised_one():
    """The EBOPs the step records per layer equal the maps evaluated eagerly."""
    keras.utils.set_random_seed(5)
    model = ladder()
    x, y = _data()
    _fit_one_step(model, x, y)
    traced = {
        layer.name: float(layer.bops.numpy()) for layer in model.layers if hasattr(layer, "bops")
    }
    eager = {}
    for layer in model.layers:
        if not hasattr(layer, "bops"):
            continue
        value = layer.bops_surrogate()
        eager[layer.name] = 0.0 if value is None else float(keras.ops.convert_to_numpy(value))
    assert traced.keys() == eager.keys()
    for name in traced:
        assert traced[name] == pytest.approx(eager[name], rel=1e-6), name
    assert sum(traced.values()) > 0
