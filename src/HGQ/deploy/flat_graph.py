"""One flat functional graph for any HGQ model, sharing the model's layer objects.

hls4ml's Keras 3 converter reads a functional graph: ``model.inputs``, ``model.outputs``
and the node each layer recorded in it. A subclassed ``keras.Model`` has no such graph
(its layers were called on concrete tensors), and a functional or Sequential model used
as a layer of another is a single node whose inside hls4ml has no handler for. Both
compute what a functional graph of the same layer objects would compute, so that graph
is built here:

- functional and Sequential models are walked node by node; a nested model's node is
  replaced by its own graph, called on the outer tensors (recursively);
- a subclassed model's ``call`` is run on ``keras.Input`` tensors shaped from the shapes
  it was built with, with ``training=False`` when ``call`` takes it (the inference path,
  what ``predict`` runs); each layer called inside records its node.

Calling a layer on symbolic tensors only records a node; weights, min/max records and
formats are untouched. The graph is refused, with the cause and what to do, when it
would not compute what the model computes at inference: a layer called more than once
(each use would need its own formats), an operation that is not a layer (a raw
``keras.ops`` call or a Python operator on tensors inside ``call``), or a ``call`` that
cannot be run on symbolic tensors.

Calling a layer appends to Keras' records of its calls (``_inbound_nodes``,
``_outbound_nodes``) and sets HGQ's lineage (``_input_source_refs``). The lineage is put
back when the conversion ends and the call records when it fails, so a refused or
failed conversion leaves the model as it was. After a successful one the extra records
stay: the flat model (which hls4ml keeps and saves with the project) needs them, and
Keras reads a model's own records only, so the user's model is unaffected.
"""

from __future__ import annotations

import contextlib
import inspect
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import keras

from HGQ.layers.base import QLayerBase

#: What to do when a model's graph cannot be flattened reliably.
BUILD_FUNCTIONAL_HINT = (
    "Build the model as a functional model (inputs = keras.Input(...); outputs = layers "
    "applied to them; keras.Model(inputs, outputs)) or as a keras.Sequential, which "
    "convert as they are."
)


def graph_of(model: keras.Model) -> Any | None:
    """The functional graph behind ``model``: itself if functional, the one a built
    Sequential keeps (``_functional``, private), None for a subclassed model."""
    if isinstance(model, keras.Sequential):
        # A Sequential holds its layers as a Functional once built (private attribute).
        return getattr(model, "_functional", None)
    if hasattr(model, "_run_through_graph") and hasattr(model, "_nodes_by_depth"):
        return model
    return None


def _describe(model: keras.Model) -> str:
    return f"'{model.name}' ({type(model).__name__})"


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(d is None or isinstance(d, int) for d in value)


def _inputs_from_build_shapes(model: keras.Model) -> Any:
    """``keras.Input`` tensors shaped like the data ``model`` was built with."""
    # Keras 3 records the shapes a layer was built with here (private attribute).
    shapes = getattr(model, "_build_shapes_dict", None) if model.built else None
    if not shapes:
        raise ValueError(
            f"Model {_describe(model)} has not been built, so the shapes of its "
            "inputs are unknown and its layers cannot be traced into a graph. Train it or "
            "call it on data (and calibrate it with HGQ.compute_bops) before converting."
        )
    if len(shapes) != 1:
        raise ValueError(
            f"Subclassed model {_describe(model)} was built from {len(shapes)} arguments "
            f"({', '.join(shapes)}); only a call(inputs) taking one tensor, or one list of "
            f"tensors, can be traced into a graph. {BUILD_FUNCTIONAL_HINT}"
        )
    shape = next(iter(shapes.values()))

    def make_input(sample_shape: Any) -> Any:
        return keras.Input(shape=tuple(sample_shape)[1:], dtype="float32")

    if _is_shape(shape):
        return make_input(shape)
    if isinstance(shape, (list, tuple)) and shape and all(_is_shape(s) for s in shape):
        return [make_input(s) for s in shape]
    raise ValueError(
        f"Subclassed model {_describe(model)} was built with input shapes {shape!r}; only "
        "one tensor or a list of tensors can be traced into a graph. "
        f"{BUILD_FUNCTIONAL_HINT}"
    )


#: Arguments of ``call`` Keras fills in itself; they are not inputs.
CONTEXT_ARGUMENTS = ("training", "mask")


def _tensor_arguments(model: keras.Model) -> list[str]:
    """The names of ``model.call``'s arguments that take inputs (``*args`` included)."""
    kinds = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.VAR_POSITIONAL,
    )
    return [
        name
        for name, parameter in inspect.signature(model.call).parameters.items()
        if name not in CONTEXT_ARGUMENTS
        and parameter.kind in kinds
        and (parameter.default is inspect.Parameter.empty or parameter.kind == kinds[2])
    ]


def _trace_call(model: keras.Model, args: tuple, kwargs: dict) -> Any:
    """What ``model.call`` returns on symbolic ``args``, at inference."""
    names = _tensor_arguments(model)
    extra = [k for k in kwargs if k not in CONTEXT_ARGUMENTS]
    if len(names) != 1 or len(args) != 1 or extra:
        raise ValueError(
            f"Subclassed model {_describe(model)} takes its inputs as "
            f"{len(names) + len(extra)} arguments ({', '.join(names + extra)}); only a "
            "call(inputs) taking one tensor, or one list of tensors, can be traced into a "
            f"graph (write call(self, inputs) with a, b = inputs). {BUILD_FUNCTIONAL_HINT}"
        )
    call_kwargs = {}
    if "training" in inspect.signature(model.call).parameters:
        call_kwargs["training"] = False
    try:
        outputs = model.call(args[0], **call_kwargs)
    except Exception as error:
        cause = f"{type(error).__name__}: {error}"
        raise ValueError(
            f"Subclassed model {_describe(model)} cannot be converted: running its call() "
            f"on symbolic inputs to find the graph of its layers failed ({cause}). Only a "
            "call() that applies layers to tensors, with no computation on the tensors "
            f"themselves, can be traced. {BUILD_FUNCTIONAL_HINT}"
        ) from error
    for tensor in keras.tree.flatten(outputs):
        if getattr(tensor, "_keras_history", None) is None:
            raise ValueError(
                f"Subclassed model {_describe(model)} cannot be converted: its call() "
                f"returned a {type(tensor).__name__} that no layer produced. "
                f"{BUILD_FUNCTIONAL_HINT}"
            )
    return outputs


def _ordered_inputs(graph: Any, inputs: Any) -> list[Any]:
    """``inputs`` in the order of ``graph.inputs``: a dict by input names (as Keras
    matches one to a list of inputs), anything else flattened."""
    if isinstance(inputs, dict):
        names = [tensor.name for tensor in graph.inputs]
        if set(names) <= set(inputs):
            return [inputs[name] for name in names]
    return keras.tree.flatten(inputs)


def _run_graph(graph: Any, inputs: Any) -> Any:
    """A functional graph's outputs on ``inputs``, every nested model inlined."""
    # The graph walk Functional.call uses (a private method); ``_inlining`` calls each
    # node's layer again on the new tensors, or a nested model's own graph.
    return graph._run_through_graph(_ordered_inputs(graph, inputs), operation_fn=_inlining)


def _inlining(operation: Any) -> Callable[..., Any]:
    """How one node of a graph is called again: a layer itself, a model by its parts."""

    def apply(*args: Any, **kwargs: Any) -> Any:
        if isinstance(operation, keras.Model):
            graph = graph_of(operation)
            if graph is None:
                return _trace_call(operation, args, kwargs)
            extra = [k for k in kwargs if k not in CONTEXT_ARGUMENTS]
            if len(args) != 1 or extra:
                raise ValueError(
                    f"Model {_describe(operation)} is called with more than one argument "
                    f"inside another model; it cannot be inlined. {BUILD_FUNCTIONAL_HINT}"
                )
            return _run_graph(graph, args[0])
        return operation(*args, **kwargs)

    return apply


def _check_flat(flat: keras.Model, model: keras.Model) -> None:
    """Refuse a graph that would not compute what ``model`` computes at inference."""
    graph = graph_of(flat)
    # Keras' nodes of this graph, grouped by depth (private; hls4ml reads it too).
    nodes = [node for level in graph._nodes_by_depth.values() for node in level]
    for node in nodes:
        operation = node.operation
        if isinstance(operation, keras.layers.Layer):
            continue
        raise ValueError(
            f"Model {_describe(model)} computes '{operation.name}' "
            f"({type(operation).__name__}) with a raw keras.ops call or a Python operator "
            "on tensors, not with a layer, so it has no HGQ formats and no hls4ml "
            "handler. Do that computation with an HGQ layer (HAdd, HActivation, "
            f"PReshape, ...). {BUILD_FUNCTIONAL_HINT}"
        )
    uses = Counter(id(node.operation) for node in nodes)
    for layer in graph.layers:
        if uses[id(layer)] > 1 and not isinstance(layer, keras.layers.InputLayer):
            raise ValueError(
                f"Layer '{layer.name}' is used {uses[id(layer)]} times in model "
                f"{_describe(model)} (a layer, or a sub-model holding it, called more than "
                "once): each use would need its own input bitwidths and output formats, "
                "so shared layers cannot be converted. Create one layer per use (weights "
                "can be copied with set_weights)."
            )


def _needs_rebuilding(graph: Any) -> bool:
    return any(isinstance(op, keras.Model) for op in graph.operations)


def _flatten(model: keras.Model) -> keras.Model:
    graph = graph_of(model)
    if graph is not None and not _needs_rebuilding(graph):
        return model
    if graph is not None:
        inputs = graph.inputs  # the model's own Input tensors: names carry over
        outputs = _run_graph(graph, inputs)
    else:
        inputs = _inputs_from_build_shapes(model)
        outputs = _trace_call(model, (inputs,), {})
    try:
        flat = keras.Model(inputs, outputs, name=model.name)
    except ValueError as error:
        raise ValueError(
            f"Model {_describe(model)} cannot be made into one graph of its layers: {error} "
            "Layers of nested models must have names distinct from each other and from "
            "the outer model's (pass name=...)."
        ) from error
    # A subclassed model's call may apply a functional or Sequential model: inline it.
    return _flatten(flat) if _needs_rebuilding(flat) else flat


def _graph_records(model: keras.Model) -> list[tuple[Any, int, int]]:
    """How many calls Keras recorded for every layer of ``model`` (nested ones included)."""
    return [
        (layer, len(layer._inbound_nodes), len(layer._outbound_nodes))
        for layer in model._flatten_layers(include_self=True)
    ]


@contextlib.contextmanager
def flat_functional(model: keras.Model) -> Iterator[keras.Model]:
    """A functional model without nested models, computing what ``model`` computes at
    inference with the same layer objects; ``model`` itself when it is one already.

    Raises ``ValueError`` naming the cause when no such graph can be built reliably.
    HGQ's lineage is put back on exit; Keras' call records too if the body fails.
    """
    records = _graph_records(model)
    lineage = [
        (layer, layer._input_source_refs)
        for layer, _, _ in records
        if isinstance(layer, QLayerBase)
    ]
    try:
        flat = _flatten(model)
        _check_flat(flat, model)
        yield flat
    except BaseException:
        for layer, inbound, outbound in records:
            # Keras only appends to these lists (one entry per call on symbolic tensors).
            del layer._inbound_nodes[inbound:]
            del layer._outbound_nodes[outbound:]
        raise
    finally:
        for layer, refs in lineage:
            object.__setattr__(layer, "_input_source_refs", refs)
