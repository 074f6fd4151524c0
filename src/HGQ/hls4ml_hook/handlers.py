"""The hls4ml emitter: HGQ's deployment steps as hls4ml Keras 3 layer dictionaries.

One handler serves every layer class with a deployment description
(``HGQ.deploy.descriptions``): it asks for the layer's steps and writes each as the
hls4ml layers that compute it exactly, one function per step kind. Nothing here
knows a layer class. Importing this module registers the handler in hls4ml's
converter registry for every described class (and every class registered later).

hls4ml's bit-exact pass then sizes every intermediate type (accumulators, weights)
so that nothing is lost on the way; ``FixedPointQuantizer`` layers hold the
per-element formats.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from hls4ml.converters.keras_v3._base import KerasV3LayerHandler, registry
from hls4ml.converters.keras_v3.conv import gen_conv_config

import HGQ.hls4ml_hook.hls4ml_workarounds  # noqa: F401  (registers HGQ's quantizer layer)
from HGQ.deploy import steps as s
from HGQ.deploy.descriptions import Tensors, describe, on_registration
from HGQ.deploy.formats import quantizer_rounding
from HGQ.hls4ml_hook.formats import HGQ_QUANTIZER, fixed_point_quantizer
from HGQ.hls4ml_hook.lookup_table import table_step

if TYPE_CHECKING:
    from keras import KerasTensor

LayerDict = dict[str, Any]


@dataclass
class Conversion:
    """What one ``convert_from_hgq_model`` run knows: the model's output tensors, and
    the quantizers the handler emitted (each must survive hls4ml's passes)."""

    outputs: frozenset[str]
    quantizers: list[str] = field(default_factory=list)


_converting: contextvars.ContextVar[Conversion | None] = contextvars.ContextVar(
    "hgq_converting", default=None
)


@contextlib.contextmanager
def hgq_conversion(output_names: frozenset[str]) -> Iterator[Conversion]:
    """Marks a conversion run by ``convert_from_hgq_model``, which the handler requires."""
    conversion = Conversion(frozenset(output_names))
    token = _converting.set(conversion)
    try:
        yield conversion
    finally:
        _converting.reset(token)


def handler_key(cls: type) -> str:
    """The registry key of a layer class, the way hls4ml looks it up."""
    return f"{cls.__module__}.{cls.__name__}"


def element_shape(tensor: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in tensor.shape[1:])


class DeployedLayerHandler(KerasV3LayerHandler):
    """The hls4ml handler of every HGQ layer: its deployment steps, emitted in turn."""

    def __call__(
        self,
        layer: Any,
        in_tensors: Sequence[KerasTensor],
        out_tensors: Sequence[KerasTensor],
    ) -> tuple[LayerDict, ...]:
        conversion = _converting.get()
        if conversion is None:
            raise RuntimeError(
                f"Layer '{layer.name}' is an HGQ layer: convert the model with "
                "HGQ.hls4ml_hook.convert_from_hgq_model, not hls4ml's "
                "convert_from_keras_model. It checks the model first and corrects hls4ml "
                "1.3 behaviours that a plain conversion would leave in the design "
                "(quantizers folded into one another, unsigned tensors that drop a sign's "
                "weight, tables laid out for another input type)."
            )
        tensors = Tensors(
            tuple(t.name for t in in_tensors),
            tuple(element_shape(t) for t in in_tensors),
            out_tensors[0].name,
            element_shape(out_tensors[0]),
        )
        shapes = dict(zip(tensors.inputs, tensors.input_shapes, strict=True))
        dicts: list[LayerDict] = []
        for step in describe(layer, tensors):
            emit = EMITTERS[type(step)]
            is_output = step.output in conversion.outputs
            dicts.extend(emit(step, [shapes[x] for x in step.inputs], is_output))
            shapes[step.output] = step.shape
        conversion.quantizers.extend(d["name"] for d in dicts if d["class_name"] == HGQ_QUANTIZER)
        return tuple(dicts)


def register_handler(cls: type) -> None:
    """Let hls4ml's converter hand layers of ``cls`` to ``DeployedLayerHandler``."""
    registry[handler_key(cls)] = DeployedLayerHandler()


def _with_subclasses(cls: type) -> list[type]:
    found = [cls]
    for child in cls.__subclasses__():
        found.extend(_with_subclasses(child))
    return found


on_registration(lambda cls: [register_handler(c) for c in _with_subclasses(cls)])


# ------------------------------------------------------------------ step emitters
def _io(step: s.Step, inputs: Sequence[str] | None = None, output: str | None = None) -> LayerDict:
    return {
        "input_keras_tensor_names": list(step.inputs if inputs is None else inputs),
        "output_keras_tensor_names": [step.output if output is None else output],
    }


def _quantize(step: s.Quantize, shapes, is_output) -> list[LayerDict]:
    return [
        fixed_point_quantizer(
            step.name, step.kif, step.rounding, step.inputs[0], step.output, step.overflow
        )
    ]


def _identity(step: s.Step, kif, source: str, target: str) -> LayerDict:
    """A quantizer to the formats the values already have: the identity on them.

    Used where hls4ml would remove a step from the graph (a final Reshape), which fails
    when the input tensor is a model output too, or would misread one (a Transpose
    before a flatten); a cast is wiring in hardware.
    """
    return fixed_point_quantizer(f"{step.name}_identity", kif, "TRN", source, target)


def _gen_window(name: str, in_shape, out_shape, window, strides, padding) -> LayerDict:
    """hls4ml's sizes and padding of a sliding window, channels last."""
    return gen_conv_config(
        in_shape=tuple(in_shape),
        out_shape=tuple(out_shape),
        ker_px_shape=tuple(window),
        strides=tuple(strides),
        padding=padding,
        data_format="channels_last",
        name=name,
    )


def _dense(step: s.Dense, shapes, is_output) -> list[LayerDict]:
    """hls4ml ``Dense``; at positions, a pointwise (1x1) ``Conv1D``/``Conv2D``."""
    kernel = step.kernel
    bias = step.bias if step.bias is not None else np.zeros(kernel.shape[-1])
    positions = shapes[0][:-1]
    if len(positions) > 2:
        raise ValueError(
            f"'{step.name}' applies a kernel at every position of inputs of shape "
            f"{shapes[0]}; hls4ml converts it on inputs of rank 2 to 4 (batch, up to two "
            "position axes, features). PReshape the position axes into one before it."
        )
    if positions:
        rank = len(positions)
        config = _gen_window(step.name, shapes[0], step.shape, (1,) * rank, (1,) * rank, "valid")
        config.update(
            class_name=f"Conv{rank}D",
            weight_data=kernel.reshape((1,) * rank + kernel.shape),
            parallelization_factor=step.parallel_factor,
        )
    else:
        config = {"class_name": "Dense", "n_in": kernel.shape[0], "n_out": kernel.shape[1]}
        config.update(weight_data=kernel)
    config.update(name=step.name, data_format="channels_last", bias_data=bias, use_bias=True)
    return [{**config, **_io(step)}]


def _conv(step: s.Conv, shapes, is_output) -> list[LayerDict]:
    kernel = step.kernel
    window = kernel.shape[:-2]
    config = _gen_window(step.name, shapes[0], step.shape, window, step.strides, step.padding)
    config.update(
        name=step.name,
        class_name=f"Conv{len(window)}D",
        data_format="channels_last",
        weight_data=kernel,
        bias_data=step.bias if step.bias is not None else np.zeros(kernel.shape[-1]),
        use_bias=True,
        parallelization_factor=step.parallel_factor,
    )
    return [{**config, **_io(step)}]


def _einsum_dense(step: s.EinsumDense, shapes, is_output) -> list[LayerDict]:
    return [
        {
            "name": step.name,
            "class_name": "EinsumDense",
            "equation": step.equation,
            "weight_data": step.kernel,
            "bias_data": step.bias if step.bias is not None else np.zeros(step.shape),
            "inp_shape": tuple(shapes[0]),
            "out_shape": tuple(step.shape),
            "parallelization_factor": step.parallel_factor,
            **_io(step),
        }
    ]


def _ones_einsum(name: str, equation: str, kernel_shape, in_shape, out_shape, source, target):
    """An hls4ml ``EinsumDense`` with a constant kernel of ones (a sum or a broadcast)."""
    return {
        "name": name,
        "class_name": "EinsumDense",
        "equation": equation,
        "weight_data": np.ones(kernel_shape),
        "bias_data": np.zeros(out_shape),
        "inp_shape": tuple(in_shape),
        "out_shape": tuple(out_shape),
        "input_keras_tensor_names": [source],
        "output_keras_tensor_names": [target],
    }


def _scale(step: s.Scale, shapes, is_output) -> list[LayerDict]:
    """An ``EinsumDense`` whose kernel shares every axis with its input and output."""
    letters = "bcdefgh"[: len(step.shape)]
    equation = f"{letters},{letters}->{letters}"
    return [
        {
            "name": step.name,
            "class_name": "EinsumDense",
            "equation": equation,
            "weight_data": np.asarray(step.factors, np.float64),
            "bias_data": np.zeros(step.shape),
            "inp_shape": tuple(shapes[0]),
            "out_shape": tuple(step.shape),
            **_io(step),
        }
    ]


def _einsum(step: s.Einsum, shapes, is_output) -> list[LayerDict]:
    return [
        {
            "name": step.name,
            "class_name": "Einsum",
            "equation": step.equation,
            "inp0_shape": tuple(shapes[0]),
            "inp1_shape": tuple(shapes[1]),
            "out_shape": tuple(step.shape),
            **_io(step),
        }
    ]


def _chained(step: s.Step, make: Callable[[str, list[str], str], LayerDict]) -> list[LayerDict]:
    """hls4ml merges two tensors at a time: ``make`` chained over more inputs."""
    dicts = []
    current = step.inputs[0]
    last = len(step.inputs) - 1
    for n, other in enumerate(step.inputs[1:], start=1):
        out = step.output if n == last else f"{step.output}_partial{n}"
        name = step.name if n == last else f"{step.name}_partial{n}"
        dicts.append(make(name, [current, other], out))
        current = out
    return dicts


def _merge(step: s.Merge, shapes, is_output) -> list[LayerDict]:
    def make(name: str, pair: list[str], out: str) -> LayerDict:
        return {
            "name": name,
            "class_name": "Merge",
            "op": step.op,
            "output_shape": list(step.shape),
            "input_keras_tensor_names": pair,
            "output_keras_tensor_names": [out],
        }

    return _chained(step, make)


def _concatenate(step: s.Concatenate, shapes, is_output) -> list[LayerDict]:
    """hls4ml ``Concatenate``, two inputs at a time. The axis is negative: hls4ml's layer
    and C++ templates read a positive axis as counting the batch, but its bit-exact
    pass indexes arrays without the batch axis with it."""
    rank = len(step.shape)

    def make(name: str, pair: list[str], out: str) -> LayerDict:
        return {
            "name": name,
            "class_name": "Concatenate",
            "op": f"concatenate{rank}d",
            "axis": step.axis,
            "input_keras_tensor_names": pair,
            "output_keras_tensor_names": [out],
        }

    return _chained(step, make)


def _relu(step: s.Relu, shapes, is_output) -> list[LayerDict]:
    return [
        {
            "name": step.name,
            "class_name": "Activation",
            "activation": "relu",
            "n_in": int(np.prod(step.shape)),
            **_io(step),
        }
    ]


def _table(step: s.Table, shapes, is_output) -> list[LayerDict]:
    """An hls4ml ``UnaryLUT`` holding the function one bit finer than the finest output
    format, then the quantizer rounding each element to its own format (exact: see
    ``HGQ.hls4ml_hook.lookup_table``)."""
    raw = f"{step.output}_raw"
    lut = table_step(
        step.owner, step.stage, step.layout, step.inputs[0], raw, int(np.prod(shapes[0]))
    )
    quantizer = step.spec.quantizer
    cast = fixed_point_quantizer(
        f"{step.name}_q",
        quantizer.exact_format(),
        quantizer_rounding(quantizer),
        raw,
        step.output,
        quantizer.config["overflow_mode"],
    )
    return [lut, cast]


def _pooling(
    name: str, kind: str, window, strides, padding, in_shape, out_shape, source, target
) -> LayerDict:
    rank = len(window)
    config = _gen_window(name, in_shape, out_shape, window, strides, padding)
    config["pool_width"] = config.pop("filt_width")
    if rank == 2:
        config["pool_height"] = config.pop("filt_height")
    else:
        config["n_in"] = config["in_width"]
        config["n_out"] = config["out_width"]
    op = "Max" if kind == "max" else "Average"
    config.update(
        name=name,
        class_name=f"{op}Pooling{rank}D",
        data_format="channels_last",
        input_keras_tensor_names=[source],
        output_keras_tensor_names=[target],
    )
    return config


def _pool(step: s.Pool, shapes, is_output) -> list[LayerDict]:
    return [
        _pooling(
            step.name,
            step.kind,
            step.pool_size,
            step.strides,
            step.padding,
            shapes[0],
            step.shape,
            step.inputs[0],
            step.output,
        )
    ]


def _reshape_dict(name: str, shape, source: str, target: str) -> LayerDict:
    return {
        "name": name,
        "class_name": "Reshape",
        "target_shape": list(shape),
        "input_keras_tensor_names": [source],
        "output_keras_tensor_names": [target],
    }


def _row_max(step: s.RowMax, shapes, is_output) -> list[LayerDict]:
    """A ``(1, n)`` max pool over the rows of a ``(rows, n, 1)`` view."""
    n, rows = shapes[0][-1], int(np.prod(shapes[0][:-1]))
    view, pooled = f"{step.output}_rows", f"{step.output}_pooled"
    return [
        _reshape_dict(f"{step.name}_rows", (rows, n, 1), step.inputs[0], view),
        _pooling(
            step.name, "max", (1, n), (1, n), "valid", (rows, n, 1), (rows, 1, 1), view, pooled
        ),
        _reshape_dict(f"{step.name}_reshape", step.shape, pooled, step.output),
    ]


def _along_last(rank: int) -> str:
    prefix = "bcdefgh"[: rank - 1]
    return f"{prefix}y,yz->{prefix}z"  # (..., n) -> (..., m) through an (n, m) kernel


def _row_sum(step: s.RowSum, shapes, is_output) -> list[LayerDict]:
    n = shapes[0][-1]
    equation = _along_last(len(step.shape))
    return [
        _ones_einsum(
            step.name, equation, (n, 1), shapes[0], step.shape, step.inputs[0], step.output
        )
    ]


def _broadcast(step: s.Broadcast, shapes, is_output) -> list[LayerDict]:
    n = step.shape[-1]
    equation = _along_last(len(step.shape))
    return [
        _ones_einsum(
            step.name, equation, (1, n), shapes[0], step.shape, step.inputs[0], step.output
        )
    ]


def _reshape(step: s.Reshape, shapes, is_output) -> list[LayerDict]:
    """hls4ml ``Reshape`` (free in hardware). hls4ml removes a Reshape that ends the
    graph; an identity quantizer follows one that makes a model output, so that the
    removal cannot merge two outputs."""
    if not is_output:
        return [_reshape_dict(step.name, step.shape, step.inputs[0], step.output)]
    reshaped = f"{step.output}_reshaped"
    return [
        _reshape_dict(step.name, step.shape, step.inputs[0], reshaped),
        _identity(step, step.kif, reshaped, step.output),
    ]


def _transpose(step: s.Transpose, shapes, is_output) -> list[LayerDict]:
    """hls4ml ``Transpose``, then an identity quantizer.

    hls4ml's ``RemoveTransposeBeforeFlatten`` takes a Transpose -> flatten -> Dense
    chain for a channels-last conversion and folds one fixed permutation into the
    Dense weights, whatever the Transpose's own (960 of 1024 outputs wrong); the
    quantizer breaks that chain. The Transpose gets its own name: hls4ml keeps a
    layer's output variable among its attributes under the layer's name, so a step
    named ``perm`` overwrote the Transpose's ``perm`` attribute.
    """
    transposed = f"{step.output}_transposed"
    return [
        {
            "name": f"{step.name}_transpose",
            "class_name": "Transpose",
            "perm": list(step.perm),
            **_io(step, output=transposed),
        },
        _identity(step, step.kif, transposed, step.output),
    ]


def _identity_step(step: s.Identity, shapes, is_output) -> list[LayerDict]:
    return [_identity(step, step.kif, step.inputs[0], step.output)]


#: One emitter per step kind: ``(step, input shapes, is a model output) -> layer dicts``.
EMITTERS: dict[type, Callable[[Any, list[tuple[int, ...]], bool], list[LayerDict]]] = {
    s.Quantize: _quantize,
    s.Dense: _dense,
    s.Conv: _conv,
    s.EinsumDense: _einsum_dense,
    s.Scale: _scale,
    s.Einsum: _einsum,
    s.Merge: _merge,
    s.Concatenate: _concatenate,
    s.Relu: _relu,
    s.Table: _table,
    s.Pool: _pool,
    s.RowMax: _row_max,
    s.RowSum: _row_sum,
    s.Broadcast: _broadcast,
    s.Reshape: _reshape,
    s.Transpose: _transpose,
    s.Identity: _identity_step,
}
