"""The main job (examples/digits_mlp.py) end to end, shortened: front, figures, bit-exact.

Also its output's start: the demo's own lines first (no TensorFlow start-up log, which
Keras triggers even on JAX where TensorFlow is installed), and the line saying what
EBOPs are.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
EXAMPLES = os.path.join(ROOT, "examples")
sys.path.insert(0, EXAMPLES)
from quiet_startup import is_noise  # noqa: E402


@pytest.mark.slow
def test_demo_keeps_a_front_writes_figures_and_deploys_bit_exactly(tmp_path):
    pytest.importorskip("hls4ml")
    pytest.importorskip("matplotlib")
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "jax"))
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(EXAMPLES, "digits_mlp.py"),
            "--epochs",
            "12",
            "--hold",
            "2",
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    lines = text.splitlines()
    assert lines[0].startswith("Keras backend: "), lines[:3]
    assert lines[2].startswith("EBOPs: the hardware cost the training minimises"), lines[:3]
    noise = [line for line in out.stderr.splitlines() if is_noise(line)]
    assert not noise, noise
    assert "<- deployed" in text
    rows = re.findall(r"^\s+(\d+)\s+(0\.\d{4})\s+([\d,]+)\s+(0\.\d{4})", text, re.M)
    assert rows, text
    assert (tmp_path / "front.png").stat().st_size > 0
    assert (tmp_path / "bitwidths.png").stat().st_size > 0
    assert len(os.listdir(tmp_path / "front")) == len(rows)
    exact = re.findall(r"^bit-exact: (\d+)/(\d+) outputs", text, re.M)
    assert len(exact) == 2 and all(a == b == "4500" for a, b in exact), text[-2000:]
    try:
        import alkaid  # noqa: F401
    except ImportError:
        assert "no RTL step" in text
        return
    rtl = re.findall(r"^verilator bit-exact: (\d+)/(\d+) outputs", text, re.M)
    assert len(rtl) == 2 and all(a == b == "4500" for a, b in rtl), text[-2000:]
    cost = re.search(r"^([\d,]+) EBOPs -> ([\d,]+) LUTs .* (\d+) clock cycles", text, re.M)
    assert cost, text[-2000:]
    chosen_ebops = int(cost.group(1).replace(",", ""))
    assert chosen_ebops in {int(r[2].replace(",", "")) for r in rows}
    assert int(cost.group(2).replace(",", "")) > 0 and int(cost.group(3)) >= 1


def test_startup_filter_drops_only_native_info_lines():
    """Native INFO lines and abseil's preamble go; warnings, errors, Python output stay."""
    code = (
        "import os, sys, warnings\n"
        "from quiet_startup import quiet_native_startup\n"
        "with quiet_native_startup():\n"
        "    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called "
        "are written to STDERR\\n')\n"
        "    os.write(2, b'I0000 00:00:1796299393.958354   26822 port.cc:153] oneDNN on\\n')\n"
        "    os.write(2, b'E0000 00:00:1796298069.021922   18312 cuda_platform.cc:52] real\\n')\n"
        "    warnings.warn('ours')\n"
        "    print('to stderr', file=sys.stderr)\n"
        "raise SystemExit('after the block')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=EXAMPLES, timeout=60
    )
    assert out.returncode == 1
    assert "oneDNN" not in out.stderr and "absl::InitializeLog" not in out.stderr
    for kept in ("cuda_platform.cc:52] real", "UserWarning: ours", "to stderr", "after the block"):
        assert kept in out.stderr, out.stderr
