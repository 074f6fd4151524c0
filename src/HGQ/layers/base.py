"""Base classes: what every HGQ layer knows about bitwidths and hardware cost.

Two kinds of layers exist. *H-layers* (``HBaseLayer``) own an output quantizer with
trainable bitwidths and may multiply (and so cost EBOPs). *Passive* layers
(``PLayerBase``) only move values around; their output bitwidth map is a
transformation of their input's. Both resolve which HGQ layer produced their input,
because a layer's EBOPs need its input's bitwidths.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any, ClassVar

import keras
import numpy as np
from keras import ops

from HGQ.config import check_config_mapping, is_finite_number, merged_config
from HGQ.fixed_point import bit_span, pow2, round_half_up, round_to_grid_host
from HGQ.full_precision import float32_dtype_policy, full_precision
from HGQ.layers._lineage import producer_of, remember
from HGQ.layers._per_pass import PassMemo
from HGQ.quantizer import (
    HGQuantizer,
    deserialize_quantizer_config,
    serialize_quantizer_config,
)

FIRST_LAYER_HINT = (
    "The first layer after the model input must be HQuantize (name it with 'inp_q' "
    "for per-element input bitwidths) or Signature (for inputs already in fixed point)."
)


def _normalise_input_shape(kwargs: dict[str, Any]) -> None:
    """Accept the usage guide's ``input_shape=(16)`` (an int) as ``(16,)``."""
    shape = kwargs.get("input_shape")
    if isinstance(shape, (int, np.integer)):
        kwargs["input_shape"] = (int(shape),)


def _distinct_from(inputs: Any, outputs: Any) -> Any:
    """``outputs``, with a copy in place of any tensor that is one of ``inputs``.

    Lineage is kept per tensor object (``_lineage.remember``), so a layer that returns
    its input (``PDropout`` at inference, ``PReshape`` or ``PFlatten`` to the same
    shape, which JAX's traced reshape returns as is, or a user's passive layer) would
    become the recorded producer of a tensor that another layer also reads, which
    then looks fed from two places (the shared-layer error). A copy gives each layer
    its own output object, whatever the child does; compilers drop the copy (XLA fuses
    it away), and eager backends copy only in this rare case.
    """
    seen = {id(tensor) for tensor in keras.tree.flatten(inputs)}
    return keras.tree.map_structure(
        lambda tensor: ops.copy(tensor) if id(tensor) in seen else tensor, outputs
    )


def check_bops_reg_factor(value: Any, owner: str) -> float:
    """β as a float, or a ValueError naming ``owner`` and what β must be."""
    if not is_finite_number(value) or value < 0:
        raise ValueError(
            f"{owner}: bops_reg_factor (β) must be a finite number >= 0, the weight of the "
            f"layer's EBOPs in the loss (e.g. 1e-5; 0 turns the penalty off), got {value!r}."
        )
    return float(value)


#: Keywords of the original HGQ 0.2 and the names they stand for here.
ORIGINAL_HGQ_KEYWORDS = {
    "beta": "bops_reg_factor",
    "kq_conf": "kernel_quantizer_config",
    "paq_conf": "pre_activation_quantizer_config",
}


def take_original_keyword(kwargs: dict[str, Any], name: str, value: Any, default: Any) -> Any:
    """``value``, or the original HGQ's alias of ``name`` popped from ``kwargs``.

    Code written for HGQ 0.2 passes ``beta=``, ``kq_conf=`` and ``paq_conf=``; they mean
    ``bops_reg_factor``, ``kernel_quantizer_config`` and ``pre_activation_quantizer_config``.
    """
    alias = next(a for a, n in ORIGINAL_HGQ_KEYWORDS.items() if n == name)
    if alias not in kwargs:
        return value
    aliased = kwargs.pop(alias)
    if value is not default and value != default:
        raise ValueError(
            f"Both {alias}= (the original HGQ's name) and {name}= were given; pass only {name}=."
        )
    return aliased


class QLayerBase(keras.layers.Layer):
    """Root of all HGQ layers: input lineage and the output bitwidth map interface."""

    #: False for layers that start a quantized graph (HQuantize, Signature).
    requires_input_bitwidth: ClassVar[bool] = True

    def __init__(self, bops_reg_factor: float = 0.0, **kwargs):
        """``dtype`` may only be None or float32: see ``float32_dtype_policy``.

        ``beta=`` (the original HGQ's name) is ``bops_reg_factor``.
        """
        bops_reg_factor = take_original_keyword(kwargs, "bops_reg_factor", bops_reg_factor, 0.0)
        _normalise_input_shape(kwargs)
        name = kwargs.get("name")
        owner = type(self).__name__ + (f" '{name}'" if name else "")
        kwargs["dtype"] = float32_dtype_policy(owner, kwargs.get("dtype"))
        with warnings.catch_warnings():
            # The usage guide passes input_shape to the first layer; Keras 3 accepts
            # it but warns. The guide's way is supported here, so keep users' logs clean.
            warnings.filterwarnings("ignore", message=".*input_shape.*input_dim.*")
            super().__init__(**kwargs)
        self.bops_reg_factor = bops_reg_factor
        object.__setattr__(self, "_input_source_refs", None)
        object.__setattr__(self, "_pass_memo", PassMemo())

    @property
    def bops_reg_factor(self) -> float:
        """β: the weight of this layer's EBOPs in the loss (read from its variable)."""
        variable = getattr(self, "bops_reg_factor_variable", None)
        if variable is None:
            return self._initial_bops_reg_factor
        stored = np.asarray(variable.numpy())
        # The value last set, unless the variable changed since (loaded weights):
        # float32 would turn a user's 1e-5 into 9.99999974e-06.
        if stored == np.float32(self._initial_bops_reg_factor):
            return self._initial_bops_reg_factor
        return float(stored)

    @bops_reg_factor.setter
    def bops_reg_factor(self, value: float) -> None:
        value = check_bops_reg_factor(value, f"{type(self).__name__} '{self.name}'")
        variable = getattr(self, "bops_reg_factor_variable", None)
        if variable is not None:
            variable.assign(value)
        object.__setattr__(self, "_initial_bops_reg_factor", value)

    # ------------------------------------------------------------- lineage
    def __call__(self, *args, **kwargs):
        inputs = args[0] if args else kwargs.get("inputs")
        self._note_input_sources(inputs)
        outputs = _distinct_from(inputs, super().__call__(*args, **kwargs))
        remember(outputs, self)
        return outputs

    def _note_input_sources(self, inputs: Any) -> None:
        tensors = keras.tree.flatten(inputs)
        sources = [producer_of(t) for t in tensors]
        if not sources or any(s is None for s in sources):
            return  # unknown here (e.g. raw data into a subclassed model); keep what we had
        if self.requires_input_bitwidth:
            for source in sources:
                self._check_source(source)
            self._check_not_shared(sources)
        object.__setattr__(self, "_input_source_refs", tuple(weakref.ref(s) for s in sources))

    def _check_not_shared(self, sources: list[Any]) -> None:
        """One layer fed from two places would need two input bitwidth maps for its EBOPs
        (and two sets of output formats): not supported, so say so at graph-building time."""
        previous = self._input_source_refs
        if previous is None:
            return
        before = [ref() for ref in previous]
        if any(b is not None for b in before) and (
            len(before) != len(sources)
            or any(b is not s for b, s in zip(before, sources, strict=False))
        ):
            raise ValueError(
                f"{type(self).__name__} '{self.name}' is called a second time, on the output "
                f"of '{sources[0].name}' after '{before[0].name if before[0] else '?'}': "
                "shared HGQ layers are not supported, because each use needs its own input "
                "bitwidths and output formats. Create one layer per use (weights can be "
                "copied with set_weights)."
            )

    def _check_source(self, source: Any) -> None:
        if isinstance(source, QLayerBase):
            return
        kind = type(self).__name__
        if isinstance(source, keras.layers.InputLayer):
            raise ValueError(
                f"{kind} '{self.name}' is fed directly by the model input. {FIRST_LAYER_HINT}"
            )
        if isinstance(source, keras.Model):  # subclassed: its last layer cannot be seen
            raise ValueError(
                f"{kind} '{self.name}' is fed by '{source.name}', a subclassed model used as "
                "a layer, whose inside cannot be followed to find its output bitwidths. "
                "Build that part as a functional or Sequential model (those can be nested), "
                "or make the whole model one subclassed model."
            )
        raise ValueError(
            f"{kind} '{self.name}' is fed by '{getattr(source, 'name', source)}' "
            f"({type(source).__name__}), which is not an HGQ layer, so its output "
            "bitwidths are unknown. Replace it with its HGQ counterpart (HDense, "
            "HActivation, HQuantize, ...; see the README's layer list)."
        )

    def input_source(self, index: int = 0) -> QLayerBase:
        refs = self._input_source_refs
        source = refs[index]() if refs is not None and index < len(refs) else None
        if source is None:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' cannot tell which HGQ layer feeds it. "
                f"{FIRST_LAYER_HINT}"
            )
        self._check_source(source)
        return source

    def input_bitwidth(self, index: int = 0):
        """Differentiable bitwidth map of input ``index`` (no batch axis), 0 where that
        input is a constant (see ``output_varies``): the widths this layer's logic pays."""
        source = self.input_source(index)
        return source._pass_memo.get(
            "input_bitwidth", lambda: source.output_bitwidth() * source.traced_varies()
        )

    def exact_input_bitwidth(self, index: int = 0) -> np.ndarray:
        """Exact bitwidth map of input ``index`` after calibration (numpy, ints), 0 where
        that input is a constant (see ``exact_output_varies``)."""
        source = self.input_source(index)
        return source.exact_output_bitwidth() * source.exact_output_varies()

    def input_operand(self, index: int = 0) -> tuple[Any, Any]:
        """``(operand widths, varies)`` of input ``index`` (differentiable widths): what a
        multiplier by it pays per element (see ``operand_bitwidth``) and where it
        varies. The source's mask is evaluated once: each evaluation walks the graph
        above it, so calling it twice per layer would grow the training step's graph
        exponentially with depth."""
        source = self.input_source(index)
        varies = source.traced_varies()
        return source._pass_memo.get("operand", lambda: source.operand_bitwidth(varies)), varies

    def exact_input_operand(self, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``input_operand`` after calibration (numpy)."""
        source = self.input_source(index)
        varies = source.exact_output_varies()
        return source.exact_operand_bitwidth(varies), varies

    def operand_bitwidth(self, varies: Any = None):
        """Per output element, what a multiplier by it pays: the format's width where
        the element varies; where it is a constant, the bit span of its value (as a
        weight's). ``varies``: this layer's ``output_varies()``, if already evaluated.
        This default knows no constants."""
        return self.output_bitwidth()

    def exact_operand_bitwidth(self, varies: np.ndarray | None = None) -> np.ndarray:
        """``operand_bitwidth`` after calibration (numpy ints)."""
        return self.exact_output_bitwidth()

    def input_varies(self, index: int = 0):
        """``output_varies`` of the layer feeding input ``index``."""
        return self.input_source(index).traced_varies()

    def traced_varies(self):
        """``output_varies()``, built once per traced training step (see ``_per_pass``)."""
        return self._pass_memo.get("varies", self.output_varies)

    def exact_input_varies(self, index: int = 0) -> np.ndarray:
        """``exact_output_varies`` of the layer feeding input ``index``."""
        return self.input_source(index).exact_output_varies()

    def output_varies(self):
        """1 where an output element depends on the model's inputs, 0 where it is a
        constant (e.g. a unit whose weights are all pruned passes on its bias): a
        float map shaped like ``output_bitwidth()``, without gradient. The firmware
        folds constants, so logic fed by them costs nothing; every layer prices its
        inputs through this mask. This default says "varies everywhere"; layers
        that can tell override it."""
        return ops.ones_like(ops.convert_to_tensor(self.output_bitwidth()))

    def exact_output_varies(self) -> np.ndarray:
        """``output_varies`` after calibration, from the deployed weights (numpy bools)."""
        return np.ones(np.shape(self.exact_output_bitwidth()), dtype=bool)

    # ------------------------------------------------- interface for children
    def output_bitwidth(self):
        """Differentiable bitwidth map of this layer's output, one entry per element."""
        raise NotImplementedError

    def exact_output_bitwidth(self) -> np.ndarray:
        """Exact per-element output bitwidths (ints) after ``compute_bops``."""
        raise NotImplementedError

    def exact_output_format(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-element ``(k, i, f)`` int arrays that hold every output value (after calibration)."""
        raise NotImplementedError

    def compute_exact_bops(self) -> float:
        """Exact EBOPs of this layer after calibration (0 for layers without logic)."""
        return 0.0

    def exact_cost_parts(self) -> dict[str, float]:
        """``compute_exact_bops()`` by kind: ``products`` (the original HGQ's EBOPs),
        ``adders``, ``comparisons``, ``tables`` (``HGQ.logic_costs``)."""
        return {"products": self.compute_exact_bops()}

    def freeze(self, cover_factor: float = 1.0) -> None:
        """Fix integer bits from the recorded ranges, scaled by ``cover_factor`` (called
        by ``compute_bops``)."""

    def reset_minmax(self) -> None:
        """Forget recorded ranges (called by ``ResetMinMax`` every epoch)."""

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["bops_reg_factor"] = self.bops_reg_factor
        return config


class HBaseLayer(QLayerBase):
    """Base of layers with a heterogeneous output quantizer (and maybe a kernel).

    A one-input child implements ``forward`` (the float computation, activation
    included, on already-quantized inputs), ``bops_surrogate`` (differentiable EBOPs
    for training; omit it if the layer does not multiply) and ``compute_exact_bops``.
    The output of ``forward`` is quantized here, per element, and the EBOPs penalty
    ``bops_reg_factor * EBOPs`` is added to the loss while training.
    """

    #: Whether a bias (or the function itself) can absorb the half-LSB offset of
    #: rounding, which decides what ``rnd_strategy='auto'`` means for the output.
    output_absorbs_rounding: ClassVar[bool] = True

    #: The class of the output quantizer (a child may know its output's range).
    output_quantizer_class: ClassVar[type[HGQuantizer]] = HGQuantizer

    def __init__(
        self,
        kernel_quantizer_config: dict[str, Any] | None = None,
        pre_activation_quantizer_config: dict[str, Any] | None = None,
        bops_reg_factor: float = 0.0,
        **kwargs,
    ):
        """``kq_conf=``/``paq_conf=`` (the original HGQ's names) are the two configs."""
        kernel_quantizer_config = take_original_keyword(
            kwargs, "kernel_quantizer_config", kernel_quantizer_config, None
        )
        pre_activation_quantizer_config = take_original_keyword(
            kwargs, "pre_activation_quantizer_config", pre_activation_quantizer_config, None
        )
        for key, config in (
            ("kernel_quantizer_config", kernel_quantizer_config),
            ("pre_activation_quantizer_config", pre_activation_quantizer_config),
        ):
            check_config_mapping(config, f"{type(self).__name__}: {key}")
        super().__init__(bops_reg_factor=bops_reg_factor, **kwargs)
        self.kernel_quantizer_config = merged_config(
            "kernel", deserialize_quantizer_config(kernel_quantizer_config)
        )
        self.pre_activation_quantizer_config = merged_config(
            "pre_activation", deserialize_quantizer_config(pre_activation_quantizer_config)
        )
        # Checked here too (the quantizers are created at build) so that a bad config
        # fails when the layer is written, not when the model is assembled.
        for key in ("kernel_quantizer_config", "pre_activation_quantizer_config"):
            float32_dtype_policy(
                f"{type(self).__name__} '{self.name}' {key}", getattr(self, key)["dtype"]
            )

    def _resolved(self, config: dict[str, Any], rounds: bool) -> dict[str, Any]:
        config = dict(config)
        if config["rnd_strategy"] == "auto":
            config["rnd_strategy"] = "standard_round" if rounds else "floor"
        return config

    def operand_bitwidth(self, varies: Any = None):
        quantizer = self.pre_activation_quantizer
        varies = self.output_varies() if varies is None else varies
        constant = ops.cast(quantizer.surrogate_constant_bitwidth(), "float32")
        width = ops.cast(self.output_bitwidth(), "float32")
        return ops.where(varies > 0, width, constant)

    def exact_operand_bitwidth(self, varies: np.ndarray | None = None) -> np.ndarray:
        varies = self.exact_output_varies() if varies is None else varies
        constant = self.pre_activation_quantizer.exact_constant_bitwidth()
        return np.where(varies, self.exact_output_bitwidth(), constant)

    def make_kernel_quantizer(self, kernel_shape: tuple[int, ...]) -> HGQuantizer:
        """A per-weight quantizer for a kernel of this shape (call from ``build``)."""
        quantizer = HGQuantizer(
            self._resolved(self.kernel_quantizer_config, rounds=True),
            role="kernel",
            name="kernel_quantizer",
        )
        quantizer.build(kernel_shape)
        return quantizer

    def build(self, input_shape) -> None:
        output_shape = self.compute_output_shape(input_shape)
        self.pre_activation_quantizer = self.output_quantizer_class(
            self._resolved(self.pre_activation_quantizer_config, self.output_absorbs_rounding),
            role="activation",
            non_negative=self.output_is_non_negative(),
            name="pre_activation_quantizer",
        )
        self.pre_activation_quantizer.build(output_shape)
        self.bops = self.add_weight(name="bops", shape=(), initializer="zeros", trainable=False)
        # A variable, not a Python float, so that a callback (BetaScheduler) can change
        # β between epochs without a recompile of the training step; saved with the model.
        self.bops_reg_factor_variable = self.add_weight(
            name="bops_reg_factor",
            shape=(),
            initializer=keras.initializers.Constant(self._initial_bops_reg_factor),
            trainable=False,
        )

    def output_is_non_negative(self) -> bool:
        """Whether ``forward`` never returns a negative value (e.g. it ends in a ReLU)."""
        return False

    def __init_subclass__(cls, **kwargs):
        # The guide's extension point is `forward`, but torch.nn.Module (the base of
        # every Keras layer on the torch backend) routes __call__ through `forward`.
        # Move a child's `forward` aside so Keras's own dispatch stays in place.
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            cls.hgq_forward = cls.__dict__["forward"]
            delattr(cls, "forward")

    def hgq_forward(self, inputs, training=None):
        """The layer's computation before output quantization (children: `forward`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def bops_surrogate(self):
        """Differentiable EBOPs of one inference, or None if the layer does not multiply."""
        return None

    def call(self, inputs, training=None):
        outputs = self.pre_activation_quantizer(
            self.hgq_forward(inputs, training=training), training=training
        )
        if training:
            bops = self.bops_surrogate()
            if bops is not None:
                self.bops.assign(ops.stop_gradient(bops))
                self.add_loss(self.bops_reg_factor_variable * bops)
        return outputs

    def quantize_bias(self, bias, training=None):
        """Round a bias onto its output's fractional grid, so rounding the sum is exact.

        The bias shares the last axis with the output; where several output elements
        share one bias entry the finest of their grids is used.
        """
        f = ops.stop_gradient(
            self.pre_activation_quantizer.effective_fractional_bits(bool(training))
        )
        f = ops.reshape(f, (-1, ops.shape(f)[-1]))
        f = ops.max(f, axis=0)
        scale = pow2(f)
        q = round_half_up(bias * scale) / scale
        return ops.stop_gradient(q) + (bias - ops.stop_gradient(bias))

    def quantize_bias_host(self, bias: np.ndarray) -> np.ndarray:
        """``quantize_bias`` at inference, in numpy (for deployment; same bits)."""
        f = np.round(self.pre_activation_quantizer.fractional_bits.numpy().astype(np.float32))
        f = np.broadcast_to(f, (1,) + tuple(self.pre_activation_quantizer.element_shape))
        f = f.reshape(-1, f.shape[-1]).max(axis=0)
        return round_to_grid_host(bias, f, floor=False)

    def output_bitwidth(self):
        return self.pre_activation_quantizer.surrogate_bitwidth()

    def exact_output_bitwidth(self) -> np.ndarray:
        return self.pre_activation_quantizer.exact_bitwidth()

    def exact_output_format(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.pre_activation_quantizer.exact_format()

    def freeze(self, cover_factor: float = 1.0) -> None:
        self.pre_activation_quantizer.freeze_int_bits(cover_factor)

    def reset_minmax(self) -> None:
        if self.built:  # subclassed models may build on their first training step
            self.pre_activation_quantizer.reset_minmax()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["kernel_quantizer_config"] = serialize_quantizer_config(self.kernel_quantizer_config)
        config["pre_activation_quantizer_config"] = serialize_quantizer_config(
            self.pre_activation_quantizer_config
        )
        return config


_LINEAR_ACTIVATIONS = {"linear": "linear", None: "linear", "relu": "relu"}

#: Keras activations whose outputs each depend on the whole sample: no per-element
#: lookup table computes them, and hls4ml's softmax is not bit-exact.
NOT_ELEMENTWISE = frozenset({"softmax", "log_softmax", "sparsemax"})


def not_elementwise_fix(name: str) -> str:
    """What to do instead of a ``name`` activation (one of ``NOT_ELEMENTWISE``) in HGQ."""
    fix = (
        f"End the model with a linear layer and apply {name} outside the firmware: argmax "
        "(the predicted class) needs no softmax, and Keras losses take the linear output "
        "with from_logits=True."
    )
    if name == "softmax":
        fix += " For a softmax inside the firmware use the HSoftmax layer (bit-exact)."
    return fix


def linear_or_relu(layer_kind: str, activation: Any) -> str:
    """'linear' or 'relu'; anything else is an error pointing at what does work."""
    if callable(activation):
        name = getattr(activation, "__name__", None)
        if activation in (keras.activations.relu, keras.activations.linear):
            return name
    elif activation in _LINEAR_ACTIVATIONS:
        return _LINEAR_ACTIVATIONS[activation]
    else:
        name = activation
    problem = f"{layer_kind} supports only activation='relu' or 'linear' (got {activation!r})"
    if isinstance(name, str) and name in NOT_ELEMENTWISE:
        raise ValueError(
            f"{problem}, and {name} is not element-wise, so it cannot be deployed bit-exactly "
            f"(in a layer or as an HActivation). {not_elementwise_fix(name)}"
        )
    raise ValueError(
        f"{problem}: other activations are not exact in fixed point without a lookup table. "
        f"Use a linear {layer_kind} followed by HActivation({activation!r})."
    )


class HKernelLayer(HBaseLayer):
    """An H-layer with a kernel (``self.kernel``, ``self.kernel_quantizer``) and maybe a bias.

    It holds the keywords Keras's Dense and Conv share (activation, bias, initializers,
    regularizers, constraints), creates the weights (``build_kernel``), adds the bias
    and the ReLU (``finish_forward``), and defines what the layer computes with and what
    conversion deploys; children that derive their weights (fused BatchNorm) override
    the four ``quantized_*``/``deployed_*`` methods together.
    """

    def __init__(
        self,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        **kwargs,
    ):
        self.activation_name = linear_or_relu(type(self).__name__, activation)
        super().__init__(**kwargs)
        self.use_bias = bool(use_bias)
        # Without a bias nothing can absorb the half-LSB offset of rounding ('auto').
        self.output_absorbs_rounding = self.use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def build_kernel(
        self, kernel_shape: tuple[int, ...], bias_shape: tuple[int, ...] | None = None
    ) -> None:
        """Create the kernel, the bias (one per output channel unless ``bias_shape`` says
        otherwise) and the kernel quantizer."""
        self.kernel = self.add_weight(
            name="kernel",
            shape=kernel_shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=bias_shape if bias_shape is not None else (kernel_shape[-1],),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        self.kernel_quantizer = self.make_kernel_quantizer(kernel_shape)
        if self.kernel_quantizer.config["init_mode"] == "magnitude":
            self.kernel_quantizer.start_from_magnitudes(self.kernel)

    def output_is_non_negative(self) -> bool:
        return self.activation_name == "relu"

    def finish_forward(self, outputs, training=None):
        """Add the quantized bias (if any), then the ReLU (if any), to the linear result."""
        bias = self.quantized_bias(training)
        if bias is not None:
            outputs = outputs + bias
        if self.activation_name == "relu":
            outputs = ops.relu(outputs)
        return outputs

    def quantized_kernel(self, training=None):
        """The kernel as computed with (and, at inference, as deployed)."""
        return self.kernel_quantizer(self.kernel, training=training)

    def quantized_bias(self, training=None):
        """The bias as added (on the output's fractional grid), or None without bias."""
        return self.quantize_bias(self.bias, training) if self.use_bias else None

    def deployed_kernel(self) -> np.ndarray:
        """``quantized_kernel()`` at inference, computed on the host (for conversion)."""
        return self.kernel_quantizer.quantize_host(self.kernel.numpy())

    # ------------------------------------------- which outputs are constants
    def product_map(self, input_bits, kernel_bits):
        """Per output element (no batch axis): the sum of ``input width x weight width``
        over the products that feed it (``keras.ops``; numpy inputs work too)."""
        raise NotImplementedError

    def varies_kernel_values(self):
        """The float kernel whose surrogate widths tell which products exist."""
        return self.kernel

    def output_varies(self):
        """An output element fed by no product of a varying input and a non-zero
        weight is its (constant) bias."""
        quantizer = self.kernel_quantizer
        kernel = ops.stop_gradient(ops.convert_to_tensor(self.varies_kernel_values()))
        scaled = kernel * pow2(ops.round(ops.stop_gradient(quantizer.fractional_bits)))
        floor = quantizer.config["rnd_strategy"] == "floor"
        nonzero = ops.cast(
            ops.abs(ops.floor(scaled) if floor else round_half_up(scaled)) > 0, "float32"
        )
        inputs = ops.cast(ops.convert_to_tensor(self.input_bitwidth()) > 0, "float32")
        with full_precision():
            products = self.product_map(ops.stop_gradient(inputs), nonzero)
        return ops.stop_gradient(ops.cast(products > 0, "float32"))

    def exact_output_varies(self) -> np.ndarray:
        kernel_bits = bit_span(
            self.deployed_kernel(), self.kernel_quantizer.rounded_fractional_bits()
        ).astype(np.float32)
        input_bits = self.exact_input_bitwidth().astype(np.float32)
        with full_precision():
            products = self.product_map(input_bits, kernel_bits)
        return np.asarray(ops.convert_to_numpy(products)) > 0

    def deployed_bias(self) -> np.ndarray | None:
        """``quantized_bias()`` at inference, computed on the host (for conversion)."""
        return self.quantize_bias_host(self.bias.numpy()) if self.use_bias else None

    def deployed_weights(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The kernel and bias (None without one) as deployed, float64 numpy: what both
        deployments (hls4ml, HGQ.rtl) build the layer from."""
        bias = self.deployed_bias()
        as_numpy = lambda a: np.asarray(ops.convert_to_numpy(a), dtype=np.float64)  # noqa: E731
        return as_numpy(self.deployed_kernel()), (as_numpy(bias) if bias is not None else None)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            activation=self.activation_name,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
            kernel_constraint=keras.constraints.serialize(self.kernel_constraint),
            bias_constraint=keras.constraints.serialize(self.bias_constraint),
        )
        return config


class PLayerBase(QLayerBase):
    """Base of passive layers: no quantizer, no multiplication.

    Most move values and cost nothing; a child whose logic costs LUTs (the pools)
    implements ``bops_surrogate`` and ``compute_exact_bops`` and calls
    ``add_cost_to_loss`` in training, which penalises that cost with the β of the
    nearest HGQ layer before it (a passive layer has no β of its own).

    A child implements ``call`` and ``transform_bitwidth(bw)``, which maps its input's
    per-element bitwidth map (a tensor or numpy array without batch axis) to its
    output's, using only ``keras.ops``-style operations that numpy also accepts.
    """

    def transform_bitwidth(self, bitwidth):
        raise NotImplementedError

    def bops_surrogate(self):
        """Differentiable EBOPs of this layer's own logic; None when it has none."""
        return None

    def upstream_bops_reg_factor(self) -> Any:
        """The β variable of the nearest HGQ layer feeding this one through passive
        layers, or None (no such layer, e.g. attention feeding it directly)."""
        source = self
        while isinstance(source, PLayerBase):
            if source._input_source_refs is None:  # called on plain arrays
                return None
            source = source.input_source()
        return getattr(source, "bops_reg_factor_variable", None)

    def add_cost_to_loss(self) -> None:
        """Add ``β * bops_surrogate()`` to the training loss (see the class)."""
        beta = self.upstream_bops_reg_factor()
        bops = self.bops_surrogate() if beta is not None else None
        if bops is not None:
            self.add_loss(beta * bops)

    def output_bitwidth(self):
        return self.transform_bitwidth(self.input_bitwidth())

    def exact_output_bitwidth(self) -> np.ndarray:
        return np.asarray(
            ops.convert_to_numpy(self.transform_bitwidth(self.exact_input_bitwidth()))
        )

    def operand_bitwidth(self, varies: Any = None):
        return self.transform_bitwidth(self.input_operand()[0])

    def exact_operand_bitwidth(self, varies: np.ndarray | None = None) -> np.ndarray:
        bits = self.transform_bitwidth(self.exact_input_operand()[0])
        return np.asarray(ops.convert_to_numpy(bits))

    def transform_varies(self, varies):
        """Map the input's 0/1 ``varies`` map to the output's (values > 0 vary). Moves
        and maxima of bitwidths move it alike; a child that adds bits overrides it."""
        return self.transform_bitwidth(varies)

    def output_varies(self):
        varies = self.transform_varies(ops.cast(self.input_varies(), "float32"))
        return ops.stop_gradient(ops.cast(varies > 0, "float32"))

    def exact_output_varies(self) -> np.ndarray:
        varies = self.transform_varies(self.exact_input_varies().astype(np.float32))
        return np.asarray(ops.convert_to_numpy(varies)) > 0

    def exact_output_format(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each of ``k, i, f`` moved like the bitwidths; children that change values override."""
        kif = self.input_source().exact_output_format()
        return tuple(
            np.asarray(ops.convert_to_numpy(self.transform_bitwidth(a))).astype(np.int64)
            for a in kif
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("bops_reg_factor", None)
        return config

    def __init__(self, **kwargs):
        kwargs.pop("bops_reg_factor", None)
        kwargs.pop("beta", None)
        super().__init__(**kwargs)
