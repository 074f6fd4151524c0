"""RTLProject: a traced model as Verilog, its verilator simulation and its resources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
from da4ml.codegen import RTLModel
from da4ml.trace import to_pipeline
from da4ml.types import CombLogic, Pipeline, minimal_kif

from HGQ.rtl.synthesis import synthesize
from HGQ.rtl.toolchain import verilator_on_path
from HGQ.rtl.tracing import Traced

#: How da4ml's makefile runs verilator. ``-Wall`` is da4ml's; a circuit whose inputs or
#: outputs are all 0 bits wide (a constant) only draws warnings about empty vectors, so
#: they are not fatal. The pip wheel's make rules leave the precompiled header's
#: ``-include`` flag empty (the C++ build then fails on larger designs): set it.
VERILATOR_BUILD_ENV = {
    "VERILATOR_FLAGS": "-Wall -Wno-fatal",
    "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include",
}

#: da4ml's simulation binder passes every value as a 32-bit integer.
MAX_SIMULATED_BITS = 32


class RTLProject:
    """A calibrated HGQ model as a multiplier-free (distributed arithmetic) circuit.

    ``write()`` puts the Verilog (and Vivado/Quartus build scripts) in ``path``;
    ``compile()`` builds a verilator simulation of it; ``predict(x)`` runs that
    simulation; ``emulate(x)`` runs da4ml's bit-exact interpreter of the same circuit
    (no compilation); ``estimate()`` gives da4ml's LUT estimate at once and
    ``resources()`` synthesises it with yosys.

    The firmware takes each model input in the formats of the HQuantize (or
    Signature) it feeds; ``predict`` and ``emulate`` apply that layer on the host.
    """

    def __init__(
        self,
        traced: Traced,
        comb: CombLogic,
        path: str | Path,
        name: str,
        latency_cutoff: float | None,
        clock_period: float,
        part: str,
        spare_port: bool = False,
    ):
        #: Whether the circuit has one extra unused 1-bit input (last), and its
        #: outputs maybe one extra 1-bit output (last): see ``convert_to_rtl``.
        self.spare_port = spare_port
        self.path = Path(path).resolve()
        self.name = name
        self.comb = comb
        self.clock_period = float(clock_period)
        self.input_layers = traced.input_layers
        self.layers = traced.layers
        self.input_shapes = [x.shape for x in traced.inputs]
        self.output_shapes = [y.shape for y in traced.outputs]
        self.pipeline: Pipeline | None = (
            to_pipeline(comb, latency_cutoff, verbose=False) if latency_cutoff else None
        )
        self._rtl = RTLModel(
            self.pipeline if self.pipeline is not None else comb,
            name,
            self.path,
            flavor="verilog",
            part_name=part,
            clock_period=clock_period,
            print_latency=False,
        )
        self._written = False
        self._compiled = False
        self._resources: dict[str, Any] | None = None

    # ------------------------------------------------------------------ files
    def write(self) -> RTLProject:
        """Write the Verilog, the memory files of the tables and the build scripts."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._rtl.write()
        self._written = True
        return self

    def compile(self, verbose: bool = False) -> RTLProject:
        """Write, then build the verilator simulation (about 5-60 s)."""
        self._check_simulable()
        if not self._written:
            self.write()
        with verilator_on_path():
            self._rtl._compile(verbose=verbose, openmp=False, _env=VERILATOR_BUILD_ENV)
        self._compiled = True
        return self

    def _check_simulable(self) -> None:
        for what, qints in (("input", self.comb.inp_qint), ("output", self.comb.out_qint)):
            kifs = np.array([minimal_kif(q) for q in qints], dtype=np.int64)
            width = int(kifs[:, 0].max() + kifs[:, 1].max() + kifs[:, 2].max())
            if width > MAX_SIMULATED_BITS:
                raise ValueError(
                    f"The firmware's {what}s span {width} bits (the widest sign, integer and "
                    f"fractional parts together); da4ml's simulation passes at most "
                    f"{MAX_SIMULATED_BITS}. The Verilog is still valid (write()), but it "
                    "cannot be simulated or emulated: narrow the extreme formats of that "
                    f"{what} (bw_clip)."
                )

    # -------------------------------------------------------------- inference
    def firmware_inputs(self, x: Any) -> np.ndarray:
        """``x`` (an array, or a list of arrays for several inputs) as the firmware gets
        it: through each input's HQuantize/Signature, one row of values per sample."""
        arrays = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(arrays) != len(self.input_layers):
            raise ValueError(
                f"The model has {len(self.input_layers)} input(s); got {len(arrays)} array(s)."
            )
        rows = []
        for layer, array in zip(self.input_layers, arrays, strict=True):
            values = layer(np.asarray(array, dtype=np.float32), training=False)
            values = np.asarray(keras.ops.convert_to_numpy(values), dtype=np.float64)
            rows.append(values.reshape(values.shape[0], -1))
        if self.spare_port:
            rows.append(np.zeros((rows[0].shape[0], 1)))
        return np.concatenate(rows, axis=1)

    def _split_outputs(self, flat: np.ndarray) -> np.ndarray | list[np.ndarray]:
        outputs, start = [], 0
        for shape in self.output_shapes:
            size = int(np.prod(shape, dtype=np.int64))
            outputs.append(flat[:, start : start + size].reshape((-1,) + tuple(shape)))
            start += size
        return outputs[0] if len(outputs) == 1 else outputs

    def predict(self, x: Any) -> np.ndarray | list[np.ndarray]:
        """The verilator simulation's outputs on ``x`` (``compile()`` first)."""
        if not self._compiled:
            raise RuntimeError("Call compile() before predict(): the simulation is not built.")
        flat = self._rtl.predict(self.firmware_inputs(x), n_threads=1)
        return self._split_outputs(np.asarray(flat, dtype=np.float64))

    def emulate(self, x: Any) -> np.ndarray | list[np.ndarray]:
        """da4ml's bit-exact interpreter of the circuit on ``x`` (nothing to compile).

        It passes values as da4ml's simulation does, so the same width limit applies
        (measured: a 48-bit output format came back wrapped, -1.06e12 for 3.55e10).
        """
        self._check_simulable()
        flat = self.comb.predict(self.firmware_inputs(x), n_threads=1)
        return self._split_outputs(np.asarray(flat, dtype=np.float64))

    # -------------------------------------------------------------- resources
    @property
    def stages(self) -> int:
        """Clock cycles from input to output: pipeline stages, 0 when combinational."""
        return len(self.pipeline.solutions) if self.pipeline is not None else 0

    def estimate(self) -> dict[str, Any]:
        """da4ml's own resource figures, in milliseconds and without synthesis.

        ``lut`` is its LUT estimate of the whole circuit (within about 10% of yosys on
        the models of ``bench/resources.py``), ``per_layer`` the same per layer (name,
        kind, ``lut_estimate``, ``delay``), ``ff`` the pipeline registers (0 when
        combinational) and ``delay`` its estimate of the longest path, in adder delays.
        ``resources()`` adds yosys's counts.
        """
        return {
            "lut": float(self.comb.cost),
            "ff": int(self.pipeline.reg_bits) if self.pipeline is not None else 0,
            "delay": float(max(self.comb.latency, default=0.0)),
            "per_layer": [layer._asdict() for layer in self.layers],
        }

    def resources(self, lut_mapper: str = "abc", dsp: bool = True) -> dict[str, Any]:
        """LUTs and flip-flops from yosys (UltraScale+), da4ml's estimates and latency.

        ``lut`` counts LUT1-LUT6 cells (an inverter is a LUT1), ``ff`` flip-flops,
        ``carry`` carry-chain cells; ``lut_estimate`` is da4ml's own figure for the
        whole circuit and ``per_layer`` gives it per layer (yosys flattens the design,
        so its counts are for the whole). ``latency`` gives ``cycles`` (pipeline
        stages at ``clock_period_ns``; 0 for a combinational circuit) and da4ml's
        ``delay_estimate`` of the longest path, in its own adder-delay units.
        ``lut_mapper='abc9'`` maps LUTs as ``synth_xilinx`` does by default (ABC9: a few
        percent more LUTs here, minutes instead of seconds on thousands of LUTs).
        ``dsp`` counts DSP48E2 blocks: yosys puts multiplications of two variables
        (``HMultiply``, ``HEinsum``, the softmax's ``e * r``) into them where it can;
        ``dsp=False`` builds those in LUTs too (``-nodsp``), as EBOPs price them.
        Constant kernels never need DSPs: da4ml writes them as adder trees.
        """
        settings = {"lut_mapper": lut_mapper, "dsp_allowed": dsp}
        if self._resources is None or any(self._resources[k] != v for k, v in settings.items()):
            if not self._written:
                self.write()
            synthesis = synthesize(self.path, self.name, mapper=lut_mapper, dsp=dsp)
            estimate = self.estimate()
            self._resources = {
                **settings,
                "lut": synthesis["lut"],
                "ff": synthesis["ff"],
                "carry": synthesis["carry"],
                "dsp": synthesis["dsp"],
                "lut_estimate": estimate["lut"],
                "ff_estimate": estimate["ff"],
                "latency": {
                    "cycles": self.stages,
                    "clock_period_ns": self.clock_period,
                    "delay_estimate": estimate["delay"],
                },
                "per_layer": estimate["per_layer"],
                "cells": synthesis["cells"],
            }
        return self._resources

    def __repr__(self) -> str:
        kind = f"{self.stages} pipeline stages" if self.pipeline else "combinational"
        return (
            f"RTLProject('{self.name}' at {self.path}: {self.comb.shape[0]} inputs -> "
            f"{self.comb.shape[1]} outputs, {kind}, da4ml estimate {self.comb.cost:.0f} LUTs)"
        )


__all__ = ["RTLProject"]
