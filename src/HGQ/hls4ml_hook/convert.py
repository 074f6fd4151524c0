"""convert_from_hgq_model: checks, hls4ml conversion with HGQ's handlers, post-checks."""

from __future__ import annotations

import warnings
from typing import Any

import hls4ml
import keras
from hls4ml.model import ModelGraph

import HGQ.hls4ml_hook.handlers  # noqa: F401  (registers the handlers)
from HGQ.hls4ml_hook.handlers import handler_keys
from HGQ.layers import HBaseLayer
from HGQ.layers.replacements import check_only_hgq_layers

#: float32 holds every integer up to 2^24: a wider accumulator may not be emulated exactly.
FLOAT32_EXACT_BITS = 24


def _check_convertible(model: keras.Model, io_type: str, bias_accum: int | None) -> None:
    from hls4ml.converters.keras_v3._base import registry

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
    check_only_hgq_layers(model)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if handler_keys(type(layer))[0] not in registry:
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) cannot be converted: hls4ml "
                "has no handler for this layer class. User-defined HGQ layers need their own "
                "handler (see the README, 'Deploying with hls4ml')."
            )
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


def _check_tables(model_hls: ModelGraph) -> None:
    """The lookup tables were laid out for an input type; hls4ml must have chosen that one."""
    for node in model_hls.graph.values():
        expected = node.attributes.get("hgq_table_input")
        if expected is None:
            continue
        precision = node.get_input_variable().type.precision
        got = (int(precision.signed), precision.width, precision.integer)
        if got != tuple(expected):
            raise RuntimeError(
                f"{node.name}: hls4ml typed the table's input as (signed, width, integer) = "
                f"{got}, but the table was laid out for {tuple(expected)}. Please report this."
            )


def _warn_wide_accumulators(model_hls: ModelGraph) -> None:
    for node in model_hls.graph.values():
        for key in ("accum_t", "result_t"):
            attr = node.attributes.get(key)
            precision = getattr(attr, "precision", None)
            width = getattr(precision, "width", 0)
            if width > FLOAT32_EXACT_BITS and node.class_name not in ("Input",):
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
    **hls4ml_kwargs: Any,
) -> ModelGraph:
    """Convert a calibrated HGQ model to an hls4ml ``ModelGraph``, bit-exact.

    The defaults live in ``HGQ.hls4ml_hook.convert_from_hgq_model``, the public entry.

    ``bias_accum=None`` keeps every accumulator as wide as interval arithmetic says
    (exact). An int cuts accumulators of Dense/Conv layers to that many fractional
    bits beyond their output's finest format: cheaper, but then the firmware may differ
    from the Keras model. Other keywords go to ``hls4ml.converters.convert_from_keras_model``.
    """
    _check_convertible(model, io_type, bias_accum)
    hls_config = hls4ml_kwargs.pop("hls_config", None) or {}
    hls_config.setdefault("Model", {})
    hls_config["Model"].setdefault("Precision", "fixed<16,6>")
    hls_config["Model"].setdefault("ReuseFactor", 1)
    hls_config["Model"].setdefault("Strategy", "Latency")
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
    _check_tables(model_hls)
    if bias_accum is not None:
        _apply_bias_accum(model_hls, model, bias_accum)
    else:
        _warn_wide_accumulators(model_hls)
    return model_hls
