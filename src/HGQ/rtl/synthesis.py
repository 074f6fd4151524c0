"""LUT and flip-flop counts of a written RTL project from open synthesis (yosys).

yosys' ``synth_xilinx`` maps the design onto UltraScale+ primitives (LUT1-LUT6,
carry chains, flip-flops). It is not Vivado: no placement, no timing-driven
optimisation, so its counts are an open-tool reference, not a sign-off figure.
yosys runs in a child process, which keeps its log and memory out of this one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from HGQ.rtl.toolchain import require

#: yosys cell names counted as LUTs (an inverter is a LUT1 on Xilinx parts).
LUT_CELLS = ("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6", "INV")
FF_CELLS = ("FDRE", "FDSE", "FDCE", "FDPE")
CARRY_CELLS = ("CARRY4", "CARRY8")
DSP_CELLS = ("DSP48E2",)

_RUNNER = """
import sys
from pyosys import libyosys as ys
design = ys.Design()
ys.run_pass(sys.argv[1], design)
"""


#: How LUTs are mapped: yosys' classic ABC (seconds) or synth_xilinx's own ABC9 (about
#: 100 times slower on a 4,000-LUT MLP: 370 s against 1.5 s here, for 5% more LUTs).
LUT_MAPPERS = ("abc", "abc9")


def _script(sources: list[str], top: str, family: str, mapper: str, dsp: bool, stat: Path) -> str:
    options = f"-family {family} -top {top} -flatten -noiopad" + ("" if dsp else " -nodsp")
    # Tables become logic (LUT-ROMs) first: yosys has no distributed-ROM mapping.
    steps = [
        f"read_verilog -defer -sv {' '.join(sources)}",
        f"hierarchy -top {top}",
        "proc; flatten; opt; memory -nomap; memory_map; opt",
    ]
    if mapper == "abc9":
        steps.append(f"synth_xilinx {options}")
    else:  # synth_xilinx with its map_luts step done by classic ABC
        steps += [
            f"synth_xilinx {options} -run begin:map_luts",
            "opt_expr -mux_undef -noclkinv; abc -lut 6; clean",
            "techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6",
            "xilinx_dffopt; opt_lut_ins -tech xilinx",
            f"synth_xilinx {options} -run finalize:check",
        ]
    steps.append(f"tee -q -o {stat} stat -json")
    return "; ".join(steps)


def synthesize(
    project_dir: Path, top: str, family: str = "xcup", mapper: str = "abc", dsp: bool = True
) -> dict[str, int]:
    """Run ``synth_xilinx`` on the project's Verilog and count the cells of ``top``;
    ``dsp=False`` maps every multiplication of two variables to LUTs (``-nodsp``)."""
    require("pyosys")
    if mapper not in LUT_MAPPERS:
        raise ValueError(f"lut_mapper must be one of {LUT_MAPPERS}, got {mapper!r}.")
    src = Path(project_dir).resolve() / "src"
    sources = sorted(str(p) for p in (src / "static").glob("*.v"))
    sources += sorted(str(p) for p in src.glob("*.v") if not p.stem.endswith("_wrapper"))
    stat = src / "yosys_stat.json"
    stat.unlink(missing_ok=True)
    script = _script(sources, top, family, mapper, dsp, stat)
    result = subprocess.run(
        [sys.executable, "-c", _RUNNER, script],
        cwd=src,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 or not stat.exists():
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise RuntimeError(f"yosys synthesis of '{top}' failed:\n{tail}")
    cells = json.loads(stat.read_text())["design"]["num_cells_by_type"]
    return {
        "lut": sum(int(cells.get(c, 0)) for c in LUT_CELLS),
        "ff": sum(int(cells.get(c, 0)) for c in FF_CELLS),
        "carry": sum(int(cells.get(c, 0)) for c in CARRY_CELLS),
        "dsp": sum(int(cells.get(c, 0)) for c in DSP_CELLS),
        "cells": {k: int(v) for k, v in cells.items() if not k.startswith("$")},
    }


__all__ = ["synthesize"]
