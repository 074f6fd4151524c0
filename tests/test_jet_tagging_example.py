"""The jet-tagging example's pipeline on generated data, and its offline exit path.

The real data set needs a download (OpenML) that CI machines may not have, so the
pipeline is exercised on Gaussian blobs shaped like it: 16 features, 5 classes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from HGQ.bops import compute_bops
from HGQ.datasets import DatasetUnavailableError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import jet_tagging  # noqa: E402


def toy_jets(n: int = 3000, seed: int = 7) -> tuple[np.ndarray, ...]:
    """Five Gaussian blobs in 16 dimensions, standardised like the real set.

    Unit-variance noise around centres drawn at unit scale: the classes overlap a little,
    yet six epochs learn them far above chance (0.2), so a failing pipeline shows.
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=1.0, size=(5, 16))
    y = rng.integers(0, 5, size=n).astype("int32")
    x = (centers[y] + rng.normal(size=(n, 16))).astype("float32")
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype("float32")
    split = int(0.8 * n)
    return x[:split], y[:split], x[split:], y[split:]


@pytest.fixture(scope="module")
def front(tmp_path_factory) -> tuple[list[dict], np.ndarray, Path]:
    """One short run shared by the checks below (training dominates the test time)."""
    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test = toy_jets()
    output = tmp_path_factory.mktemp("jet_tagging")
    rows = jet_tagging.run(
        x_train,
        y_train,
        x_test,
        y_test,
        epochs=6,
        beta0=1e-6,
        beta1=1e-4,
        hold=2,
        batch_size=270,  # divides the 2160 fit samples: one train-step shape
        learning_rate=1e-2,
        calibration_samples=1080,
        output_dir=output,
        verbose=0,
    )
    # run() shuffles with seed 0 and calibrates on the first samples of the fit split.
    x_fit, _, _, _ = jet_tagging.split_validation(
        x_train, y_train, jet_tagging.VALIDATION_FRACTION, seed=0
    )
    return rows, x_fit[:1080], output


@pytest.mark.slow
def test_front_rows_are_complete_and_on_disk(front):
    rows, _, output = front
    assert rows
    for row in rows:
        keys = {"epoch", "path", "beta", "val_accuracy", "val_loss", "ebops", "test_accuracy"}
        assert set(row) >= keys
        assert os.path.isfile(row["path"])
        assert os.path.dirname(row["path"]) == str(output / "front")
    assert [r["ebops"] for r in rows] == sorted(r["ebops"] for r in rows)
    on_disk = sorted(p.name for p in (output / "front").iterdir())
    assert on_disk == sorted(os.path.basename(r["path"]) for r in rows)


@pytest.mark.slow
def test_front_ebops_are_those_of_the_reloaded_checkpoints(front):
    rows, x_calib, _ = front
    for row in rows:
        loaded = keras.models.load_model(row["path"], compile=False)
        assert compute_bops(loaded, x_calib, bsz=270, verbose=False) == row["ebops"]


@pytest.mark.slow
def test_front_is_non_dominated(front):
    """No kept epoch is matched or beaten on validation accuracy, loss and EBOPs by another."""
    rows, _, _ = front
    for a in rows:
        for b in rows:
            if a is b:
                continue
            assert not (
                a["val_accuracy"] >= b["val_accuracy"]
                and a["val_loss"] <= b["val_loss"]
                and a["ebops"] <= b["ebops"]
            ), (a, b)


@pytest.mark.slow
def test_front_models_beat_chance_on_the_test_split(front):
    rows, _, _ = front
    for row in rows:
        assert 0.0 <= row["test_accuracy"] <= 1.0
        assert row["test_accuracy"] > 0.3, row


@pytest.mark.slow
def test_every_checkpoint_is_priced_and_its_circuit_is_bit_exact(front):
    pytest.importorskip("alkaid")
    rows, _, _ = front
    for row in rows:
        assert row["luts"] > 0, row
        assert row["jets"] == 600  # the toy test split
        assert row["exact_jets"] == row["jets"], row


@pytest.mark.slow
def test_front_plot_is_saved(front):
    pytest.importorskip("matplotlib")
    _, _, output = front
    assert (output / "front.png").stat().st_size > 0


def test_offline_exits_with_the_message_and_status_1(monkeypatch, capsys, tmp_path):
    message = "Could not download the jet-tagging data set (no network here)."

    def offline(**kwargs):
        raise DatasetUnavailableError(message)

    monkeypatch.setattr(jet_tagging, "load_jet_tagging", offline)
    with pytest.raises(SystemExit) as exit_info:
        jet_tagging.main(["--epochs", "1", "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert message in err
    assert "--data PATH" in err  # the command-line spelling of path=...
    assert "Traceback" not in err
