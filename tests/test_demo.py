"""The main job (examples/digits_mlp.py) end to end, shortened: front, figures, bit-exact."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


@pytest.mark.slow
def test_demo_keeps_a_front_writes_figures_and_deploys_bit_exactly(tmp_path):
    pytest.importorskip("hls4ml")
    pytest.importorskip("matplotlib")
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "jax"))
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "digits_mlp.py"),
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
    assert "<- deployed" in text
    rows = re.findall(r"^\s+(\d+)\s+(0\.\d{4})\s+([\d,]+)\s+(0\.\d{4})", text, re.M)
    assert rows, text
    assert (tmp_path / "front.png").stat().st_size > 0
    assert (tmp_path / "bitwidths.png").stat().st_size > 0
    assert len(os.listdir(tmp_path / "front")) == len(rows)
    exact = re.findall(r"bit-exact: (\d+)/(\d+) outputs", text)
    assert len(exact) == 2 and all(a == b == "4500" for a, b in exact), text[-2000:]
