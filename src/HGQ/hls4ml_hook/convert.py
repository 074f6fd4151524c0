"""convert_from_hgq_model: checks, hls4ml conversion with HGQ's handlers, post-checks."""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import hls4ml
import keras
from hls4ml.model import ModelGraph

import HGQ.hls4ml_hook.handlers  # noqa: F401  (registers the handlers)
from HGQ.deploy.descriptions import registration_of
from HGQ.deploy.flat_graph import flat_functional
from HGQ.fixed_point import FLOAT32_EXACT_BITS
from HGQ.hls4ml_hook import hls4ml_workarounds
from HGQ.hls4ml_hook.handlers import Conversion, hgq_conversion, register_handler
from HGQ.layers import HBaseLayer
from HGQ.layers.parallelism import layers_with_parallel_factor, price_mismatch
from HGQ.layers.replacements import check_only_hgq_layers

#: float32 holds every integer up to 2^24: a wider accumulator may not be emulated exactly.


#: hls4ml backends whose per-element quantizer (``FixedPointQuantizer``) HGQ deploys
#: through; hls4ml 1.3's Quartus, oneAPI and Catapult backends lack it or its C++.
SUPPORTED_BACKENDS = ("Vivado", "Vitis")


#: ``strategy`` values and hls4ml's name for each.
STRATEGIES = {"latency": "Latency", "distributed_arithmetic": "distributed_arithmetic"}


def _check_strategy(strategy: str, bias_accum: int | None) -> str:
    """hls4ml's name of ``strategy``, or an error naming what is accepted."""
    if not isinstance(strategy, str) or strategy.lower() not in STRATEGIES:
        raise ValueError(
            f"strategy={strategy!r}: use 'latency' (multipliers, hls4ml's default) or "
            "'distributed_arithmetic' (da4ml's multiplier-free adder trees)."
        )
    if strategy.lower() == "distributed_arithmetic":
        if importlib.util.find_spec("da4ml") is None:
            raise ImportError(
                "strategy='distributed_arithmetic' needs da4ml (hls4ml 1.3 builds its "
                "adder trees with it). Install it with: pip install 'hgq-keras[hls4ml]'."
            )
        if bias_accum is not None:
            raise ValueError(
                "bias_accum cuts the Latency strategy's accumulators; "
                "strategy='distributed_arithmetic' sizes its adder trees exactly. Pass "
                "one of the two."
            )
    return STRATEGIES[strategy.lower()]


def _check_options(io_type: str, bias_accum: int | None, backend: str) -> None:
    if str(backend).lower() not in [b.lower() for b in SUPPORTED_BACKENDS]:
        raise ValueError(
            f"backend={backend!r}: HGQ's per-element formats are deployed with hls4ml's "
            f"FixedPointQuantizer, which hls4ml 1.3 implements for the "
            f"{' and '.join(SUPPORTED_BACKENDS)} backends only. Use backend='Vitis' (the "
            "current Xilinx flow) or backend='Vivado'."
        )
    if io_type != "io_parallel":
        raise ValueError(
            f"io_type={io_type!r}: HGQ's per-element activation formats are only supported "
            "with io_type='io_parallel' by hls4ml 1.3. Use io_type='io_parallel'."
        )
    if bias_accum is not None and (not isinstance(bias_accum, int) or bias_accum < 0):
        raise ValueError(
            f"bias_accum must be None (exact accumulators) or a non-negative int, got "
            f"{bias_accum!r}."
        )


def _check_convertible(model: keras.Model) -> None:
    """``model``: the flat functional graph (``flat_functional``)."""
    check_only_hgq_layers(model)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if registration_of(layer) is None:
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) cannot be converted: it has "
                "no deployment description. Register one for user-defined layers with "
                "HGQ.deploy.register_deployment (see the README, 'Your own layers')."
            )
        register_handler(type(layer))  # a subclass defined after its base registered
        if isinstance(layer, HBaseLayer) and not layer.pre_activation_quantizer.is_calibrated():
            raise RuntimeError(
                f"Layer '{layer.name}' is not calibrated, so its integer bits are unknown. "
                "Call HGQ.bops.compute_bops(model, X) on representative data before converting."
            )


def _apply_bias_accum(model_hls: ModelGraph, keras_model: keras.Model, bias_accum: int) -> None:
    """Cut accumulators to ``bias_accum`` fractional bits beyond their layer's output."""
    for node in model_hls.graph.values():
        accum = node.attributes.get("accum_t")
        if accum is None or node.class_name not in ("Dense", "Conv1D", "Conv2D"):
            continue
        layer = keras_model.get_layer(node.name)
        _, _, f_out = layer.pre_activation_quantizer.exact_format()
        precision = accum.precision
        frac = int(f_out.max()) + bias_accum
        if precision.width - precision.integer <= frac:
            continue
        precision.width = precision.integer + frac


def _warn_unpriced_parallelism(model_hls: ModelGraph, model: keras.Model) -> None:
    """Warn where hls4ml builds other kernel instances than a layer's EBOPs price: a
    ``ParallelizationFactor`` it changed (it takes only divisors of the positions, or
    the user's ``hls_config`` overrides the layer's), or a reuse factor above 1."""
    for layer in layers_with_parallel_factor(model):
        node = model_hls.graph.get(layer.name)
        built = node.get_attr("parallelization_factor") if node is not None else None
        if built is not None:
            message = price_mismatch(layer, "hls4ml", int(built))
            if message:
                warnings.warn(message, stacklevel=4)
    for node in model_hls.graph.values():
        reuse = node.get_attr("reuse_factor")
        if node.get_attr("weight") is not None and reuse is not None and int(reuse) > 1:
            warnings.warn(
                f"hls4ml layer '{node.name}' has ReuseFactor={reuse}: it shares each "
                f"multiplier over {reuse} products, while EBOPs price every product of "
                "the fully parallel design. Expect fewer LUTs and more latency than the "
                "EBOPs say.",
                stacklevel=4,
            )


def _check_quantizers_kept(model_hls: ModelGraph, conversion: Conversion) -> None:
    """Every per-element quantizer HGQ emitted must still be a layer of the hls4ml graph."""
    for name in conversion.quantizers:
        if name not in model_hls.graph:
            raise RuntimeError(
                f"hls4ml removed the quantizer '{name}' while converting, so the design "
                "would not hold the calibrated formats. Please report this with the model."
            )


def _adds_or_multiplies(node: Any) -> bool:
    """Whether Keras computes this hls4ml layer's result in float32 arithmetic: layers
    with an accumulator (Dense, any convolution, average pools) and Merge. Casts,
    reshapes, tables, ReLU and max pools only move values that fit narrower types."""
    if node.class_name == "Merge":
        return True
    return "accum_t" in node.attributes and node.attributes.get("pool_op") != "Max"


def _warn_wide_accumulators(model_hls: ModelGraph) -> None:
    for node in model_hls.graph.values():
        if not _adds_or_multiplies(node):
            continue
        for key in ("accum_t", "result_t"):
            attr = node.attributes.get(key)
            precision = getattr(attr, "precision", None)
            width = getattr(precision, "width", 0)
            if width > FLOAT32_EXACT_BITS:
                warnings.warn(
                    f"{node.name}: its {key} is {width} bits wide, more than float32's "
                    f"{FLOAT32_EXACT_BITS}-bit exact range, so the Keras model may differ "
                    "from the firmware by an LSB here. Narrow the bitwidths (bw_clip, "
                    "bops_reg_factor) feeding this layer.",
                    stacklevel=3,
                )
                break


def convert(
    model: keras.Model,
    output_dir: str,
    *,
    part: str,
    clock_period: float,
    bias_accum: int | None,
    io_type: str,
    backend: str,
    strategy: str = "latency",
    **hls4ml_kwargs: Any,
) -> ModelGraph:
    """Convert a calibrated HGQ model to an hls4ml ``ModelGraph``, bit-exact.

    The defaults live in ``HGQ.hls4ml_hook.convert_from_hgq_model``, the public entry.

    ``bias_accum=None`` keeps every accumulator as wide as interval arithmetic says
    (exact). An int cuts accumulators of Dense/Conv layers to that many fractional
    bits beyond their output's finest format: cheaper, but then the firmware may differ
    from the Keras model. ``strategy='distributed_arithmetic'`` builds the Dense, Conv
    and EinsumDense kernels as da4ml's multiplier-free adder trees (hls4ml's DA strategy,
    io_parallel, reuse factor 1) instead of multipliers; the quantizers stay separate
    casts. Other keywords go to ``hls4ml.converters.convert_from_keras_model``.

    Functional and Sequential models convert as they are; subclassed models and models
    nested in others are converted through one functional graph of the same layers
    (``flat_functional``), which hls4ml keeps as the project's Keras model.
    """
    hls4ml_workarounds.check_version()
    _check_options(io_type, bias_accum, backend)
    hls_strategy = _check_strategy(strategy, bias_accum)
    check_only_hgq_layers(model)
    with flat_functional(model) as flat:
        return _convert_flat(
            flat,
            output_dir,
            part=part,
            clock_period=clock_period,
            bias_accum=bias_accum,
            io_type=io_type,
            backend=backend,
            strategy=hls_strategy,
            **hls4ml_kwargs,
        )


def _convert_flat(
    model: keras.Model,
    output_dir: str,
    *,
    part: str,
    clock_period: float,
    bias_accum: int | None,
    io_type: str,
    backend: str,
    strategy: str,
    **hls4ml_kwargs: Any,
) -> ModelGraph:
    """``convert`` on a functional model without nested models (``flat_functional``)."""
    _check_convertible(model)
    hls_config = hls4ml_kwargs.pop("hls_config", None) or {}
    hls_config.setdefault("Model", {})
    hls_config["Model"].setdefault("Precision", "fixed<16,6>")
    hls_config["Model"].setdefault("ReuseFactor", 1)
    hls_config["Model"].setdefault("Strategy", strategy)
    outputs = frozenset(t.name for t in model.outputs)
    with hgq_conversion(outputs) as conversion, hls4ml_workarounds.conversion_flows():
        model_hls = hls4ml.converters.convert_from_keras_model(
            model,
            output_dir=str(output_dir),
            part=part,
            clock_period=clock_period,
            io_type=io_type,
            backend=backend,
            hls_config=hls_config,
            bit_exact=True,
            allow_da_fallback=False,
            allow_v2_fallback=False,
            **hls4ml_kwargs,
        )
    _check_quantizers_kept(model_hls, conversion)
    _warn_unpriced_parallelism(model_hls, model)
    hls4ml_workarounds.after_conversion(model_hls, model)
    if bias_accum is not None:
        _apply_bias_accum(model_hls, model, bias_accum)
    else:
        _warn_wide_accumulators(model_hls)
    return model_hls
