"""Which HGQ layer produced a tensor, so a layer can read its input's bitwidths.

A layer's EBOPs need the bitwidth map of its input, which belongs to the layer that
produced that input. Symbolic (functional / Sequential) graphs record that in the
tensor's ``_keras_history``; tensors flowing through subclassed models carry
nothing, so HGQ layers remember what they returned, keyed by identity. Entries
hold weak references only and die with their tensors.
"""

from __future__ import annotations

import weakref
from typing import Any

import keras

_MAX_ENTRIES = 4096
_produced: dict[int, tuple[weakref.ref, weakref.ref]] = {}


def remember(outputs: Any, layer: keras.layers.Layer) -> None:
    """Note that ``layer`` produced every tensor in ``outputs``."""
    if len(_produced) > _MAX_ENTRIES:
        for key in [k for k, (t, _) in _produced.items() if t() is None]:
            del _produced[key]
        if len(_produced) > _MAX_ENTRIES:
            _produced.clear()
    for tensor in keras.tree.flatten(outputs):
        try:
            _produced[id(tensor)] = (weakref.ref(tensor), weakref.ref(layer))
        except TypeError:  # a type that cannot be weakly referenced: no lineage
            continue


def producer_of(tensor: Any) -> keras.layers.Layer | None:
    """The layer that produced ``tensor`` (an InputLayer for model inputs), if known."""
    history = getattr(tensor, "_keras_history", None)
    if history is not None:
        return history.operation
    entry = _produced.get(id(tensor))
    if entry is None or entry[0]() is not tensor:
        return None
    return entry[1]()
