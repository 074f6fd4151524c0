"""Bitwidth maps computed once per traced forward pass.

A layer's EBOPs surrogate needs the bitwidth and "varies" maps of the layers that
feed it, and those maps are defined recursively up the graph (a passive layer's map
is its input's, moved; an H-layer's mask asks its own input's). Evaluated naively,
every layer re-walks the whole graph above it, so the training step's graph grows
with the square of the depth and exponentially with merges: a small branchy CNN
spent 6.7 s tracing and 11 s compiling its training step. Within one traced pass
these maps are fixed functions of the variables, so each is built once and reused.

The memo lives only as long as one trace: it is keyed by the object that owns the
trace (Keras's stateless scope, in which the JAX trainer runs each step, or
TensorFlow's function graph). Where no such object exists (eager execution, PyTorch)
nothing is cached, since a tensor computed in one step would be stale in the next.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import keras
from keras.src.backend.common.stateless_scope import get_stateless_scope


def _trace_owner() -> Any | None:
    """The object that owns the current trace, or None when not tracing."""
    scope = get_stateless_scope()
    if scope is not None:
        return scope
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            return tf.compat.v1.get_default_graph()
    return None


class PassMemo:
    """Per-layer cache of maps for the trace in progress (see the module)."""

    def __init__(self) -> None:
        self._owner: weakref.ref | None = None
        self._values: dict[str, Any] = {}

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, evaluated once per trace under ``key``."""
        owner = _trace_owner()
        if owner is None:
            return compute()
        if self._owner is None or self._owner() is not owner:
            self._owner = weakref.ref(owner)
            self._values = {}
        if key not in self._values:
            self._values[key] = compute()
        return self._values[key]
