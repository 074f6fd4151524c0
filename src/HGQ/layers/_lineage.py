"""Which HGQ layer produced a tensor, so a layer can read its input's bitwidths.

A layer's EBOPs need the bitwidth map of its input, which belongs to the layer that
produced that input. Symbolic (functional / Sequential) graphs record that in the
tensor's ``_keras_history``; tensors flowing through subclassed models carry
nothing, so HGQ layers remember what they returned, keyed by identity. Entries
hold weak references only and die with their tensors.

A functional or Sequential model used as a layer of another is one node of the
outer graph, so the history of its output names the sub-model; the producer is the
layer inside it that made that output, found by following the sub-model's graph.
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


def _symbolic_outputs(model: keras.Model) -> list[Any] | None:
    """The output tensors of a functional or built Sequential model; None otherwise."""
    try:
        outputs = model.outputs
    except AttributeError:  # a subclassed model, or a Sequential not built yet
        return None
    return keras.tree.flatten(outputs) if outputs else None


def _producer_in_history(history: Any) -> Any:
    """The operation behind a ``_keras_history``, looking inside nested models.

    A sub-model output that is one of the sub-model's inputs passed through leads back
    to the tensor the outer graph fed to that input.
    """
    operation = history.operation
    while isinstance(operation, keras.Model):
        outputs = _symbolic_outputs(operation)
        if outputs is None or history.tensor_index >= len(outputs):
            return operation
        inner = outputs[history.tensor_index]
        inputs = keras.tree.flatten(operation.inputs)
        position = next((n for n, t in enumerate(inputs) if t is inner), None)
        if position is not None:
            # Keras' record of this call of the sub-model (a private attribute).
            node = operation._inbound_nodes[history.node_index]
            fed = node.input_tensors
            if position >= len(fed):
                return operation
            inner = fed[position]
        history = getattr(inner, "_keras_history", None)
        if history is None:
            return None
        operation = history.operation
    return operation


def producer_of(tensor: Any) -> keras.layers.Layer | None:
    """The layer that produced ``tensor`` (an InputLayer for model inputs), if known."""
    history = getattr(tensor, "_keras_history", None)
    if history is not None:
        return _producer_in_history(history)
    entry = _produced.get(id(tensor))
    if entry is None or entry[0]() is not tensor:
        return None
    return entry[1]()
