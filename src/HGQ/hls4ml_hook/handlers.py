"""hls4ml Keras 3 handlers for HGQ layers: one handler class per kind of layer.

Importing this module registers the handlers in hls4ml's converter registry. Keys
are built from the layer classes themselves (``module.ClassName``), so moving or
renaming a class cannot leave a stale key behind.

Every H-layer becomes its arithmetic (hls4ml ``Dense``, ``Activation``, ...) with
the already-quantized weights, followed by a ``FixedPointQuantizer`` holding the
calibrated per-element output formats. hls4ml's bit-exact pass then sizes every
intermediate type (accumulators, weights) so that nothing is lost on the way.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import keras
import numpy as np
from hls4ml.converters.keras_v3._base import KerasV3LayerHandler
from hls4ml.converters.keras_v3.conv import gen_conv_config

import HGQ.hls4ml_hook.hls4ml_workarounds  # noqa: F401  (registers HGQ's quantizer layer)
from HGQ.deploy.formats import quantizer_rounding
from HGQ.fixed_point import union_format
from HGQ.hls4ml_hook.formats import fixed_point_quantizer
from HGQ.layers import HActivation, HDense, HKernelLayer, HQuantize, QLayerBase, Signature
from HGQ.layers.add import HAdd, HMultiply, HSubtract
from HGQ.layers.attention import HMultiHeadAttention
from HGQ.layers.batchnorm import HConv1DBatchNorm, HConv2DBatchNorm, HDenseBatchNorm
from HGQ.layers.concatenate import PConcatenate
from HGQ.layers.conv import HConv1D, HConv2D
from HGQ.layers.dropout import PDropout
from HGQ.layers.einsum import HEinsum
from HGQ.layers.einsum_dense import HEinsumDense, without_batch
from HGQ.layers.pooling import (
    PAvgPool1D,
    PAvgPool2D,
    PGlobalAvgPool1D,
    PGlobalAvgPool2D,
    PGlobalMaxPool1D,
    PGlobalMaxPool2D,
    PMaxPool1D,
    PMaxPool2D,
)
from HGQ.layers.reshaping import PFlatten, PPermute, PReshape
from HGQ.layers.softmax import HSoftmax, difference_format

if TYPE_CHECKING:
    from keras import KerasTensor

LayerDicts = tuple[dict[str, Any], ...]


#: Names of the model's output tensors while ``convert_from_hgq_model`` runs, else None.
_converting: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "hgq_converting", default=None
)


@contextlib.contextmanager
def hgq_conversion(output_names: frozenset[str]) -> Iterator[None]:
    """Marks a conversion run by ``convert_from_hgq_model``, which the handlers require."""
    token = _converting.set(frozenset(output_names))
    try:
        yield
    finally:
        _converting.reset(token)


def handler_keys(*classes: type) -> tuple[str, ...]:
    """Registry keys for layer classes, the way hls4ml looks them up."""
    return tuple(f"{cls.__module__}.{cls.__name__}" for cls in classes)


class HGQLayerHandler(KerasV3LayerHandler):
    """Base of HGQ handlers: the layer's operations, then its output quantizer.

    Children implement ``operations``, returning the hls4ml layer dicts that compute
    the layer from ``inputs`` into the tensor named ``target``.
    """

    #: Whether the layer ends in a per-element output quantizer.
    quantizes_output: ClassVar[bool] = True

    def __call__(
        self,
        layer: QLayerBase,
        in_tensors: Sequence[KerasTensor],
        out_tensors: Sequence[KerasTensor],
    ) -> LayerDicts:
        if _converting.get() is None:
            raise RuntimeError(
                f"Layer '{layer.name}' is an HGQ layer: convert the model with "
                "HGQ.hls4ml_hook.convert_from_hgq_model, not hls4ml's "
                "convert_from_keras_model. It checks the model first and corrects hls4ml "
                "1.3 behaviours that a plain conversion would leave in the design "
                "(quantizers folded into one another, unsigned tensors that drop a sign's "
                "weight, tables laid out for another input type)."
            )
        inputs = [t.name for t in in_tensors]
        output = out_tensors[0].name
        if not self.quantizes_output:
            return tuple(self.operations(layer, in_tensors, out_tensors, inputs, output))
        pre = f"{output}_pre_q"
        steps = list(self.operations(layer, in_tensors, out_tensors, inputs, pre))
        quantizer = layer.pre_activation_quantizer
        source = pre if steps else inputs[0]
        steps.append(
            fixed_point_quantizer(
                f"{layer.name}_q",
                quantizer.exact_format(),
                quantizer_rounding(quantizer),
                source,
                output,
                overflow=quantizer.config["overflow_mode"],
            )
        )
        return tuple(steps)

    def operations(
        self,
        layer: QLayerBase,
        in_tensors: Sequence[KerasTensor],
        out_tensors: Sequence[KerasTensor],
        inputs: list[str],
        target: str,
    ) -> list[dict[str, Any]]:
        raise NotImplementedError


def activation_step(name: str, activation: str, source: str, target: str, n_in: int):
    return {
        "name": name,
        "class_name": "Activation",
        "activation": activation,
        "n_in": n_in,
        "input_keras_tensor_names": [source],
        "output_keras_tensor_names": [target],
    }


def linear_target(layer: HKernelLayer, target: str) -> str:
    """Where a kernel layer's linear result goes: ``target``, or before its ReLU."""
    return f"{target}_linear" if layer.activation_name == "relu" else target


def then_relu(layer: HKernelLayer, step: dict[str, Any], target: str, out_shape) -> LayerDicts:
    """``step`` (writing ``linear_target``), then the layer's ReLU into ``target`` if any."""
    if layer.activation_name != "relu":
        return (step,)
    linear, n_out = linear_target(layer, target), int(np.prod(out_shape))
    return step, activation_step(f"{layer.name}_relu", "relu", linear, target, n_out)


class HQuantizeHandler(HGQLayerHandler):
    """HQuantize is its output quantizer alone."""

    handles = handler_keys(HQuantize)

    def operations(self, layer, in_tensors, out_tensors, inputs, target):
        return []


class SignatureHandler(HGQLayerHandler):
    """Signature truncates and wraps its input to the declared formats."""

    handles = handler_keys(Signature)
    quantizes_output = False

    def operations(self, layer, in_tensors, out_tensors, inputs, target):
        return [fixed_point_quantizer(layer.name, layer.exact_format(), "TRN", inputs[0], target)]


class HDenseHandler(HGQLayerHandler):
    """HDense: hls4ml ``Dense`` with the quantized kernel and bias, then ReLU if any."""

    handles = handler_keys(HDense, HDenseBatchNorm)

    def operations(self, layer, in_tensors, out_tensors, inputs, target):
        kernel, bias = layer.deployed_weights()
        bias = bias if bias is not None else np.zeros(kernel.shape[-1])
        positions = element_shape(in_tensors[0])[:-1]
        if len(positions) > 2:
            raise ValueError(
                f"HDense '{layer.name}' acts on inputs of shape {tuple(in_tensors[0].shape)}; "
                "hls4ml converts it on inputs of rank 2 to 4 (batch, up to two position "
                "axes, features). PReshape the position axes into one before it."
            )
        if positions:  # one kernel for every position: a 1x1 (pointwise) convolution
            step = gen_conv_config(
                in_shape=tuple(element_shape(in_tensors[0])),
                out_shape=tuple(element_shape(out_tensors[0])),
                ker_px_shape=(1,) * len(positions),
                strides=(1,) * len(positions),
                padding="valid",
                data_format="channels_last",
                name=layer.name,
            )
            step.update(
                class_name=f"Conv{len(positions)}D",
                weight_data=kernel.reshape((1,) * len(positions) + kernel.shape),
                parallelization_factor=int(layer.parallel_factor),
            )
        else:
            step = {"class_name": "Dense", "n_in": kernel.shape[0], "n_out": kernel.shape[1]}
            step.update(weight_data=kernel)
        step.update(
            name=layer.name,
            data_format="channels_last",
            bias_data=bias,
            use_bias=True,
            input_keras_tensor_names=inputs,
            output_keras_tensor_names=[linear_target(layer, target)],
        )
        return then_relu(layer, step, target, element_shape(out_tensors[0]))


class HEinsumDenseHandler(HGQLayerHandler):
    """HEinsumDense: hls4ml ``EinsumDense`` (one bias per output element), then ReLU if any."""

    handles = handler_keys(HEinsumDense)

    def operations(self, layer, in_tensors, out_tensors, inputs, target):
        kernel, bias = layer.deployed_weights()
        out_shape = tuple(element_shape(out_tensors[0]))
        step = {
            "name": layer.name,
            "class_name": "EinsumDense",
            "equation": without_batch(layer.equation),
            "weight_data": kernel,
            "bias_data": bias if bias is not None else np.zeros(out_shape),
            "inp_shape": tuple(element_shape(in_tensors[0])),
            "out_shape": out_shape,
            "parallelization_factor": int(layer.parallel_factor),
            "input_keras_tensor_names": inputs,
            "output_keras_tensor_names": [linear_target(layer, target)],
        }
        return then_relu(layer, step, target, out_shape)


class HEinsumHandler(HGQLayerHandler):
    """HEinsum: hls4ml ``Einsum`` of the two inputs (widths from the bit-exact pass)."""

    handles = handler_keys(HEinsum)

    def operations(self, layer, in_tensors, out_tensors, inputs, target):
        return [
            {
                "name": layer.name,
                "class_name": "Einsum",
                "equation": layer.per_sample_equation,
                "inp0_shape": tuple(element_shape(in_tensors[0])),
                "inp1_shape": tuple(element_shape(in_tensors[1])),
                "out_shape": tuple(element_shape(out_tensors[0])),
                "input_keras_tensor_names": inputs,
                "output_keras_tensor_names": [target],
            }
        ]


class HActivationHandler(HGQLayerHandler):
    """HActivation: linear and ReLU directly; other functions as a lookup table.

    The table (an hls4ml ``UnaryLUT``) is indexed by the raw bits of the input, so
    it holds the Keras function's float32 result for every representable input.
    Its entries are truncated to one fractional bit more than the finest output
    format: truncating there and then rounding half up per element gives exactly
    what rounding the float result directly gives, so the table is exact.
    """

    handles = handler_keys(HActivation)

    def operations(self, layer, in_tensors, out_tensors, inputs, target):
        from HGQ.hls4ml_hook.lookup_table import lookup_table_step

        name = keras.activations.serialize(layer.activation)
        name = name if isinstance(name, str) else getattr(layer.activation, "__name__", "")
        n_in = int(np.prod(in_tensors[0].shape[1:]))
        if name == "linear":
            return []
        if name == "relu":
            return [activation_step(f"{layer.name}_relu", "relu", inputs[0], target, n_in)]
        return [lookup_table_step(layer, inputs[0], target, n_in)]


def element_shape(tensor: KerasTensor) -> list[int]:
    return [int(d) for d in tensor.shape[1:]]


def window_geometry(layer, in_tensors, out_tensors, window) -> dict[str, Any]:
    """hls4ml's sizes and padding of a sliding window (convolution or pool), channels last."""
    return gen_conv_config(
        in_shape=tuple(element_shape(in_tensors[0])),
        out_shape=tuple(element_shape(out_tensors[0])),
        ker_px_shape=tuple(window),
        strides=tuple(layer.strides),
        padding=layer.padding,
        data_format="channels_last",
        name=layer.name,
    )


class HConvHandler(HGQLayerHandler):
    """HConv1D/2D (and the fused BatchNorm variants): hls4ml ``Conv1D``/``Conv2D``."""

    handles = handler_keys(HConv1D, HConv2D, HConv1DBatchNorm, HConv2DBatchNorm)

    def operations(self, layer, in_tensors, out_tensors, inputs, target):
        kernel, bias = layer.deployed_weights()
        rank = len(layer.kernel_size)
        config = window_geometry(layer, in_tensors, out_tensors, layer.kernel_size)
        config.update(
            name=layer.name,
            class_name=f"Conv{rank}D",
            data_format="channels_last",
            weight_data=kernel,
            bias_data=bias if bias is not None else np.zeros(kernel.shape[-1]),
            use_bias=True,
            parallelization_factor=int(layer.parallel_factor),
            input_keras_tensor_names=inputs,
            output_keras_tensor_names=[linear_target(layer, target)],
        )
        return then_relu(layer, config, target, element_shape(out_tensors[0]))


def chained(name: str, inputs: list[str], target: str, make_step) -> list[dict[str, Any]]:
    """hls4ml merges two tensors at a time: chain ``make_step`` over more inputs."""
    steps = []
    current = inputs[0]
    for n, other in enumerate(inputs[1:], start=1):
        out = target if n == len(inputs) - 1 else f"{target}_partial{n}"
        step_name = name if n == len(inputs) - 1 else f"{name}_partial{n}"
        steps.append(make_step(step_name, [current, other], out))
        current = out
    return steps


class HMergeHandler(HGQLayerHandler):
    """HAdd, HSubtract, HMultiply: hls4ml ``Merge`` steps, two inputs at a time (widths
    from the bit-exact pass), then the layer's quantizer."""

    handles = handler_keys(HAdd, HSubtract, HMultiply)

    def operations(self, layer, in_tensors, out_tensors, inputs, target):
        op = {HAdd: "add", HSubtract: "subtract", HMultiply: "multiply"}[type(layer)]
        shape = element_shape(out_tensors[0])

        def merge(name: str, pair: list[str], out: str) -> dict[str, Any]:
            return merge_step(name, op, shape, pair, out)

        return chained(layer.name, inputs, target, merge)


class PassiveLayerHandler(HGQLayerHandler):
    """Passive layers only move values: no output quantizer of their own."""

    quantizes_output = False


class PConcatenateHandler(PassiveLayerHandler):
    """PConcatenate: hls4ml ``Concatenate`` steps, two inputs at a time.

    The axis is passed negative: hls4ml's layer and C++ templates read a positive axis
    as counting the batch, but its bit-exact pass indexes arrays without the batch
    axis with it (a positive axis fails there); negative axes mean the same to all.
    """

    handles = handler_keys(PConcatenate)

    def operations(self, layer, in_tensors, out_tensors, inputs, target):
        rank = len(element_shape(out_tensors[0]))
        axis = layer.axis % (rank + 1) - (rank + 1)

        def concatenate(name, pair, out):
            return {
                "name": name,
                "class_name": "Concatenate",
                "op": f"concatenate{rank}d",
                "axis": axis,
                "input_keras_tensor_names": pair,
                "output_keras_tensor_names": [out],
            }

        return chained(layer.name, inputs, target, concatenate)


def identity_step(layer: QLayerBase, source: str, target: str) -> dict[str, Any]:
    """A quantizer to the formats ``layer`` outputs: the identity on its values.

    Passive layers use it where hls4ml would remove their own step from the graph
    (a final Reshape, a linear activation), which fails when the input tensor is a
    model output too; a cast is wiring in hardware.
    """
    return fixed_point_quantizer(
        f"{layer.name}_identity", layer.exact_output_format(), "TRN", source, target
    )


class PReshapeHandler(PassiveLayerHandler):
    """PFlatten and PReshape: hls4ml ``Reshape`` (free in hardware).

    hls4ml removes a Reshape that ends the graph; when the reshaped tensor is a model
    output, an identity quantizer follows it so that removal cannot merge two outputs.
    """

    handles = handler_keys(PFlatten, PReshape)

    def operations(self, layer, in_tensors, out_tensors, inputs, target):
        is_output = target in _converting.get()
        reshaped = f"{target}_reshaped" if is_output else target
        steps = [reshape_step(layer.name, element_shape(out_tensors[0]), inputs[0], reshaped)]
        if is_output:
            steps.append(identity_step(layer, reshaped, target))
        return steps


class PPermuteHandler(PassiveLayerHandler):
    """PPermute: hls4ml ``Transpose``, then an identity quantizer.

    hls4ml's ``RemoveTransposeBeforeFlatten`` takes a Transpose -> flatten -> Dense
    chain for a channels-last conversion and folds one fixed permutation into the
    Dense weights, whatever the Transpose's own: an identity permutation, or most
    3-axis ones, then computed another layer (960 of 1024 outputs). The quantizer
    (see ``identity_step``) breaks that chain.

    The Transpose gets its own name: hls4ml keeps a layer's output variable among its
    attributes under the layer's name, so a PPermute named ``perm`` overwrote the
    Transpose's ``perm`` attribute and the conversion crashed.
    """

    handles = handler_keys(PPermute)

    def operations(self, layer, in_tensors, out_tensors, inputs, target):
        transposed = f"{target}_transposed"
        return [
            {
                "name": f"{layer.name}_transpose",
                "class_name": "Transpose",
                "perm": [int(d) - 1 for d in layer.dims],
                "input_keras_tensor_names": inputs,
                "output_keras_tensor_names": [transposed],
            },
            identity_step(layer, transposed, target),
        ]


class PDropoutHandler(PassiveLayerHandler):
    """PDropout is the identity at inference: an identity quantizer (see ``identity_step``)."""

    handles = handler_keys(PDropout)

    def operations(self, layer, in_tensors, out_tensors, inputs, target):
        return [identity_step(layer, inputs[0], target)]


def pool_step(layer, in_shape, out_shape, inputs: list[str], output: str) -> dict[str, Any]:
    """An hls4ml ``Pooling1D``/``Pooling2D`` step of ``layer``'s window on these shapes."""
    window = (tuple(layer.pool_size), tuple(layer.strides), layer.padding)
    return pooling(layer.name, layer.kind, window, in_shape, out_shape, inputs, output)


def pooling(
    name: str, kind: str, window: tuple, in_shape, out_shape, inputs: list[str], output: str
) -> dict[str, Any]:
    """An hls4ml ``Pooling1D``/``Pooling2D`` step; ``window`` is (pool size, strides, padding)."""
    pool_size, strides, padding = window
    rank = len(pool_size)
    op = "Max" if kind == "max" else "Average"
    config = gen_conv_config(
        in_shape=tuple(in_shape),
        out_shape=tuple(out_shape),
        ker_px_shape=tuple(pool_size),
        strides=tuple(strides),
        padding=padding,
        data_format="channels_last",
        name=name,
    )
    config["pool_width"] = config.pop("filt_width")
    if rank == 2:
        config["pool_height"] = config.pop("filt_height")
    else:
        config["n_in"] = config["in_width"]
        config["n_out"] = config["out_width"]
    config.update(
        name=name,
        class_name=f"{op}Pooling{rank}D",
        data_format="channels_last",
        input_keras_tensor_names=inputs,
        output_keras_tensor_names=[output],
    )
    return config


class PPoolHandler(PassiveLayerHandler):
    """Max and average pools: hls4ml ``Pooling1D``/``Pooling2D``."""

    handles = handler_keys(PMaxPool1D, PMaxPool2D, PAvgPool1D, PAvgPool2D)

    def operations(self, layer, in_tensors, out_tensors, inputs, target):
        in_shape, out_shape = element_shape(in_tensors[0]), element_shape(out_tensors[0])
        return [pool_step(layer, in_shape, out_shape, inputs, target)]


class PGlobalPoolHandler(PassiveLayerHandler):
    """Global pools: a pool over the whole spatial extent, then (unless ``keepdims``) a
    Reshape to the channels. Both are paths already exact for the windowed pools."""

    handles = handler_keys(PGlobalMaxPool1D, PGlobalMaxPool2D, PGlobalAvgPool1D, PGlobalAvgPool2D)

    def operations(self, layer, in_tensors, out_tensors, inputs, target):
        in_shape = element_shape(in_tensors[0])
        pooled_shape = [1] * len(layer.pool_size) + in_shape[-1:]
        if layer.keepdims:
            return [pool_step(layer, in_shape, pooled_shape, inputs, target)]
        is_output = target in _converting.get()
        pooled, reshaped = f"{target}_pooled", f"{target}_reshaped" if is_output else target
        steps = [
            pool_step(layer, in_shape, pooled_shape, inputs, pooled),
            reshape_step(f"{layer.name}_reshape", in_shape[-1:], pooled, reshaped),
        ]
        if is_output:
            steps.append(identity_step(layer, reshaped, target))
        return steps


def ones_einsum(name: str, equation: str, kernel_shape, in_shape, out_shape, source, target):
    """An hls4ml ``EinsumDense`` with a kernel of ones: a sum or a broadcast along the
    last axis (multiplying by 1 is exact, and hls4ml sizes the sum's type)."""
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


class HSoftmaxHandler(HGQLayerHandler):
    """HSoftmax as hls4ml layers that are exact on our formats: the row maximum (a max
    pool over the row), its broadcast and subtraction, the exponential's table and
    quantizer, the row sum, the reciprocal's table and quantizer, its broadcast, the
    product (``Merge``), then the output quantizer. hls4ml's own ``Softmax`` is not used:
    it is not bit-exact (hls4ml issue 1523)."""

    handles = handler_keys(HSoftmax)

    def operations(self, layer, in_tensors, out_tensors, inputs, target):
        from HGQ.hls4ml_hook.lookup_table import table_step

        shape = element_shape(in_tensors[0])
        n, rows = shape[-1], int(np.prod(shape[:-1]))
        reduced = shape[:-1] + [1]
        prefix = "bcdefgh"[: len(shape) - 1]
        along = f"{prefix}y,yz->{prefix}z"  # sums (..., n) -> (..., 1), broadcasts back

        def step(suffix: str) -> str:
            return f"{layer.name}_{suffix}"

        def t(suffix: str) -> str:  # an intermediate tensor
            return f"{target}_{suffix}"

        diff_kif = difference_format(union_format(layer.input_source().exact_output_format()))
        f_exp = int(np.max(layer.exp_quantizer.rounded_fractional_bits()))
        sum_kif = (0, 1 + int(np.ceil(np.log2(n))), f_exp)  # n values in [0, 1]
        exp_format = layer.exp_quantizer.exact_format()
        inv_format = layer.inv_quantizer.exact_format()
        # The tables hold their function truncated below the finest format, so the
        # quantizer's own rounding (half up, or floor) finishes each entry exactly.
        exp_rounding = quantizer_rounding(layer.exp_quantizer)
        inv_rounding = quantizer_rounding(layer.inv_quantizer)
        return [
            reshape_step(step("rows"), [rows, n, 1], inputs[0], t("rows")),
            row_max_pool(step("max"), rows, n, t("rows"), t("max_pooled")),
            reshape_step(step("max_rows"), reduced, t("max_pooled"), t("max")),
            ones_einsum(step("max_b"), along, (1, n), reduced, shape, t("max"), t("max_b")),
            merge_step(step("diff"), "subtract", shape, [inputs[0], t("max_b")], t("diff")),
            table_step(layer, "exp", diff_kif, t("diff"), t("exp_raw"), rows * n),
            fixed_point_quantizer(step("exp_q"), exp_format, exp_rounding, t("exp_raw"), t("exp")),
            ones_einsum(step("sum"), along, (n, 1), shape, reduced, t("exp"), t("sum")),
            table_step(layer, "inv", sum_kif, t("sum"), t("inv_raw"), rows),
            fixed_point_quantizer(step("inv_q"), inv_format, inv_rounding, t("inv_raw"), t("inv")),
            ones_einsum(step("inv_b"), along, (1, n), reduced, shape, t("inv"), t("inv_b")),
            merge_step(step("product"), "multiply", shape, [t("exp"), t("inv_b")], target),
        ]


def row_max_pool(name: str, rows: int, n: int, source: str, target: str) -> dict[str, Any]:
    """The maximum of each row of a ``(rows, n, 1)`` tensor: a ``(1, n)`` max pool."""
    window = ((1, n), (1, n), "valid")
    return pooling(name, "max", window, (rows, n, 1), (rows, 1, 1), [source], target)


def reshape_step(name: str, shape, source: str, target: str) -> dict[str, Any]:
    return {
        "name": name,
        "class_name": "Reshape",
        "target_shape": list(shape),
        "input_keras_tensor_names": [source],
        "output_keras_tensor_names": [target],
    }


def merge_step(name: str, op: str, shape, pair: list[str], target: str) -> dict[str, Any]:
    return {
        "name": name,
        "class_name": "Merge",
        "op": op,
        "output_shape": list(shape),
        "input_keras_tensor_names": pair,
        "output_keras_tensor_names": [target],
    }


class _Tensor(NamedTuple):
    """What a handler reads of a tensor: its name and shape (batch axis first)."""

    name: str
    shape: tuple[int | None, ...]


class HMultiHeadAttentionHandler(PassiveLayerHandler):
    """HMultiHeadAttention: the steps of its parts (projections, ``HEinsum`` products,
    ``HSoftmax``), each from the part's own handler, chained by made-up tensor names."""

    handles = handler_keys(HMultiHeadAttention)

    def operations(self, layer, in_tensors, out_tensors, inputs, target):
        query, value = in_tensors[0], in_tensors[1]
        key = in_tensors[2] if len(in_tensors) > 2 else value

        steps = []

        def run(part: QLayerBase, sources: list[Any], output: _Tensor) -> _Tensor:
            handler = HANDLER_OF[type(part)]()
            steps.extend(handler(part, sources, [output]))
            return output

        named = {
            part.name: _Tensor(f"{target}_{part.name}", shape)
            for part, shape in layer.part_output_shapes().items()
        }
        named[layer.output_dense.name] = named[layer.output_dense.name]._replace(name=target)
        q = run(layer.query_dense, [query], named[layer.query_dense.name])
        k = run(layer.key_dense, [key], named[layer.key_dense.name])
        v = run(layer.value_dense, [value], named[layer.value_dense.name])
        scores = run(layer.scores, [k, q], named[layer.scores.name])
        weights = run(layer.softmax, [scores], named[layer.softmax.name])
        context = run(layer.context, [weights, v], named[layer.context.name])
        run(layer.output_dense, [context], named[layer.output_dense.name])
        return steps


#: The handler of each part of a composite layer.
HANDLER_OF: dict[type, type[HGQLayerHandler]] = {
    HEinsumDense: HEinsumDenseHandler,
    HEinsum: HEinsumHandler,
    HSoftmax: HSoftmaxHandler,
}
