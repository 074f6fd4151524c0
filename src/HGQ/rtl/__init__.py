"""Firmware without Vivado: Verilog through da4ml, verilator simulation, yosys LUT counts.

``convert_to_rtl(model, output_dir)`` traces a calibrated HGQ model into da4ml's
fixed-point representation (every layer's exact arithmetic, per-element formats,
wrap or saturation as in Keras), which compiles the constant multiplications into
adder trees (distributed arithmetic, no DSPs) and writes Verilog. The tools come
from pip with the ``rtl`` extra; ``import HGQ`` never needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from HGQ.rtl.toolchain import INSTALL_HINT, missing_tools, require

require("da4ml")

if TYPE_CHECKING:
    import keras

    from HGQ.rtl.project import RTLProject


def convert_to_rtl(
    model: keras.Model,
    output_dir: str | Path,
    *,
    name: str = "hgq_model",
    latency_cutoff: float | None = None,
    clock_period: float = 5.0,
    part: str = "xcvu13p-flga2577-2-e",
    delay_constraint: int = 2,
    write: bool = True,
) -> RTLProject:
    """A calibrated HGQ model (after ``compute_bops``) as an ``RTLProject``.

    ``latency_cutoff=None`` gives one combinational circuit; a number pipelines it,
    with at most that much of da4ml's estimated delay between registers.
    ``delay_constraint`` is da4ml's bound on the adder-tree depth of each constant
    matrix product (smaller: faster, more LUTs). ``part`` and ``clock_period`` (ns)
    go into the written Vivado/Quartus scripts and constraints. Layers da4ml cannot
    express are refused with their name; the model is not changed. The circuit is
    fully parallel: a layer priced for fewer kernel instances (an int
    ``parallel_factor`` below its positions) is converted with a warning that names it
    and the LUT multiple to expect.
    """
    import warnings

    import numpy as np
    from da4ml.trace import FixedVariableArray, HWConfig, comb_trace

    from HGQ.layers.parallelism import layers_with_parallel_factor, price_mismatch
    from HGQ.rtl.project import RTLProject
    from HGQ.rtl.tracing import trace_model

    if latency_cutoff is not None and not latency_cutoff > 0:
        raise ValueError(
            f"latency_cutoff must be None (combinational) or a positive delay, got "
            f"{latency_cutoff!r}."
        )
    if not name.isidentifier():
        raise ValueError(f"name must be a Verilog identifier (letters, digits, _), got {name!r}.")
    traced = trace_model(model, HWConfig(1, -1, -1), {"hard_dc": int(delay_constraint)})
    for layer in layers_with_parallel_factor(model):
        message = price_mismatch(layer, "the RTL circuit (fully parallel)", layer.positions)
        if message:
            warnings.warn(message, stacklevel=2)
    inputs = [v for x in traced.inputs for v in x._vars.ravel()]
    outputs = [v for y in traced.outputs for v in y._vars.ravel()]
    comb = comb_trace(inputs, outputs)
    # A port of 0 bits cannot be bound by verilator: a circuit whose inputs (or outputs)
    # are all 0 bits wide (every input pruned or unused: a constant) gets one unused
    # 1-bit input, which also serves as a 1-bit output where every output is 0 bits wide.
    dead_inputs = not any(_width(q) for q in comb.inp_qint)
    dead_outputs = not any(_width(q) for q in comb.out_qint)
    padded = dead_inputs or dead_outputs
    if padded:
        hwconf = traced.inputs[0].hwconf
        spare = FixedVariableArray.from_kif(np.zeros(1), np.ones(1), np.zeros(1), hwconf)._vars[0]
        inputs.append(spare)
        if dead_outputs:
            outputs.append(spare)
        comb = comb_trace(inputs, outputs, keep_dead_inputs=True)
    project = RTLProject(
        traced, comb, output_dir, name, latency_cutoff, clock_period, part, spare_port=padded
    )
    return project.write() if write else project


def _width(qint: Any) -> int:
    """Bits of one port of a traced circuit (0 for a constant or unused one)."""
    from da4ml.types import minimal_kif

    return int(sum(minimal_kif(qint)))


def __getattr__(attribute: str) -> Any:
    if attribute == "RTLProject":
        from HGQ.rtl.project import RTLProject

        return RTLProject
    raise AttributeError(attribute)


__all__ = ["INSTALL_HINT", "RTLProject", "convert_to_rtl", "missing_tools"]
