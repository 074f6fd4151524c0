"""RTLProject: a traced model as Verilog, its verilator simulation and its resources."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras
import numpy as np
from alkaid.codegen import RTLModel
from alkaid.types import CombLogic

from HGQ.rtl import alkaid_workarounds
from HGQ.rtl.synthesis import synthesize
from HGQ.rtl.toolchain import verilator_on_path
from HGQ.rtl.tracing import Traced, layer_estimate

#: How alkaid's makefile runs verilator. ``-Wall``: every warning shown; a circuit whose
#: inputs or outputs are all 0 bits wide (a constant) only draws warnings about empty
#: vectors, so they are not fatal. The pip wheel's make rules leave the precompiled
#: header's ``-include`` flag empty (the C++ build then fails on larger designs): set it.
VERILATOR_BUILD_ENV = {
    # Split the generated C++ into small functions and files: in one function per
    # module, g++ took 303 s for the 2D CNN of tests/test_rtl.py, 21 s split.
    "VERILATOR_FLAGS": "-Wall -Wno-fatal --output-split-cfuncs 100 --output-split 5000",
    "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include",
}

#: alkaid's simulation and interpreter pass values as float64: exact up to 53 bits.
MAX_SIMULATED_BITS = 53
#: alkaid's simulation binder holds at most 64 bits per port element (checked on write).
MAX_WRITTEN_BITS = 64

#: The output languages alkaid writes (``flavor``).
FLAVORS = ("verilog", "vhdl")


class RTLProject:
    """A calibrated HGQ model as a multiplier-free (distributed arithmetic) circuit.

    ``write()`` puts the Verilog or VHDL (``flavor``; and Vivado/Quartus build scripts)
    in ``path``; ``compile()`` builds a verilator simulation of it; ``predict(x)`` runs
    that simulation; ``emulate(x)`` runs alkaid's bit-exact interpreter of the same
    circuit (no compilation); ``estimate()`` gives alkaid's LUT estimate at once and
    ``resources()`` synthesises it with yosys (Verilog only).

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
        flavor: str = "verilog",
    ):
        #: Whether the circuit has one extra unused 1-bit input and output (last): see
        #: ``convert_to_rtl``.
        self.spare_port = spare_port
        self.flavor = flavor
        self.path = Path(path).resolve()
        self.name = name
        self.comb = comb
        self.clock_period = float(clock_period)
        self.input_layers = traced.input_layers
        self.layers = traced.layers
        self.input_shapes = [x.shape for x in traced.inputs]
        self.output_shapes = [y.shape for y in traced.outputs]
        self.latency_cutoff = latency_cutoff
        # alkaid's three-input adder fusion is off: yosys maps the fused adders into more
        # LUTs than the two-input ones (bench/alkaid_options.py: 1.8% more over 8 families).
        self._rtl = RTLModel(
            comb,
            self.path,
            name,
            flavor=flavor,
            ternary_fuse=False,
            latency_cutoff=latency_cutoff or -1,
            part_name=part,
            clock_period=clock_period,
            print_latency=False,
        )
        self._written = False
        self._compiled = False
        self._resources: dict[str, Any] | None = None
        self._per_layer: list[dict[str, Any]] | None = None

    # ------------------------------------------------------------------ files
    def write(self) -> RTLProject:
        """Write the Verilog (or VHDL), its tables and the build scripts."""
        self._check_width(MAX_WRITTEN_BITS, "written: alkaid's simulation ports hold")
        self.path.mkdir(parents=True, exist_ok=True)
        self._rtl.write()
        self._written = True
        return self

    def compile(self, verbose: bool = False) -> RTLProject:
        """Write, then build the verilator simulation (about 5-60 s)."""
        self._check_simulable()
        if not self._written:
            self.write()
        # verilator and make on every core (a small CNN: 6.7 s on two, 11.2 s on one).
        # alkaid's OpenMP build of the binding is left out: the simulation itself takes
        # under 0.2 s for 25,000 samples of the bench's models, less than the host's work.
        alkaid_workarounds.use_default_verilator_flags()
        with verilator_on_path():
            self._rtl._compile(
                verbose=verbose, openmp=False, nproc=os.cpu_count(), _env=VERILATOR_BUILD_ENV
            )
        self._compiled = True
        return self

    def _check_simulable(self) -> None:
        self._check_width(
            MAX_SIMULATED_BITS, "simulated or emulated: alkaid passes values as float64,"
        )

    def _check_width(self, limit: int, what_fails: str) -> None:
        for what, qints in (("input", self.comb.inp_qint), ("output", self.comb.out_qint)):
            kifs = np.array([tuple(q.kif) for q in qints], dtype=np.int64)
            width = int(kifs[:, 0].max() + kifs[:, 1].max() + kifs[:, 2].max())
            if width > limit:
                raise ValueError(
                    f"The firmware's {what}s span {width} bits (the widest sign, integer and "
                    f"fractional parts together), so the circuit cannot be {what_fails} "
                    f"at most {limit} bits. Narrow the extreme formats of that {what} "
                    "(bw_clip)."
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
        """alkaid's bit-exact interpreter of the circuit on ``x`` (nothing to compile).

        It passes values as float64, as alkaid's simulation does, so the same width
        limit (53 bits) applies.
        """
        self._check_simulable()
        flat = self.comb.predict(self.firmware_inputs(x), n_threads=1)
        return self._split_outputs(np.asarray(flat, dtype=np.float64))

    # -------------------------------------------------------------- resources
    @property
    def stages(self) -> int:
        """Clock cycles from input to output: pipeline stages, 0 when combinational."""
        if not self.latency_cutoff:
            return 0
        return int(self._rtl.latency or 0)

    def estimate(self, per_layer: bool = True) -> dict[str, Any]:
        """alkaid's own resource figures, without synthesis.

        ``lut`` is its LUT estimate of the circuit as written (milliseconds), ``ff``
        the pipeline registers (0 when combinational) and ``delay`` its estimate of
        the longest path (about ns). ``per_layer`` (left out with ``per_layer=False``:
        it traces each layer's circuit alone, seconds for a softmax's tables) gives
        each layer's estimate and the delay at its output; their sum differs slightly
        from ``lut`` (alkaid re-optimises the whole circuit across layers).
        ``resources()`` adds yosys's counts.
        """
        stages = self._rtl.fsm.logic.values()
        return {
            "lut": float(sum(stage.cost for stage in stages)),
            "ff": int(self._rtl.reg_bits) if self.latency_cutoff else 0,
            "delay": float(max(self.comb.latency, default=0.0)),
            **({"per_layer": self._layer_estimates()} if per_layer else {}),
        }

    def _layer_estimates(self) -> list[dict[str, Any]]:
        if self._per_layer is None:
            self._per_layer = [
                {
                    "name": layer.name,
                    "kind": layer.kind,
                    "lut_estimate": layer_estimate(layer),
                    "delay": layer.delay,
                }
                for layer in self.layers
            ]
        return self._per_layer

    def resources(self, lut_mapper: str = "abc", dsp: bool = True) -> dict[str, Any]:
        """LUTs and flip-flops from yosys (UltraScale+), alkaid's estimates and latency.

        ``lut`` counts LUT1-LUT6 cells (an inverter is a LUT1), ``ff`` flip-flops,
        ``carry`` carry-chain cells; ``lut_estimate`` is alkaid's own figure for the
        whole circuit and ``per_layer`` gives it per layer (yosys flattens the design,
        so its counts are for the whole). ``latency`` gives ``cycles`` (pipeline
        stages at ``clock_period_ns``; 0 for a combinational circuit) and alkaid's
        ``delay_estimate`` of the longest path (about ns).
        ``lut_mapper='abc9'`` maps LUTs as ``synth_xilinx`` does by default (ABC9: a few
        percent more LUTs here, minutes instead of seconds on thousands of LUTs).
        ``dsp`` counts DSP48E2 blocks: yosys puts multiplications of two variables
        (``HMultiply``, ``HEinsum``, the softmax's ``e * r``) into them where it can;
        ``dsp=False`` builds those in LUTs too (``-nodsp``), as EBOPs price them.
        Constant kernels never need DSPs: alkaid writes them as adder trees.
        """
        if self.flavor != "verilog":
            raise ValueError(
                f"resources() synthesises Verilog with yosys; this project writes "
                f"{self.flavor}. Convert with flavor='verilog' to count LUTs."
            )
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
        kind = f"{self.stages} pipeline stages" if self.latency_cutoff else "combinational"
        return (
            f"RTLProject('{self.name}' at {self.path}: {self.comb.shape[0]} inputs -> "
            f"{self.comb.shape[1]} outputs, {kind}, {self.flavor}, alkaid estimate "
            f"{self.estimate(per_layer=False)['lut']:.0f} LUTs)"
        )


__all__ = ["RTLProject"]
