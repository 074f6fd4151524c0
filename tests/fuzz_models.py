"""Random HGQ architectures and the conversion check they must pass (the fuzzer).

Hand-written conversion tests cover the layer kinds one model at a time; the bugs
that survive them sit in combinations nobody wrote down (a quantizer that is also a
model output, a concatenation along a negative axis after a permute, a layer whose
every bitwidth is 0, ...). This module draws small random models from the public
layers only, with random quantizer configurations, trains them briefly, calibrates,
converts them with hls4ml and demands that every output of the C simulation equals
Keras's bit for bit, on data inside and far outside the calibrated range, on exact
half-LSB ties of the input grid and on zeros; a ``.keras`` save/load round trip must
predict the same bits too.

Everything about a case follows from its integer seed, so a failure found in a long
run is re-run alone with ``bench/fuzz.py --case SEED``. The outcome of a case is one
of ``OUTCOMES``: ``'refused'`` is a documented error of the library (a
ValueError/TypeError/RuntimeError raised by HGQ's own code up to conversion), which
is a correct answer; ``'warned'`` is a difference the conversion announced (an
accumulator wider than float32's 24 exact bits, which Keras cannot emulate; the
SPEC's documented limit), counted apart so it is never mistaken for an exact case;
``'mismatch'`` and ``'crash'`` are bugs (or generator defects).

Used by ``tests/test_fuzz.py`` and ``bench/fuzz.py``.
"""

from __future__ import annotations

import contextlib
import dis
import math
import os
import re
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# isort: off
import HGQ  # selects the Keras backend: must precede keras
import keras

# isort: on
import numpy as np

from HGQ import (
    HActivation,
    HAdd,
    HConv1D,
    HConv1DBatchNorm,
    HConv2D,
    HConv2DBatchNorm,
    HDense,
    HDenseBatchNorm,
    HEinsumDense,
    HMultiHeadAttention,
    HMultiply,
    HQuantize,
    HSoftmax,
    HSubtract,
    PAvgPool1D,
    PAvgPool2D,
    PConcatenate,
    PDropout,
    PFlatten,
    PGlobalAvgPool1D,
    PGlobalAvgPool2D,
    PGlobalMaxPool1D,
    PGlobalMaxPool2D,
    PMaxPool1D,
    PMaxPool2D,
    PPermute,
    PReshape,
    Signature,
)
from HGQ.bops import ResetMinMax, compute_bops
from HGQ.config import (
    OVERFLOW_MODES,
    RND_STRATEGIES,
    reset_default_quantizer_configs,
    set_default_kernel_quantizer_config,
    set_default_pre_activation_quantizer_config,
)
from HGQ.layers import HBaseLayer

OUTCOMES = ("exact", "refused", "warned", "mismatch", "crash")

#: The start of the conversion's warning that Keras may differ from the firmware.
FLOAT32_RANGE_WARNING = "bits wide, more than float32's"

#: Every layer class the generator draws from; the self-test checks all occur.
LAYER_CLASSES: tuple[type, ...] = (
    HMultiHeadAttention,
    HEinsumDense,
    HSoftmax,
    HMultiply,
    HSubtract,
    HQuantize,
    Signature,
    HDense,
    HDenseBatchNorm,
    HConv1D,
    HConv1DBatchNorm,
    HConv2D,
    HConv2DBatchNorm,
    HActivation,
    HAdd,
    PConcatenate,
    PFlatten,
    PReshape,
    PPermute,
    PDropout,
    PMaxPool1D,
    PMaxPool2D,
    PAvgPool1D,
    PAvgPool2D,
    PGlobalMaxPool1D,
    PGlobalMaxPool2D,
    PGlobalAvgPool1D,
    # PGlobalAvgPool2D needs a power-of-two area, rare in random shapes: it is drawn
    # when one comes up, and test_global_pooling converts it on purpose.
)

#: Structural features the self-test expects to see over a few dozen seeds.
STRUCTURE_FEATURES = (
    "sequential",
    "functional",
    "multi_input",
    "multi_output",
    "fan_out",
    "quantizer_output",
    "signature_output",
    "inp_q_name",
    "plain_quantize_name",
    "add3",
    "concat_positive_axis",
    "concat_negative_axis",
    "reshape_same_shape",
    "zero_width_layer",
    "zero_width_some",
    "nested_model",
    "dense_on_positions",
    "einsum_dense",
    "inner_quantizer_settings",
    "global_defaults",
    "dtype_policy",
    "wide_data",
)

#: Element-wise Keras activations (softmax-like ones are refused by design; not drawn).
ELEMENTWISE_ACTIVATIONS = (
    "linear",
    "relu",
    "tanh",
    "sigmoid",
    "hard_tanh",
    "hard_sigmoid",
    "softsign",
    "softplus",
    "elu",
    "selu",
    "silu",
    "gelu",
    "relu6",
    "leaky_relu",
    "mish",
    "log_sigmoid",
)

SKIP_DIMS_NAMES = (None, "all", "batch", "none", "except_last", "except_1st")
BW_CLIPS = ((-23, 23), (-8, 12), (0, 8), (-4, 4), (2, 6))
#: HSoftmax's quantizers keep 0 <= f <= 11.
SOFTMAX_BW_CLIPS = ((0, 11), (0, 8), (0, 4), (2, 6), (0, 0))
#: Keras dtype policies a case may be built under (HGQ layers compute in float32).
DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16", "bfloat16")

#: Largest tensor (elements per sample) a layer may produce: g++ time grows with size.
MAX_ELEMENTS = 128
#: Fractional bits that make every element of a quantizer 0 bits wide.
ZERO_WIDTH_FRACTIONAL_BITS = -24.0


# --------------------------------------------------------------------- the case
@dataclass
class Case:
    """One random model and everything its run needs, all derived from ``seed``."""

    seed: int
    model: keras.Model
    #: Layer right after each model input (HQuantize or Signature), in input order:
    #: its calibrated formats define the half-LSB ties.
    front_layers: list[keras.layers.Layer]
    x: list[np.ndarray]
    y: list[np.ndarray]
    learning_rate: float
    epochs: int
    #: (layer name, 'output' or 'kernel', 'all' or 'some'): fractional bits forced very
    #: negative after training, so those elements (or the whole layer) get width 0.
    zero_width: list[tuple[str, str, str]]
    features: set[str] = field(default_factory=set)

    def describe(self) -> str:
        """A one-paragraph summary for verbose re-runs."""
        shapes = [tuple(a.shape[1:]) for a in self.x]
        return (
            f"seed {self.seed}: {type(self.model).__name__} with {len(self.model.layers)} "
            f"layers, input shapes {shapes}, {len(self.model.outputs)} output(s), "
            f"lr {self.learning_rate:.3g}, {self.epochs} epoch(s), zero-width "
            f"{self.zero_width or 'none'}; features {sorted(self.features)}"
        )


@dataclass
class _Node:
    """A tensor of the graph being built (``tensor`` is None in Sequential mode).

    ``layer`` made it; None for a model input.
    """

    tensor: Any
    shape: tuple[int, ...]
    layer: keras.layers.Layer | None
    consumers: int = 0

    @property
    def size(self) -> int:
        return math.prod(self.shape)


# ----------------------------------------------------------- random configs
def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _skip_dims(rng: np.random.Generator, rank: int) -> Any:
    """A named form, or a tuple of one or two axes (sometimes negative) of a ``rank`` tensor."""
    if rng.random() < 0.6:
        return SKIP_DIMS_NAMES[rng.integers(len(SKIP_DIMS_NAMES))]
    count = int(rng.integers(1, min(2, rank) + 1))
    axes = rng.choice(rank, size=count, replace=False)
    return tuple(int(a) - rank if rng.random() < 0.3 else int(a) for a in sorted(axes))


def quantizer_config(
    rng: np.random.Generator, rank: int, overflow_rng: np.random.Generator | None = None
) -> dict[str, Any] | None:
    """A partial quantizer config (merged over the defaults) for a tensor of ``rank``.

    ``rank`` counts the batch axis for activations and not for kernels, as the
    quantizer does. Each key is present half the time, so defaults are tested too.
    Activations (``overflow_rng`` given) also draw an ``overflow_mode``, from that
    separate stream so the architectures of a seed stay those of earlier versions.
    """
    overflow = None
    if overflow_rng is not None and overflow_rng.random() < 0.5:
        overflow = OVERFLOW_MODES[overflow_rng.integers(len(OVERFLOW_MODES))]
    if rng.random() < 0.25:
        return None if overflow is None else {"overflow_mode": overflow}
    draws: dict[str, Callable[[], Any]] = {
        "init_bw": lambda: int(rng.integers(-1, 9)),
        "skip_dims": lambda: _skip_dims(rng, rank),
        "rnd_strategy": lambda: RND_STRATEGIES[rng.integers(len(RND_STRATEGIES))],
        "exact_q_value": lambda: bool(rng.random() < 0.5),
        "bw_clip": lambda: BW_CLIPS[rng.integers(len(BW_CLIPS))],
    }
    if overflow_rng is not None and overflow_rng.random() < 0.2:
        draws["trainable"] = lambda: False  # from the overflow stream: draws above unchanged
    config = {key: draw() for key, draw in draws.items() if rng.random() < 0.5}
    if overflow is not None:
        config["overflow_mode"] = overflow
    return config


def inner_quantizer_config(rng: np.random.Generator) -> dict[str, Any]:
    """An HSoftmax table quantizer's config (exponential, reciprocal or output): every
    setting a user can give it, within its documented limits (0 <= f <= 11)."""
    config: dict[str, Any] = {"init_bw": int(rng.integers(0, 12))}
    optional: dict[str, Callable[[], Any]] = {
        "rnd_strategy": lambda: RND_STRATEGIES[rng.integers(len(RND_STRATEGIES))],
        "overflow_mode": lambda: OVERFLOW_MODES[rng.integers(len(OVERFLOW_MODES))],
        "bw_clip": lambda: SOFTMAX_BW_CLIPS[rng.integers(len(SOFTMAX_BW_CLIPS))],
        "exact_q_value": lambda: bool(rng.random() < 0.5),
        "trainable": lambda: bool(rng.random() < 0.7),
    }
    config.update({key: draw() for key, draw in optional.items() if rng.random() < 0.5})
    return config


def global_defaults(rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
    """Random ``set_default_kernel/pre_activation_quantizer_config`` arguments (often
    empty): the defaults every layer built afterwards starts from."""
    kernel: dict[str, Any] = {}
    activation: dict[str, Any] = {}
    if rng.random() < 0.3:
        activation["rnd_strategy"] = RND_STRATEGIES[rng.integers(len(RND_STRATEGIES))]
    if rng.random() < 0.2:
        activation["overflow_mode"] = OVERFLOW_MODES[rng.integers(len(OVERFLOW_MODES))]
    if rng.random() < 0.2:
        kernel["rnd_strategy"] = RND_STRATEGIES[rng.integers(len(RND_STRATEGIES))]
    if rng.random() < 0.15:
        kernel["init_bw"] = int(rng.integers(1, 8))
    return kernel, activation


# -------------------------------------------------------------- the builder
class _Builder:
    """Grows a random graph layer by layer, tracking shapes and unused tensors.

    In Sequential mode layers are only collected (shapes come from
    ``compute_output_shape``) and the model is assembled at the end; in functional
    mode every layer is called on symbolic tensors as it is drawn.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        sequential: bool,
        bops_reg_factor: float,
        overflow_rng: np.random.Generator,
        position_rng: np.random.Generator,
    ):
        self.rng = rng
        self.overflow_rng = overflow_rng
        #: Its own stream: whether an HDense keeps the position axes, and its
        #: parallel_factor, so that the cases that flatten are as they always were.
        self.position_rng = position_rng
        #: Its own stream too: whether a step is a global pool (issue 14's layers).
        spawned = position_rng.bit_generator.seed_seq.spawn(1)[0]
        self.global_pool_rng = np.random.default_rng(spawned)
        #: And another: whether a Dense on positions is an HEinsumDense, and which.
        self.einsum_rng = np.random.default_rng(position_rng.bit_generator.seed_seq.spawn(1)[0])
        #: And one for HMultiHeadAttention in place of some HActivations.
        self.attention_rng = np.random.default_rng(position_rng.bit_generator.seed_seq.spawn(1)[0])
        #: And one for HSoftmax in place of an HActivation.
        self.softmax_rng = np.random.default_rng(position_rng.bit_generator.seed_seq.spawn(1)[0])
        #: And one for the settings of inner quantizers (HSoftmax's, attention's parts).
        self.inner_rng = np.random.default_rng(position_rng.bit_generator.seed_seq.spawn(1)[0])
        self.sequential = sequential
        self.bops_reg_factor = bops_reg_factor
        self.nodes: list[_Node] = []
        self.layers: list[keras.layers.Layer] = []
        self.features: set[str] = {"sequential" if sequential else "functional"}
        self.count = 0

    # ------------------------------------------------------------ plumbing
    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def h_kwargs(self, out_rank: int, kernel_rank: int | None = None) -> dict[str, Any]:
        """Name-independent keywords of an H-layer: configs and the EBOPs factor."""
        kwargs: dict[str, Any] = {
            "pre_activation_quantizer_config": quantizer_config(
                self.rng, out_rank + 1, self.overflow_rng
            ),
            "bops_reg_factor": self.bops_reg_factor if self.rng.random() < 0.8 else 0.0,
        }
        if kernel_rank is not None:
            kwargs["kernel_quantizer_config"] = quantizer_config(self.rng, kernel_rank)
        return kwargs

    def apply(self, layer: keras.layers.Layer, inputs: list[_Node]) -> _Node:
        """Connect ``layer`` to ``inputs`` (call it, or queue it in Sequential mode)."""
        for node in inputs:
            node.consumers += 1
            if node.consumers == 2:
                self.features.add("fan_out")
        self.features.add(type(layer).__name__)
        if self.sequential:
            shape = tuple(layer.compute_output_shape((None, *inputs[0].shape))[1:])
            self.layers.append(layer)
            node = _Node(None, shape, layer)
        else:
            args = [n.tensor for n in inputs]
            tensor = layer(args if len(args) > 1 else args[0])
            node = _Node(tensor, tuple(int(d) for d in tensor.shape[1:]), layer)
        self.nodes.append(node)
        return node

    def pick(self) -> _Node:
        """Mostly an unused tensor (a chain), sometimes a used one (fan-out)."""
        leaves = [n for n in self.nodes if n.consumers == 0]
        pool = leaves if leaves and (self.sequential or self.rng.random() < 0.75) else self.nodes
        return pool[int(self.rng.integers(len(pool)))]

    # ------------------------------------------------------------- inputs
    def random_shape(self) -> tuple[int, ...]:
        rank = int(self.rng.choice([1, 2, 3], p=[0.3, 0.3, 0.4]))
        if rank == 1:
            return (int(self.rng.integers(2, 17)),)
        if rank == 2:
            return (int(self.rng.integers(3, 11)), int(self.rng.integers(1, 5)))
        return (
            int(self.rng.integers(3, 7)),
            int(self.rng.integers(3, 7)),
            int(self.rng.integers(1, 4)),
        )

    def front(self, shape: tuple[int, ...], index: int) -> tuple[Any, _Node]:
        """A model input and the HQuantize or Signature that must follow it."""
        inp = keras.Input(shape, name=f"in_{index}")
        if self.rng.random() < 0.7:
            if self.rng.random() < 0.6:
                name = f"inp_q_{index}"
                self.features.add("inp_q_name")
            else:
                name = f"quant_{index}"
                self.features.add("plain_quantize_name")
            layer = HQuantize(
                name=name,
                pre_activation_quantizer_config=quantizer_config(
                    self.rng, len(shape) + 1, self.overflow_rng
                ),
                bops_reg_factor=self.bops_reg_factor,
            )
        else:
            layer = self.signature(shape, f"sig_{index}")
        source = _Node(inp, shape, None)
        return inp, self.apply(layer, [source])

    def signature(self, shape: tuple[int, ...], name: str) -> Signature:
        """Per-element (or scalar) random formats, including 0-bit elements."""
        per_element = self.rng.random() < 0.6
        size = shape if per_element else ()
        keep_negative = self.rng.integers(0, 2, size=size)
        bits = self.rng.integers(0, 9, size=size)
        int_bits = self.rng.integers(-2, 5, size=size)
        if per_element:
            return Signature(keep_negative.tolist(), bits.tolist(), int_bits.tolist(), name=name)
        return Signature(int(keep_negative), int(bits), int(int_bits), name=name)

    # ---------------------------------------------------------- one-input ops
    def dense(self, node: _Node, units: int | None = None) -> _Node:
        """HDense (maybe fused with BatchNorm): on the last axis of a rank-2/3 tensor
        (one kernel for every position) or on the flattened tensor."""
        keep = 1 < len(node.shape) <= 3 and self.position_rng.random() < 0.4
        parallel_factor = 1
        if keep:  # the default (one instance per position) or one instance, reused
            parallel_factor = None if self.position_rng.random() < 0.3 else 1
            self.features.add("dense_on_positions")
        elif len(node.shape) > 1:
            node = self.apply(PFlatten(name=self.name("flatten")), [node])
        cls = HDenseBatchNorm if self.rng.random() < 0.3 else HDense
        units = units if units is not None else int(self.rng.integers(1, 13))
        activation = "relu" if self.rng.random() < 0.5 else "linear"
        use_bias = bool(self.rng.random() < 0.7)
        if keep and self.einsum_rng.random() < 0.6:
            return self.einsum_dense(node, units, activation, use_bias)
        layer = cls(
            units,
            activation=activation,
            use_bias=use_bias,
            name=self.name(cls.__name__.lower()),
            parallel_factor=parallel_factor,
            **self.h_kwargs(len(node.shape), kernel_rank=2),
        )
        return self.apply(layer, [node])

    def einsum_dense(self, node: _Node, units: int, activation: str, use_bias: bool) -> _Node:
        """HEinsumDense with a 2-D kernel on a rank-2/3 tensor: over the features, over a
        position axis (an MLP-Mixer's token mixing), or written with ``...``."""
        shape = node.shape
        # (equation, Keras output_shape, index of the contracted input axis)
        if len(shape) == 2:
            choices = [
                ("abc,cd->abd", (shape[0], units), 1),
                ("abc,bd->adc", (units, shape[1]), 0),
                ("...c,cd->...d", (units,), 1),
            ]
        else:
            choices = [
                ("abcd,de->abce", (shape[0], shape[1], units), 2),
                ("abcd,ce->abed", (shape[0], units, shape[2]), 1),
                ("...c,cd->...d", (units,), 2),
            ]
        equation, output_shape, _ = choices[int(self.einsum_rng.integers(len(choices)))]
        bias_axes = None
        if use_bias:
            letters = equation.split("->")[1].replace("...", "")[-len(output_shape) :]
            bias_axes = letters[-1] if self.einsum_rng.random() < 0.5 else letters[-2:]
        self.features.add("einsum_dense")
        layer = HEinsumDense(
            equation,
            output_shape,
            activation=activation,
            bias_axes=bias_axes,
            parallel_factor=None if self.einsum_rng.random() < 0.3 else 1,
            name=self.name("heinsumdense"),
            **self.h_kwargs(len(shape), kernel_rank=2),
        )
        return self.apply(layer, [node])

    def conv(self, node: _Node, filters: int | None = None, keep_spatial: bool = False) -> _Node:
        """HConv1D/2D (maybe fused with BatchNorm) on a rank-2/3 tensor."""
        rank = len(node.shape) - 1
        spatial = node.shape[:-1]
        if keep_spatial:
            padding, strides = "same", 1
        else:
            padding = "same" if self.rng.random() < 0.5 else "valid"
            strides = int(self.rng.integers(1, 3))
        kernel = tuple(int(self.rng.integers(1, 4)) for _ in range(rank))
        if padding == "valid":
            kernel = tuple(min(k, s) for k, s in zip(kernel, spatial, strict=True))
        out_positions = math.prod(
            -(-s // strides) if padding == "same" else (s - k) // strides + 1
            for s, k in zip(spatial, kernel, strict=True)
        )
        if filters is None:
            filters = int(self.rng.integers(1, max(2, min(7, MAX_ELEMENTS // out_positions + 1))))
        fused = self.rng.random() < 0.4
        cls = {(1, False): HConv1D, (1, True): HConv1DBatchNorm}.get(
            (rank, fused), HConv2DBatchNorm if fused else HConv2D
        )
        layer = cls(
            filters,
            kernel if rank == 2 else kernel[0],
            strides=strides,
            padding=padding,
            activation="relu" if self.rng.random() < 0.5 else "linear",
            use_bias=bool(self.rng.random() < 0.7),
            name=self.name(cls.__name__.lower()),
            **self.h_kwargs(rank + 1, kernel_rank=rank + 2),
        )
        return self.apply(layer, [node])

    def activation(self, node: _Node) -> _Node:
        act = ELEMENTWISE_ACTIVATIONS[self.rng.integers(len(ELEMENTWISE_ACTIVATIONS))]
        kwargs = self.h_kwargs(len(node.shape))
        if node.shape[-1] > 1 and self.softmax_rng.random() < 0.2:
            return self.softmax(node, kwargs["bops_reg_factor"])
        if len(node.shape) == 2 and not self.sequential and self.attention_rng.random() < 0.3:
            return self.attention(node, use_bias=bool(self.attention_rng.random() < 0.7))
        layer = HActivation(act, name=self.name(f"act_{act}"), **kwargs)
        return self.apply(layer, [node])

    def attention(self, node: _Node, use_bias: bool) -> _Node:
        """Self-attention over the first axis of a rank-2 tensor (sequence, features);
        functional models only (it takes the tensor twice, as query and value)."""
        rng = self.attention_rng
        layer = HMultiHeadAttention(
            num_heads=int(rng.integers(1, 3)),
            key_dim=int(rng.integers(1, 5)),
            value_dim=int(rng.integers(1, 5)),
            output_shape=int(rng.integers(1, 6)),
            use_bias=use_bias,
            bops_reg_factor=self.bops_reg_factor,
            pre_activation_quantizer_config={
                "init_bw": int(rng.integers(0, 4)),
                **{  # skip_dims off: the parts' ranks differ
                    k: v
                    for k, v in (quantizer_config(self.inner_rng, 4, self.inner_rng) or {}).items()
                    if k != "skip_dims"
                },
            },
            kernel_quantizer_config=quantizer_config(self.inner_rng, 3),
            softmax_config={
                "exp_quantizer_config": {
                    "bw_clip": (0, 6),
                    **{
                        k: v
                        for k, v in inner_quantizer_config(self.inner_rng).items()
                        if k not in ("bw_clip", "init_bw")
                    },
                },
                "inv_quantizer_config": inner_quantizer_config(self.inner_rng),
                "pre_activation_quantizer_config": inner_quantizer_config(self.inner_rng),
            },
            name=self.name("hmha"),
        )
        self.features.add("inner_quantizer_settings")
        node.consumers += 1
        self.features.add("HMultiHeadAttention")
        tensor = layer(node.tensor, node.tensor)
        new = _Node(tensor, tuple(int(d) for d in tensor.shape[1:]), layer)
        self.nodes.append(new)
        return new

    def softmax(self, node: _Node, bops_reg_factor: float) -> _Node:
        """HSoftmax over the last axis, its three quantizers starting at 0-8 fractional bits."""

        def config() -> dict[str, Any]:
            base = {"init_bw": int(self.softmax_rng.integers(0, 9)), "bw_clip": (0, 8)}
            if self.inner_rng.random() < 0.7:
                base.update(inner_quantizer_config(self.inner_rng))
                self.features.add("inner_quantizer_settings")
            return base

        layer = HSoftmax(
            exp_quantizer_config=config(),
            inv_quantizer_config=config(),
            pre_activation_quantizer_config=config(),
            bops_reg_factor=bops_reg_factor,
            name=self.name("hsoftmax"),
        )
        return self.apply(layer, [node])

    def flatten(self, node: _Node) -> _Node:
        return self.apply(PFlatten(name=self.name("flatten")), [node])

    def reshape(self, node: _Node) -> _Node:
        if self.rng.random() < 0.25:
            target: tuple[int, ...] = node.shape
            self.features.add("reshape_same_shape")
        else:
            target = _factorise(node.size, int(self.rng.integers(1, 4)), self.rng)
            if len(target) > 1 and self.rng.random() < 0.3:
                hole = int(self.rng.integers(len(target)))
                target = tuple(-1 if i == hole else d for i, d in enumerate(target))
        return self.apply(PReshape(target, name=self.name("reshape")), [node])

    def permute(self, node: _Node) -> _Node:
        dims = tuple(int(d) + 1 for d in self.rng.permutation(len(node.shape)))
        return self.apply(PPermute(dims, name=self.name("permute")), [node])

    def dropout(self, node: _Node) -> _Node:
        rate = float(self.rng.choice([0.0, 0.1, 0.3, 0.5]))
        return self.apply(PDropout(rate, name=self.name("dropout")), [node])

    def pool(self, node: _Node) -> _Node:
        """Max or average pool over the spatial axes; average areas are powers of two."""
        rank = len(node.shape) - 1
        spatial = node.shape[:-1]
        average = self.rng.random() < 0.5
        choices = (1, 2, 4) if average else (1, 2, 3)
        pool = tuple(int(min(self.rng.choice(choices), s)) for s in spatial)
        if average:  # min() may have broken the power of two: round down to one
            pool = tuple(1 << (p.bit_length() - 1) for p in pool)
        strides = (
            None
            if self.rng.random() < 0.5
            else tuple(int(self.rng.integers(1, 3)) for _ in spatial)
        )
        step = strides or pool
        padding = "same" if self.rng.random() < 0.4 else "valid"
        pads = any(
            (-(-s // st) - 1) * st + p > s for s, p, st in zip(spatial, pool, step, strict=True)
        )
        if average and pads:
            padding = "valid"  # Keras would average border windows over other counts
        cls = {(1, False): PMaxPool1D, (1, True): PAvgPool1D, (2, False): PMaxPool2D}.get(
            (rank, average), PAvgPool2D
        )
        layer = cls(
            pool if rank == 2 else pool[0],
            strides=None if strides is None else (strides if rank == 2 else strides[0]),
            padding=padding,
            name=self.name(cls.__name__.lower()),
        )
        return self.apply(layer, [node])

    # --------------------------------------------------------- merging ops
    def same_shape_branch(self, node: _Node) -> _Node:
        """Another tensor of ``node``'s shape: an existing one, or a shape-keeping op on it."""
        others = [n for n in self.nodes if n is not node and n.shape == node.shape]
        roll = self.rng.random()
        if others and roll < 0.4:
            return others[int(self.rng.integers(len(others)))]
        if roll < 0.45:
            return node  # the same tensor twice
        rank = len(node.shape)
        choice = self.rng.integers(3)
        if choice == 0:
            return self.activation(node)
        if choice == 1 and rank == 1:
            return self.dense(node, units=node.shape[0])
        if choice == 1 and rank in (2, 3):
            return self.conv(node, filters=node.shape[-1], keep_spatial=True)
        return self.dropout(node)

    def add(self, node: _Node) -> _Node:
        count = 3 if self.rng.random() < 0.3 else 2
        branches = [node] + [self.same_shape_branch(node) for _ in range(count - 1)]
        if count == 3:
            self.features.add("add3")
        # Which merge, from the global-pool stream: the other draws stay as they were.
        roll = self.global_pool_rng.random()
        cls = HMultiply if roll < 0.25 else HSubtract if roll < 0.4 and count == 2 else HAdd
        layer = cls(name=self.name(cls.__name__[1:].lower()), **self.h_kwargs(len(node.shape)))
        return self.apply(layer, branches)

    def concatenate(self, node: _Node) -> _Node:
        """Join ``node`` with 1-2 tensors along a random axis, named positive or negative."""
        rank = len(node.shape)
        axis = int(self.rng.integers(1, rank + 1))  # 1-based, as Keras counts with the batch
        branches = [node]
        for _ in range(int(self.rng.integers(1, 3))):
            matching = [
                n
                for n in self.nodes
                if n is not node
                and len(n.shape) == rank
                and all(
                    a == b
                    for d, (a, b) in enumerate(zip(n.shape, node.shape, strict=True))
                    if d != axis - 1
                )
            ]
            if matching and self.rng.random() < 0.5:
                branches.append(matching[int(self.rng.integers(len(matching)))])
            elif axis == rank and rank == 1 and self.rng.random() < 0.5:
                branches.append(self.dense(node))
            elif axis == rank and rank in (2, 3) and self.rng.random() < 0.5:
                branches.append(self.conv(node, keep_spatial=True))
            else:
                branches.append(self.same_shape_branch(node))
        negative = self.rng.random() < 0.5
        self.features.add("concat_negative_axis" if negative else "concat_positive_axis")
        layer = PConcatenate(axis=axis - rank - 1 if negative else axis, name=self.name("concat"))
        return self.apply(layer, branches)

    # ----------------------------------------------------------- the graph
    def global_pool(self, node: _Node) -> _Node:
        """Global max or average pool over the positions of a rank-2/3 tensor (the
        average only over a power-of-two count, the one it can do exactly)."""
        positions = int(np.prod(node.shape[:-1]))
        average = positions & (positions - 1) == 0 and self.global_pool_rng.random() < 0.7
        rank = len(node.shape) - 1
        cls = {
            (1, False): PGlobalMaxPool1D,
            (1, True): PGlobalAvgPool1D,
            (2, False): PGlobalMaxPool2D,
        }.get((rank, average), PGlobalAvgPool2D)
        keepdims = bool(self.global_pool_rng.random() < 0.2)
        layer = cls(keepdims=keepdims, name=self.name(cls.__name__.lower()))
        return self.apply(layer, [node])

    def step(self) -> None:
        """Apply one random operation to a random tensor."""
        node = self.pick()
        rank = len(node.shape)
        ops: list[Callable[[_Node], _Node]] = [
            self.dense,
            self.activation,
            self.dropout,
            self.reshape,
        ]
        if rank >= 2:
            ops += [self.flatten, self.permute]
        if rank in (2, 3):
            ops += [self.conv, self.conv, self.pool, self.pool]
        if not self.sequential:
            ops.append(self.add)
            if 2 * node.size <= MAX_ELEMENTS:
                ops.append(self.concatenate)
        op = ops[int(self.rng.integers(len(ops)))]
        op(node)

    def finish(self) -> list[_Node]:
        """Model outputs: every unused tensor (merged down to at most three)."""
        leaves = [n for n in self.nodes if n.consumers == 0]
        for index, leaf in enumerate(leaves):  # Deep Sets' end: pool the positions away
            if len(leaf.shape) in (2, 3) and self.global_pool_rng.random() < 0.4:
                pooled = self.global_pool(leaf)
                if self.global_pool_rng.random() < 0.5:
                    pooled = self.dense(pooled)
                leaves[index] = pooled
        while len(leaves) > 3:
            a, b = leaves.pop(), leaves.pop()
            flat = [n if len(n.shape) == 1 else self.flatten(n) for n in (a, b)]
            leaves.append(self.concatenate_flat(flat))
        if not self.sequential and self.rng.random() < 0.3:
            used_fronts = [
                n for n in self.nodes if isinstance(n.layer, (HQuantize, Signature)) and n.consumers
            ]
            if used_fronts:
                leaves.append(used_fronts[int(self.rng.integers(len(used_fronts)))])
        for leaf in leaves:
            if isinstance(leaf.layer, HQuantize):
                self.features.add("quantizer_output")
            if isinstance(leaf.layer, Signature):
                self.features.add("signature_output")
        if len(leaves) > 1:
            self.features.add("multi_output")
        return leaves

    def concatenate_flat(self, nodes: list[_Node]) -> _Node:
        axis = -1 if self.rng.random() < 0.5 else 1
        self.features.add("concat_negative_axis" if axis < 0 else "concat_positive_axis")
        return self.apply(PConcatenate(axis=axis, name=self.name("concat")), nodes)


def _factorise(total: int, rank: int, rng: np.random.Generator) -> tuple[int, ...]:
    """A random shape of ``rank`` axes (or fewer) with ``total`` elements."""
    dims = []
    remaining = total
    for _ in range(rank - 1):
        divisors = [d for d in range(2, remaining) if remaining % d == 0]
        if not divisors:
            break
        d = int(rng.choice(divisors))
        dims.append(d)
        remaining //= d
    dims.append(remaining)
    return tuple(dims)


def _nested(inner: keras.Model, seed: int) -> keras.Model:
    """``inner`` used as a layer of an outer functional model, each output followed by
    a linear HActivation: conversion must inline it and follow lineage across it."""
    inputs = [keras.Input(t.shape[1:], name=f"outer_in_{i}") for i, t in enumerate(inner.inputs)]
    outputs = inner(inputs if len(inputs) > 1 else inputs[0])
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    outputs = [HActivation("linear", name=f"outer_act_{j}")(o) for j, o in enumerate(outputs)]
    return keras.Model(
        inputs if len(inputs) > 1 else inputs[0],
        outputs if len(outputs) > 1 else outputs[0],
        name=f"fuzz_{seed}_outer",
    )


def _layer_named(model: keras.Model, name: str) -> keras.layers.Layer:
    """The layer called ``name`` anywhere in ``model``, nested models included."""
    return next(layer for layer in model._flatten_layers(include_self=False) if layer.name == name)


def generate_case(seed: int) -> Case:
    """Build the random model of ``seed`` (untrained) with its data and training plan.

    The global quantizer defaults and the dtype policy it is built under are drawn from
    their own stream and restored afterwards.
    """
    settings = np.random.default_rng([seed, 7])
    kernel_defaults, activation_defaults = global_defaults(settings)
    policy = DTYPE_POLICIES[settings.integers(len(DTYPE_POLICIES))]
    if settings.random() < 0.75:
        policy = "float32"
    saved_policy = keras.config.dtype_policy()
    try:
        set_default_kernel_quantizer_config(kernel_defaults)
        set_default_pre_activation_quantizer_config(activation_defaults)
        keras.config.set_dtype_policy(policy)
        case = _generate_case(seed)
    finally:
        reset_default_quantizer_configs()
        keras.config.set_dtype_policy(saved_policy)
    if kernel_defaults or activation_defaults:
        case.features.add("global_defaults")
    if policy != "float32":
        case.features.add("dtype_policy")
    if settings.random() < 0.3:  # wide data: tens to thousands
        wide = float(10 ** settings.uniform(1, 3.5))
        case.x = [(x * wide).astype("float32") for x in case.x]
        case.features.add("wide_data")
    return case


def _generate_case(seed: int) -> Case:
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    sequential = rng.random() < 0.25
    bops_reg_factor = 0.0 if rng.random() < 0.2 else _log_uniform(rng, 1e-7, 1e-2)
    builder = _Builder(
        rng,
        sequential,
        bops_reg_factor,
        np.random.default_rng([seed, 3]),
        np.random.default_rng([seed, 6]),
    )

    n_inputs = 1 if sequential else int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    if n_inputs > 1:
        builder.features.add("multi_input")
    inputs, front_layers = [], []
    first_shape = builder.random_shape()
    for index in range(n_inputs):
        shape = first_shape if index == 0 or rng.random() < 0.5 else builder.random_shape()
        inp, node = builder.front(shape, index)
        inputs.append(inp)
        front_layers.append(node.layer)

    for _ in range(int(rng.integers(2, 7))):
        builder.step()
    outputs = builder.finish()

    if sequential:
        model: keras.Model = keras.Sequential([inputs[0], *builder.layers], name=f"fuzz_{seed}")
    else:
        model = keras.Model(
            inputs if n_inputs > 1 else inputs[0],
            [n.tensor for n in outputs] if len(outputs) > 1 else outputs[0].tensor,
            name=f"fuzz_{seed}",
        )

    # From its own stream, so that the architectures of all other seeds stay as they were.
    if not sequential and np.random.default_rng([seed, 5]).random() < 0.25:
        model = _nested(model, seed)
        builder.features.add("nested_model")

    n_samples = 256
    scale = 10 ** rng.uniform(-1, 1.5)
    x = [(rng.normal(size=(n_samples, *inp.shape[1:])) * scale).astype("float32") for inp in inputs]
    y = [rng.normal(size=(n_samples, *out.shape[1:])).astype("float32") for out in model.outputs]

    zero_width = []
    h_layers = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, HBaseLayer)
    ]
    if h_layers and rng.random() < 0.35:
        for _ in range(int(rng.integers(1, 3))):
            layer = h_layers[int(rng.integers(len(h_layers)))]
            which = "kernel" if hasattr(layer, "kernel") and rng.random() < 0.3 else "output"
            mode = "all" if rng.random() < 0.5 else "some"
            zero_width.append((layer.name, which, mode))
            builder.features.add("zero_width_layer" if mode == "all" else "zero_width_some")

    return Case(
        seed=seed,
        model=model,
        front_layers=front_layers,
        x=x,
        y=y,
        learning_rate=_log_uniform(rng, 1e-3, 1.0),
        epochs=int(rng.integers(1, 3)),
        zero_width=zero_width,
        features=builder.features,
    )


# ------------------------------------------------------------- running a case
@dataclass
class Result:
    """What happened to one case on each deployment path.

    ``outcome`` is the hls4ml path's (C simulation), ``rtl_outcome`` the RTL path's
    (alkaid's interpreter, and verilator where ``verilated``); a failure before
    conversion (build, train, calibrate) is both. ``first_line`` is the first line of
    the error, if any.
    """

    seed: int
    outcome: str
    stage: str = ""
    error_type: str = ""
    first_line: str = ""
    rtl_outcome: str = "exact"
    rtl_stage: str = ""
    rtl_error: str = ""
    verilated: bool = False
    #: The conversions' float32-range warnings (layers whose arithmetic is too wide).
    wide_layers: list[str] = field(default_factory=list)
    rtl_wide_layers: list[str] = field(default_factory=list)
    #: Per input kind ('hls/in_range', 'rtl/ties', ...): (differing, total) outputs.
    mismatches: dict[str, tuple[int, int]] = field(default_factory=dict)
    features: list[str] = field(default_factory=list)
    seconds: float = 0.0
    traceback: str = ""

    def summary(self) -> str:
        """One line: seed, outcome per path, where and why."""
        text = f"seed {self.seed}: hls4ml {self.outcome}"
        if self.stage:
            text += f" at {self.stage}"
        if self.error_type:
            text += f": {self.error_type}: {self.first_line}"
        text += f"; rtl {self.rtl_outcome}"
        if self.rtl_stage:
            text += f" at {self.rtl_stage}: {self.rtl_error}"
        bad = {k: v for k, v in self.mismatches.items() if v[0]}
        if bad:
            text += " " + ", ".join(f"{k} {d}/{t}" for k, (d, t) in bad.items())
        if self.wide_layers and bad:
            text += f" (warned: {', '.join(self.wide_layers)} wider than float32)"
        return text


def train(case: Case) -> None:
    """Brief training, as a user would: Adam at the case's rate, ResetMinMax each epoch."""
    model = case.model
    model.compile(keras.optimizers.Adam(case.learning_rate), "mse")
    x = case.x if len(case.x) > 1 else case.x[0]
    y = case.y if len(case.y) > 1 else case.y[0]
    model.fit(x, y, epochs=case.epochs, batch_size=64, verbose=0, callbacks=[ResetMinMax()])


def force_zero_widths(case: Case) -> None:
    """Make the planned quantizers (or some of their groups) 0 bits wide."""
    rng = np.random.default_rng([case.seed, 1])
    for name, which, mode in case.zero_width:
        layer = _layer_named(case.model, name)
        quantizer = layer.kernel_quantizer if which == "kernel" else layer.pre_activation_quantizer
        f = quantizer.fractional_bits.numpy()
        mask = np.ones(f.shape, bool) if mode == "all" else rng.random(f.shape) < 0.5
        quantizer.fractional_bits.assign(
            np.where(mask, ZERO_WIDTH_FRACTIONAL_BITS, f).astype(f.dtype)
        )


def _front_format(layer: keras.layers.Layer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(layer, Signature):
        return layer.exact_format()
    return layer.pre_activation_quantizer.exact_format()


def half_lsb_ties(case: Case, rng: np.random.Generator) -> list[np.ndarray]:
    """Inputs ``(n + 0.5) * 2**-f`` on each element's calibrated input grid, n in range.

    These are the values where rounding half up and half to even (or floor) part,
    so a deployment that rounds differently from Keras shows here first.
    """
    ties = []
    for x, layer in zip(case.x, case.front_layers, strict=True):
        k, i, f = (np.broadcast_to(a, x.shape[1:]).astype(np.float64) for a in _front_format(layer))
        span = np.minimum(i + f, 20.0)  # n stays exact in float32
        low = -k * np.exp2(span)
        high = np.maximum(np.exp2(span) - 1, low)
        n = np.floor(rng.uniform(low, high + 1, size=x.shape))
        ties.append(((n + 0.5) * np.exp2(-f)).astype("float32"))
    return ties


def probe_inputs(case: Case, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """The four input kinds every output is compared on."""
    return {
        "in_range": case.x,
        "outside": [(x * rng.uniform(4, 8, size=x.shape)).astype("float32") for x in case.x],
        "ties": half_lsb_ties(case, rng),
        "zeros": [np.zeros_like(x[:8]) for x in case.x],
    }


def _as_list(values: Any) -> list[np.ndarray]:
    return (
        [np.asarray(v) for v in values]
        if isinstance(values, (list, tuple))
        else [np.asarray(values)]
    )


def _keras_predict(model: keras.Model, x: list[np.ndarray]) -> list[np.ndarray]:
    return _as_list(model.predict(x if len(x) > 1 else x[0], verbose=0, batch_size=1024))


def _hls_predict(model_hls: Any, x: list[np.ndarray], like: list[np.ndarray]) -> list[np.ndarray]:
    contiguous = [np.ascontiguousarray(a) for a in x]
    got = _as_list(model_hls.predict(contiguous if len(x) > 1 else contiguous[0]))
    if len(got) != len(like):
        raise AssertionError(f"hls4ml returned {len(got)} outputs, Keras {len(like)}")
    return [g.reshape(e.shape) for g, e in zip(got, like, strict=True)]


def _count_differences(expected: list[np.ndarray], got: list[np.ndarray]) -> tuple[int, int]:
    differ = sum(int(np.sum(e != g)) for e, g in zip(expected, got, strict=True))
    return differ, sum(e.size for e in expected)


_HGQ_DIR = Path(HGQ.__file__).resolve().parent
_REFUSING_STAGES = ("build", "train", "calibrate", "convert")


def is_refusal(error: BaseException, stage: str) -> bool:
    """A documented error: ValueError/TypeError/RuntimeError raised in HGQ's own code.

    The innermost frame must be in the HGQ package and stopped at a ``raise``
    statement: a C function (``np.concatenate``, ...) failing on a line of HGQ code
    leaves its caller as the innermost frame too, and that is a crash, not a message
    the library wrote. Only up to conversion: an HGQ error while compiling or
    predicting is a crash.
    """
    if stage not in _REFUSING_STAGES or type(error) not in (ValueError, TypeError, RuntimeError):
        return False
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    if not Path(code.co_filename).resolve().is_relative_to(_HGQ_DIR):
        return False
    return any(
        ins.offset == tb.tb_lasti and ins.opname == "RAISE_VARARGS"
        for ins in dis.get_instructions(code)
    )


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def first_line(error: BaseException) -> str:
    """The first line of the message, skipping Keras's "Exception encountered when
    calling ..." wrapper so the library's own message is what gets recorded."""
    for line in _ANSI_ESCAPE.sub("", str(error)).splitlines():
        line = line.strip()
        if line and not line.startswith("Exception encountered when calling"):
            return line[:300]
    return ""


@contextlib.contextmanager
def quiet(sink: IO[str] | None) -> Iterator[None]:
    """Send hls4ml's prints, g++'s output and warnings to ``sink`` (None: leave them).

    Redirected at the file-descriptor level, because g++ writes there, not through
    ``sys.stdout`` (Python's prints reach the same descriptors); kept in ``sink`` so a
    failed compile can show g++'s error.
    """
    if sink is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _compiler_error(output: str) -> str:
    """The first ``error:`` line g++ printed (the exception only says that it failed)."""
    for line in output.splitlines():
        if "error:" in line:
            return line.strip()[:300]
    return ""


def _classify(result: Result, error: BaseException, stage: str, sink: IO[str] | None) -> None:
    """Record a failure of the shared steps or of the hls4ml path."""
    result.outcome = "refused" if is_refusal(error, stage) else "crash"
    result.stage = stage
    result.error_type = type(error).__name__
    result.first_line = first_line(error)
    result.traceback += traceback.format_exc()
    if stage == "compile" and sink is not None:
        sink.seek(0)
        detail = _compiler_error(sink.read())
        result.first_line += f" | {detail}" if detail else ""


def _hls4ml_path(case: Case, result: Result, batch, expected, workdir: Path, stage: list[str]):
    """Convert with hls4ml, compile, predict: the C simulation's outputs."""
    from HGQ.hls4ml_hook import convert_from_hgq_model

    stage[0] = "convert"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model_hls = convert_from_hgq_model(case.model, str(workdir / "prj"))
    result.wide_layers = [
        str(w.message).split(":")[0] for w in caught if FLOAT32_RANGE_WARNING in str(w.message)
    ]
    stage[0] = "compile"
    model_hls.compile()
    stage[0] = "predict"
    return _hls_predict(model_hls, batch, expected)


def _rtl_path(case: Case, result: Result, batch, workdir: Path, verilate: bool, stage: list[str]):
    """Trace into alkaid, emulate (and simulate with verilator when ``verilate``)."""
    from HGQ.rtl import convert_to_rtl

    stage[0] = "rtl convert"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        project = convert_to_rtl(case.model, workdir / "rtl", name=f"fuzz{case.seed}")
    result.rtl_wide_layers = [
        str(w.message).split(":")[0] for w in caught if FLOAT32_RANGE_WARNING in str(w.message)
    ]
    stage[0] = "rtl emulate"
    emulated = _as_list(project.emulate(batch if len(batch) > 1 else batch[0]))
    simulated = None
    if verilate:
        stage[0] = "rtl compile"
        project.compile()
        stage[0] = "rtl predict"
        simulated = _as_list(project.predict(batch if len(batch) > 1 else batch[0]))
        result.verilated = True
    return emulated, simulated


def run_case(
    seed: int, verbose: bool = False, rtl: bool = True, verilate: bool | None = None
) -> Result:
    """Build, train, calibrate, then deploy on both paths and compare every output.

    The hls4ml path converts, compiles and runs the C simulation; the RTL path (when
    ``rtl`` and alkaid is installed) traces the model into alkaid and runs its bit-exact
    interpreter, and builds and runs the verilator simulation where ``verilate`` (by
    default one case in five, by seed). Never raises for a failing case: the failure
    is the ``Result``. With ``verbose`` the model summary is printed and the
    library's output is not silenced.
    """
    start = time.perf_counter()
    stage = ["build"]
    result = Result(seed=seed, outcome="exact")
    if verilate is None:
        verilate = seed % 5 == 0
    sink = None if verbose else tempfile.TemporaryFile("w+")
    try:
        with quiet(sink), tempfile.TemporaryDirectory(prefix=f"fuzz{seed}_") as tmp:
            workdir = Path(tmp)
            case = generate_case(seed)
            result.features = sorted(case.features)
            if verbose:
                print(case.describe())
                case.model.summary()
            stage[0] = "train"
            train(case)
            force_zero_widths(case)
            stage[0] = "calibrate"
            # A margin on the recorded ranges, from its own stream (architectures unchanged).
            margin_rng = np.random.default_rng([seed, 4])
            cover = 1.0 if margin_rng.random() < 0.7 else float(margin_rng.choice([1.5, 2.0]))
            compute_bops(
                case.model,
                case.x if len(case.x) > 1 else case.x[0],
                verbose=verbose,
                cover_factor=cover,
            )
            probes = probe_inputs(case, np.random.default_rng([seed, 2]))
            # One batch holding every kind: one XLA compile per model instead of four.
            batch = [np.concatenate(parts) for parts in zip(*probes.values(), strict=True)]
            stage[0] = "predict"
            expected = _keras_predict(case.model, batch)
            stage[0] = "reload"
            path = workdir / "model.keras"
            case.model.save(path)
            outputs = {"reload": _keras_predict(keras.models.load_model(path), batch)}
            try:
                outputs["hls"] = _hls4ml_path(case, result, batch, expected, workdir, stage)
            except Exception as error:  # classified, then the RTL path still runs
                _classify(result, error, stage[0], sink)
            if rtl and _has_alkaid():
                try:
                    emulated, simulated = _rtl_path(case, result, batch, workdir, verilate, stage)
                    outputs["rtl"] = emulated
                    if simulated is not None:
                        outputs["verilator"] = simulated
                except Exception as error:
                    # A documented refusal: at conversion, or a simulation limit.
                    refused = is_refusal(error, "convert") and stage[0] in (
                        "rtl convert",
                        "rtl emulate",
                        "rtl compile",
                    )
                    result.rtl_outcome = "refused" if refused else "crash"
                    result.rtl_stage = stage[0]
                    result.rtl_error = f"{type(error).__name__}: {first_line(error)}"
                    result.traceback += traceback.format_exc()
            else:
                result.rtl_outcome = "skipped"
            bounds = np.cumsum([0] + [x[0].shape[0] for x in probes.values()])
            for kind, lo, hi in zip(probes, bounds[:-1], bounds[1:], strict=True):
                want = [e[lo:hi] for e in expected]
                for prefix, got in outputs.items():
                    result.mismatches[f"{prefix}/{kind}"] = _count_differences(
                        want, [o[lo:hi] for o in got]
                    )
        stage[0] = ""

        def differs(*prefixes: str) -> bool:
            return any(d for k, (d, _) in result.mismatches.items() if k.startswith(prefixes))

        if differs("reload"):
            result.outcome = result.rtl_outcome = "mismatch"  # Keras itself is not stable
        else:
            if result.outcome == "exact" and differs("hls/"):
                # The firmware may differ only where the conversion said it could.
                result.outcome = "warned" if result.wide_layers else "mismatch"
            if result.rtl_outcome == "exact" and differs("rtl/", "verilator/"):
                # As for hls4ml, but Keras is then not the reference: both firmware
                # paths must agree (as float32, what hls4ml's simulation returns).
                agree = "hls" in outputs and all(
                    np.array_equal(np.float32(r), np.float32(h).reshape(np.shape(r)))
                    for r, h in zip(outputs["rtl"], outputs["hls"], strict=True)
                )
                warned = bool(result.rtl_wide_layers) and agree
                result.rtl_outcome = "warned" if warned else "mismatch"
    except Exception as error:  # a shared step failed: both paths share the outcome
        _classify(result, error, stage[0], sink)
        result.rtl_outcome = result.outcome
        result.rtl_stage = result.stage
    finally:
        if sink is not None:
            sink.close()
    result.seconds = time.perf_counter() - start
    return result


def _has_alkaid() -> bool:
    try:
        import alkaid  # noqa: F401
    except ImportError:
        return False
    return True
