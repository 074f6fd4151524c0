"""Firmware without Vivado: Verilog or VHDL through alkaid, verilator simulation, yosys LUTs.

``convert_to_rtl(model, output_dir)`` traces a calibrated HGQ model into alkaid's
fixed-point representation (every layer's exact arithmetic, per-element formats,
wrap or saturation as in Keras), which compiles the constant multiplications into
adder trees (distributed arithmetic, no DSPs) and writes Verilog or VHDL. alkaid is
da4ml's successor, by its authors. The tools come from pip with the ``rtl`` extra;
``import HGQ`` never needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from HGQ.rtl.toolchain import INSTALL_HINT, missing_tools, require

require("alkaid")

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
    flavor: str = "verilog",
    write: bool = True,
) -> RTLProject:
    """A calibrated HGQ model (after ``compute_bops``) as an ``RTLProject``.

    Layers without a deployment description are refused with their name; the model is
    not changed. The circuit is fully parallel: a layer priced for fewer kernel
    instances (an int ``parallel_factor`` below its positions) is converted with a
    warning that names it and the LUT multiple to expect.

    Args:
        model: the calibrated model.
        output_dir: where ``write()`` puts the project.
        name: the top module's name (a Verilog/VHDL identifier).
        latency_cutoff: None for one combinational circuit; a number pipelines it with
            at most that much of alkaid's estimated delay (about ns) between registers.
        clock_period: ns, for the written Vivado/Quartus scripts and constraints.
        part: the FPGA part of those scripts.
        delay_constraint: alkaid's bound on the adder-tree depth of each constant
            matrix product (smaller: faster, more LUTs).
        flavor: ``'verilog'`` or ``'vhdl'`` (VHDL-2008).
        write: write the project now (False: trace only, for ``estimate()`` and
            ``emulate()``).
    """
    import warnings

    import numpy as np
    from alkaid.trace import FVArray, HWConfig, trace

    from HGQ.layers.parallelism import layers_with_parallel_factor, price_mismatch
    from HGQ.rtl.alkaid_workarounds import check_version
    from HGQ.rtl.project import FLAVORS, RTLProject
    from HGQ.rtl.tracing import trace_model

    if flavor not in FLAVORS:
        raise ValueError(
            f"flavor must be one of {FLAVORS} (alkaid's output languages), got {flavor!r}."
        )

    if latency_cutoff is not None and not latency_cutoff > 0:
        raise ValueError(
            f"latency_cutoff must be None (combinational) or a positive delay, got "
            f"{latency_cutoff!r}."
        )
    if not name.isidentifier():
        raise ValueError(f"name must be a Verilog identifier (letters, digits, _), got {name!r}.")
    check_version()
    traced = trace_model(model, HWConfig(1, 1, -1), solver_options(delay_constraint))
    for layer in layers_with_parallel_factor(model):
        message = price_mismatch(layer, "the RTL circuit (fully parallel)", layer.positions)
        if message:
            warnings.warn(message, stacklevel=2)
    inputs = [v for x in traced.inputs for v in np.asarray(x).ravel()]
    outputs = [v for y in traced.outputs for v in np.asarray(y).ravel()]
    comb = trace(inputs, outputs)
    # A port of 0 bits cannot be bound by verilator: a circuit whose inputs (or outputs)
    # are all 0 bits wide (every input pruned or unused: a constant) gets one 1-bit
    # input, passed through to one extra 1-bit output (alkaid drops inputs that no
    # output reads).
    padded = not any(_width(q) for q in comb.inp_qint) or not any(_width(q) for q in comb.out_qint)
    if padded:
        hwconf = traced.inputs[0].hwconf
        spare = np.asarray(FVArray.from_kif(np.zeros(1), np.ones(1), np.zeros(1), hwconf))[0]
        comb = trace([*inputs, spare], [*outputs, spare])
    project = RTLProject(
        traced,
        comb,
        output_dir,
        name,
        latency_cutoff,
        clock_period,
        part,
        spare_port=padded,
        flavor=flavor,
    )
    return project.write() if write else project


def solver_options(delay_constraint: int) -> dict[str, Any]:
    """alkaid's options for the constant-matrix products. Its packing of one-bit inputs
    into LUTs (``binary_lut``) is off: in alkaid 0.8.2 it fails on signed one-bit inputs
    (an assertion in its lookup) and on rows whose varying inputs all have weight 0
    (bench/alkaid_options.py measures what it would save)."""
    return {"hard_dc": int(delay_constraint), "binary_lut": False}


def _width(qint: Any) -> int:
    """Bits of one port of a traced circuit (0 for a constant or unused one)."""
    return int(sum(qint.kif))


def __getattr__(attribute: str) -> Any:
    if attribute == "RTLProject":
        from HGQ.rtl.project import RTLProject

        return RTLProject
    raise AttributeError(attribute)


__all__ = ["INSTALL_HINT", "RTLProject", "convert_to_rtl", "missing_tools"]
