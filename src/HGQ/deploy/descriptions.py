"""What each layer deploys as: one description per layer class, for both emitters.

A description is a function ``describe(layer, tensors) -> list[Step]`` (the step
kinds are in ``HGQ.deploy.steps``): the layer's inference arithmetic from the tensors
named ``tensors.inputs`` to the one named ``tensors.output``. The registry maps layer
classes to descriptions; ``register_deployment`` adds a user's layer, which then
converts through hls4ml (``HGQ.hls4ml_hook``) and to RTL (``HGQ.rtl``) alike. A
class without a description of its own uses its nearest registered base's (the
batch-norm-fused layers deploy as their kernel layer; every pool as ``_PPoolBase``).

Registered with ``quantizes_output=True`` (the default), a description writes its
result into ``tensors.output`` of a ``Tensors`` whose output is a scratch name, and
the registry appends the layer's output quantizer (``pre_activation_quantizer``,
calibrated) into the real output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import keras
import numpy as np

from HGQ.deploy import steps as s
from HGQ.deploy.formats import quantizer_rounding
from HGQ.deploy.tables import table_spec
from HGQ.fixed_point import union_format
from HGQ.layers import (
    HActivation,
    HAdd,
    HConv1D,
    HConv2D,
    HDense,
    HEinsum,
    HEinsumDense,
    HMultiHeadAttention,
    HMultiply,
    HQuantize,
    HSoftmax,
    HSubtract,
    PConcatenate,
    PDropout,
    PFlatten,
    PPermute,
    PReshape,
    Signature,
)
from HGQ.layers.base import HKernelLayer, QLayerBase
from HGQ.layers.einsum_dense import without_batch
from HGQ.layers.pooling import _PGlobalPoolBase, _PPoolBase
from HGQ.layers.softmax import difference_format
from HGQ.quantizer import HGQuantizer


@dataclass(frozen=True)
class Tensors:
    """The tensors a layer reads and writes: names and element shapes (no batch axis)."""

    inputs: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    output: str
    output_shape: tuple[int, ...]


Description = Callable[[Any, Tensors], list[s.Step]]


class Registration(NamedTuple):
    describe: Description
    quantizes_output: bool


_REGISTRY: dict[type, Registration] = {}


def register_deployment(
    layer_class: type, describe: Description, *, quantizes_output: bool = True
) -> None:
    """Deploy ``layer_class`` (and its subclasses without a description of their own)
    as the steps ``describe(layer, tensors)`` returns, through hls4ml and to RTL.

    Args:
        layer_class: the Keras layer class (an ``HBaseLayer`` or ``PLayerBase`` child).
        describe: ``(layer, tensors) -> list[HGQ.deploy.steps.Step]``: the layer's
            inference arithmetic from ``tensors.inputs`` to ``tensors.output`` (see
            ``Tensors``). Constants (kernels, scales) are the deployed values, e.g.
            ``layer.kernel_quantizer(layer.kernel, training=False)``.
        quantizes_output: append the layer's calibrated output quantizer
            (``layer.pre_activation_quantizer``) after the steps. False for layers
            whose steps already end in their output formats (passive layers, tables).
    """
    if not isinstance(layer_class, type) or not issubclass(layer_class, keras.layers.Layer):
        raise TypeError(
            f"register_deployment: {layer_class!r} is not a Keras layer class; pass the "
            "class itself, e.g. register_deployment(HScale, describe_scale)."
        )
    if not callable(describe):
        raise TypeError(
            f"register_deployment: describe must be a function (layer, tensors) -> list of "
            f"steps; got {describe!r}."
        )
    _REGISTRY[layer_class] = Registration(describe, bool(quantizes_output))
    for listener in _LISTENERS:
        listener(layer_class)


#: Called with each newly registered class (an emitter that keeps its own lookup
#: table, like hls4ml's handler registry, adds the class there).
_LISTENERS: list[Callable[[type], None]] = []


def on_registration(listener: Callable[[type], None]) -> None:
    """Call ``listener(cls)`` for every class registered now and later."""
    _LISTENERS.append(listener)
    for cls in list(_REGISTRY):
        listener(cls)


def registration_of(layer: Any) -> Registration | None:
    """The registration of ``layer``'s class or of its nearest registered base."""
    for cls in type(layer).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def registered_classes() -> list[type]:
    """Every class registered directly, in registration order."""
    return list(_REGISTRY)


def describe(layer: Any, tensors: Tensors) -> list[s.Step]:
    """The steps ``layer`` deploys as (output quantizer included)."""
    registration = registration_of(layer)
    if registration is None:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has no deployment description. "
            "Register one with HGQ.deploy.register_deployment(cls, describe)."
        )
    if not registration.quantizes_output:
        return list(registration.describe(layer, tensors))
    pre = replace(tensors, output=f"{tensors.output}_pre_q")
    steps = list(registration.describe(layer, pre))
    source = pre.output if steps else tensors.inputs[0]
    quantizer = layer.pre_activation_quantizer
    return [*steps, quantize_with(f"{layer.name}_q", quantizer, source, tensors)]


def quantize_with(name: str, quantizer: HGQuantizer, source: str, tensors: Tensors) -> s.Quantize:
    """A step casting ``source`` to ``quantizer``'s calibrated formats, into the output."""
    return s.Quantize(
        name=name,
        inputs=(source,),
        output=tensors.output,
        shape=tensors.output_shape,
        kif=quantizer.exact_format(),
        rounding=quantizer_rounding(quantizer),
        overflow=quantizer.config["overflow_mode"],
    )


def _whole(layer: Any, t: Tensors) -> dict[str, Any]:
    """A one-step layer's step fields: the layer's name, its inputs and its output."""
    return {"name": layer.name, "inputs": t.inputs, "output": t.output, "shape": t.output_shape}


# ------------------------------------------------------------------ kernel layers
def _kernel_layer(layer: HKernelLayer, t: Tensors) -> list[s.Step]:
    """Dense, Conv, EinsumDense (and their batch-norm-fused forms): linear, ReLU."""
    kernel, bias = layer.deployed_weights()
    relu = layer.activation_name == "relu"
    linear = f"{t.output}_linear" if relu else t.output
    common = {
        "name": layer.name,
        "inputs": t.inputs,
        "output": linear,
        "shape": t.output_shape,
        "kernel": kernel,
        "bias": bias,
        "parallel_factor": int(layer.parallel_factor),
    }
    if isinstance(layer, HEinsumDense):
        step: s.Step = s.EinsumDense(equation=without_batch(layer.equation), **common)
    elif isinstance(layer, (HConv1D, HConv2D)):
        step = s.Conv(strides=tuple(layer.strides), padding=layer.padding, **common)
    else:
        step = s.Dense(**common)
    if not relu:
        return [step]
    relu_step = s.Relu(
        name=f"{layer.name}_relu", inputs=(linear,), output=t.output, shape=t.output_shape
    )
    return [step, relu_step]


# ----------------------------------------------------------------- other H-layers
def _quantize(layer: HQuantize, t: Tensors) -> list[s.Step]:
    return []  # its output quantizer alone


def _signature(layer: Signature, t: Tensors) -> list[s.Step]:
    """Truncates and wraps its input to the declared formats."""
    return [
        s.Quantize(
            **_whole(layer, t),
            kif=layer.exact_format(),
            rounding="TRN",
            overflow="WRAP",
        )
    ]


def _table(
    layer: Any,
    stage: str | None,
    layout: tuple[int, int, int],
    source: str,
    output: str,
    shape: tuple[int, ...],
) -> s.Table:
    return s.Table(
        name=f"{layer.name}_{stage or 'table'}",
        inputs=(source,),
        output=output,
        shape=shape,
        spec=table_spec(layer, stage),
        owner=layer,
        stage=stage,
        layout=layout,
    )


def _activation(layer: HActivation, t: Tensors) -> list[s.Step]:
    """ReLU and linear directly, then the output quantizer; any other function is a
    table holding the quantized result."""
    if layer.uses_lookup_table():
        layout = union_format(layer.input_source().exact_output_format())
        return [_table(layer, None, layout, t.inputs[0], t.output, t.output_shape)]
    source = t.inputs[0]
    steps: list[s.Step] = []
    if layer.activation is keras.activations.relu:
        source = f"{t.output}_relu"
        steps.append(
            s.Relu(name=f"{layer.name}_relu", inputs=t.inputs, output=source, shape=t.output_shape)
        )
    return [*steps, quantize_with(f"{layer.name}_q", layer.pre_activation_quantizer, source, t)]


MERGE_OPS = {HAdd: "add", HSubtract: "subtract", HMultiply: "multiply"}


def _merge(layer: Any, t: Tensors) -> list[s.Step]:
    op = next(op for cls, op in MERGE_OPS.items() if isinstance(layer, cls))
    return [s.Merge(**_whole(layer, t), op=op)]


def _einsum(layer: HEinsum, t: Tensors) -> list[s.Step]:
    return [
        s.Einsum(
            **_whole(layer, t),
            equation=layer.per_sample_equation,
        )
    ]


def _softmax(layer: HSoftmax, t: Tensors) -> list[s.Step]:
    """``d = x - max(x)``, ``e = Q(exp d)``, ``s = Σe``, ``r = Q(1/s)``, ``e·r``."""
    shape = t.output_shape
    reduced = (*shape[:-1], 1)
    n = shape[-1]

    def name(suffix: str) -> str:
        return f"{layer.name}_{suffix}"

    def tensor(suffix: str) -> str:
        return f"{t.output}_{suffix}"

    diff_kif = difference_format(union_format(layer.input_source().exact_output_format()))
    f_exp = int(np.max(layer.exp_quantizer.rounded_fractional_bits()))
    sum_kif = (0, 1 + int(np.ceil(np.log2(n))), f_exp)  # n values in [0, 1]
    source = t.inputs[0]
    return [
        s.RowMax(name=name("max"), inputs=(source,), output=tensor("max"), shape=reduced),
        s.Broadcast(
            name=name("max_b"), inputs=(tensor("max"),), output=tensor("max_b"), shape=shape
        ),
        s.Merge(
            name=name("diff"),
            inputs=(source, tensor("max_b")),
            output=tensor("diff"),
            shape=shape,
            op="subtract",
        ),
        _table(layer, "exp", diff_kif, tensor("diff"), tensor("exp"), shape),
        s.RowSum(name=name("sum"), inputs=(tensor("exp"),), output=tensor("sum"), shape=reduced),
        _table(layer, "inv", sum_kif, tensor("sum"), tensor("inv"), reduced),
        s.Broadcast(
            name=name("inv_b"), inputs=(tensor("inv"),), output=tensor("inv_b"), shape=shape
        ),
        s.Merge(
            name=name("product"),
            inputs=(tensor("exp"), tensor("inv_b")),
            output=t.output,
            shape=shape,
            op="multiply",
        ),
    ]


def _attention(layer: HMultiHeadAttention, t: Tensors) -> list[s.Step]:
    """The parts' own descriptions, in the order ``HMultiHeadAttention.call`` applies
    them, chained by made-up tensor names."""
    query, value = t.inputs[0], t.inputs[1]
    key = t.inputs[2] if len(t.inputs) > 2 else value
    shapes = {n: sh for n, sh in zip(t.inputs, t.input_shapes, strict=True)}
    shapes.setdefault(key, shapes[value])
    names = {part.name: f"{t.output}_{part.name}" for part in layer.parts()}
    names[layer.output_dense.name] = t.output
    out_shapes = {
        part.name: tuple(int(d) for d in shape[1:])
        for part, shape in layer.part_output_shapes().items()
    }
    shapes.update({names[n]: sh for n, sh in out_shapes.items()})
    steps: list[s.Step] = []

    def run(part: QLayerBase, sources: list[str]) -> str:
        tensors = Tensors(
            tuple(sources),
            tuple(shapes[x] for x in sources),
            names[part.name],
            out_shapes[part.name],
        )
        steps.extend(describe(part, tensors))
        return names[part.name]

    q = run(layer.query_dense, [query])
    k = run(layer.key_dense, [key])
    v = run(layer.value_dense, [value])
    weights = run(layer.softmax, [run(layer.scores, [k, q])])
    context = run(layer.context, [weights, v])
    run(layer.output_dense, [context])
    return steps


# ---------------------------------------------------------------- passive layers
def _reshape(layer: QLayerBase, t: Tensors) -> list[s.Step]:
    return [
        s.Reshape(
            **_whole(layer, t),
            kif=layer.exact_output_format(),
        )
    ]


def _permute(layer: PPermute, t: Tensors) -> list[s.Step]:
    return [
        s.Transpose(
            **_whole(layer, t),
            perm=tuple(int(d) - 1 for d in layer.dims),
            kif=layer.exact_output_format(),
        )
    ]


def _dropout(layer: PDropout, t: Tensors) -> list[s.Step]:
    """The identity at inference."""
    return [
        s.Identity(
            **_whole(layer, t),
            kif=layer.exact_output_format(),
        )
    ]


def _concatenate(layer: PConcatenate, t: Tensors) -> list[s.Step]:
    rank = len(t.output_shape)
    axis = layer.axis % (rank + 1) - (rank + 1)
    return [s.Concatenate(**_whole(layer, t), axis=axis)]


def _pool(layer: _PPoolBase, t: Tensors) -> list[s.Step]:
    """A windowed pool; a global pool is one window over the whole spatial extent,
    then (unless ``keepdims``) a reshape to the channels."""
    in_shape = t.input_shapes[0]
    glob = isinstance(layer, _PGlobalPoolBase)
    pooled_shape = (*(1,) * len(layer.pool_size), in_shape[-1]) if glob else t.output_shape
    pooled = f"{t.output}_pooled" if glob and not layer.keepdims else t.output
    pool = s.Pool(
        name=layer.name,
        inputs=t.inputs,
        output=pooled,
        shape=pooled_shape,
        kind=layer.kind,
        pool_size=tuple(layer.pool_size),
        strides=tuple(layer.strides),
        padding=layer.padding,
    )
    if pooled == t.output:
        return [pool]
    reshape = s.Reshape(
        name=f"{layer.name}_reshape",
        inputs=(pooled,),
        output=t.output,
        shape=t.output_shape,
        kif=layer.exact_output_format(),
    )
    return [pool, reshape]


for _cls in (HDense, HConv1D, HConv2D, HEinsumDense):
    register_deployment(_cls, _kernel_layer)
register_deployment(HQuantize, _quantize)
register_deployment(Signature, _signature, quantizes_output=False)
register_deployment(HActivation, _activation, quantizes_output=False)
for _cls in MERGE_OPS:
    register_deployment(_cls, _merge)
register_deployment(HEinsum, _einsum)
register_deployment(HSoftmax, _softmax)
register_deployment(HMultiHeadAttention, _attention, quantizes_output=False)
register_deployment(PReshape, _reshape, quantizes_output=False)
register_deployment(PFlatten, _reshape, quantizes_output=False)
register_deployment(PPermute, _permute, quantizes_output=False)
register_deployment(PDropout, _dropout, quantizes_output=False)
register_deployment(PConcatenate, _concatenate, quantizes_output=False)
register_deployment(_PPoolBase, _pool, quantizes_output=False)
