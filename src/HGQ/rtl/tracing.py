"""Trace a calibrated HGQ model into alkaid's fixed-point representation.

The model's flat functional graph (``flat_functional``, as for hls4ml) is walked in
Keras' own order; each layer's deployment steps (``HGQ.deploy.descriptions``, run by
``step_rules``) map its symbolic inputs to its symbolic output. The firmware's inputs
are the formats of the layer each model input feeds (HQuantize or Signature):
quantizing the raw inputs is the data source's job, as it is for any fixed-point
design, and ``RTLProject.predict`` does it on the host with that same layer.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import keras
import numpy as np
from alkaid.trace import FVArray as FixedVariableArray
from alkaid.trace import HWConfig, trace
from alkaid.trace.passes import optimize
from alkaid.trace.tracer import gather_variables

from HGQ.deploy.descriptions import Tensors, describe, registration_of
from HGQ.deploy.flat_graph import flat_functional, graph_of
from HGQ.fixed_point import FLOAT32_EXACT_BITS
from HGQ.layers import HQuantize, Signature
from HGQ.layers.base import FIRST_LAYER_HINT, QLayerBase
from HGQ.layers.replacements import check_only_hgq_layers
from HGQ.rtl.step_rules import run_steps


class LayerTrace(NamedTuple):
    """One layer's part of the circuit: its variables at either end, and alkaid's delay
    estimate at its output (its LUT estimate: ``layer_estimate``)."""

    name: str
    kind: str
    sources: list[Any]
    outputs: list[Any]
    delay: float


class Traced(NamedTuple):
    """The model as alkaid variables: firmware inputs and outputs, and each layer's share."""

    inputs: list[FixedVariableArray]
    outputs: list[FixedVariableArray]
    input_layers: list[QLayerBase]
    layers: list[LayerTrace]


def _element_shape(tensor: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in tensor.shape[1:])


def _input_layers(graph: keras.Model) -> list[QLayerBase]:
    """The one HQuantize or Signature each model input feeds, in input order."""
    consumers: dict[int, list[Any]] = {id(t): [] for t in graph.inputs}
    # This graph's nodes only: a layer also keeps the nodes of other models it is in.
    for node in _nodes(graph):
        for tensor in node.input_tensors:
            if id(tensor) in consumers:
                consumers[id(tensor)].append(node.operation)
    found = []
    for tensor in graph.inputs:
        layers = consumers[id(tensor)]
        if len(layers) != 1 or not isinstance(layers[0], (HQuantize, Signature)):
            names = ", ".join(f"'{layer.name}'" for layer in layers) or "no layer"
            raise ValueError(
                f"Model input '{tensor.name}' feeds {names}. The firmware takes each input in "
                "the formats of the one layer it feeds: feed every input to a single "
                f"HQuantize or Signature and branch after it. {FIRST_LAYER_HINT}"
            )
        found.append(layers[0])
    return found


def _nodes(graph: keras.Model) -> list[Any]:
    """The graph's nodes in the order Keras runs them (``_nodes_by_depth``, private)."""
    by_depth = graph._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _input_variables(layer: QLayerBase, shape: tuple[int, ...], hwconf, options) -> Any:
    k, i, f = (np.broadcast_to(a, shape) for a in layer.exact_output_format())
    return FixedVariableArray.from_kif(k, i, f, hwconf, solver_options=options)


def _widest(sources: list[Any], outputs: list[Any]) -> int:
    """The widest value (bits) computed between ``sources`` and ``outputs``."""
    source_ids = {v.id for v in sources}
    computed = [v for v in gather_variables(sources, outputs) if v.id not in source_ids]
    return max((int(sum(v.kif)) for v in computed), default=0)


def layer_estimate(layer: LayerTrace) -> float:
    """alkaid's LUT estimate of one layer's own circuit, traced alone, optimised without
    alkaid's re-tracing (which only the whole circuit needs): seconds for a softmax's
    tables, so it is computed only when asked for."""
    source_ids = {v.id for v in layer.sources}
    if all(v.id in source_ids or v.opr == "const" for v in layer.outputs):
        return 0.0
    comb = optimize(trace(layer.sources, layer.outputs, optimize=False), retrace=False)
    return float(comb.cost)


def _warn_if_wider_than_float32(layer: Any, widest: int) -> None:
    """Keras computes a layer in float32: past 24 bits a sum or product may round."""
    if widest > FLOAT32_EXACT_BITS and not isinstance(layer, (HQuantize, Signature)):
        warnings.warn(
            f"{layer.name}: a value it computes is {widest} bits wide, more than float32's "
            f"{FLOAT32_EXACT_BITS}-bit exact range, so the Keras model may differ from the "
            "firmware by an LSB here. Narrow the bitwidths (bw_clip, bops_reg_factor) "
            "feeding this layer.",
            stacklevel=4,
        )


def _check_supported(graph: keras.Model) -> None:
    for layer in graph.layers:
        if isinstance(layer, keras.layers.InputLayer) or registration_of(layer) is not None:
            continue
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) cannot be converted: it has no "
            "deployment description. Register one for user-defined layers with "
            "HGQ.deploy.register_deployment (see the README, 'Your own layers')."
        )


def _run_layer(
    layer: Any, in_tensors: list[Any], args: list[FixedVariableArray], out_tensor: Any
) -> FixedVariableArray:
    """``layer``'s deployment steps on its symbolic inputs."""
    names = [f"in{n}" for n in range(len(args))]
    tensors = Tensors(
        tuple(names),
        tuple(_element_shape(t) for t in in_tensors),
        "out",
        _element_shape(out_tensor),
    )
    values = dict(zip(names, args, strict=True))
    run_steps(describe(layer, tensors), values)
    return values["out"]


def trace_model(
    model: keras.Model, hwconf: HWConfig, solver_options: dict[str, Any] | None = None
) -> Traced:
    """The calibrated ``model`` traced layer by layer; refuses what alkaid cannot express."""
    check_only_hgq_layers(model)
    with flat_functional(model) as flat:
        graph = graph_of(flat)  # a Sequential model's functional graph
        _check_supported(graph)
        input_layers = _input_layers(graph)
        values: dict[int, FixedVariableArray] = {}
        inputs = []
        for tensor, layer in zip(graph.inputs, input_layers, strict=True):
            variables = _input_variables(layer, _element_shape(tensor), hwconf, solver_options)
            values[id(tensor)] = variables
            inputs.append(variables)
        layers = []
        for node in _nodes(graph):
            layer = node.operation
            if node.is_input or isinstance(layer, keras.layers.InputLayer):
                continue
            args = [values[id(t)] for t in node.input_tensors]
            out_tensor = node.output_tensors[0]
            output = _run_layer(layer, node.input_tensors, args, out_tensor)
            values[id(out_tensor)] = output
            delay = max((float(v.latency) for v in np.asarray(output).ravel()), default=0.0)
            sources = [v for x in args for v in np.asarray(x).ravel()]
            ends = list(np.asarray(output).ravel())
            _warn_if_wider_than_float32(layer, _widest(sources, ends))
            layers.append(LayerTrace(layer.name, type(layer).__name__, sources, ends, delay))
        outputs = [values[id(t)] for t in graph.outputs]
        return Traced(inputs, outputs, input_layers, layers)


__all__ = ["LayerTrace", "Traced", "layer_estimate", "trace_model"]
