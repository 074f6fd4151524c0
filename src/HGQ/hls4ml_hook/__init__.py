"""Deployment to FPGAs through hls4ml, bit for bit.

hls4ml is an optional dependency and is imported only when a conversion is asked
for, so the rest of the library works without it. Once ``hls4ml`` is imported
(by this module or by the user) HGQ's layer handlers are registered in its Keras 3
converter; they convert only inside ``convert_from_hgq_model``, which corrects hls4ml
behaviours a plain ``hls4ml.converters.convert_from_keras_model`` call would leave in
the design, and tell a plain call to use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras
    from hls4ml.model import ModelGraph

INSTALL_HINT = "Install it with: pip install 'hgq-keras[hls4ml]' (hls4ml 1.3.x)."


def convert_from_hgq_model(
    model: keras.Model,
    output_dir: str,
    part: str = "xcvu9p-flga2104-2L-e",
    clock_period: float = 5,
    bias_accum: int | None = None,
    io_type: str = "io_parallel",
    backend: str = "Vivado",
    strategy: str = "latency",
    **hls4ml_kwargs: Any,
) -> ModelGraph:
    """Convert a calibrated HGQ model to an hls4ml ``ModelGraph`` (see ``convert``)."""
    try:
        from HGQ.hls4ml_hook.convert import convert
    except ImportError as error:
        if error.name is not None and error.name.split(".")[0] == "hls4ml":
            raise ImportError(f"Converting an HGQ model needs hls4ml. {INSTALL_HINT}") from error
        raise
    return convert(
        model,
        output_dir,
        part=part,
        clock_period=clock_period,
        bias_accum=bias_accum,
        io_type=io_type,
        backend=backend,
        strategy=strategy,
        **hls4ml_kwargs,
    )


def precision_table(model_hls: Any) -> str:
    """The fixed-point types hls4ml chose for each layer, one line per layer."""
    from HGQ.hls4ml_hook.report import precision_table as table

    return table(model_hls)


__all__ = ["convert_from_hgq_model", "precision_table"]
