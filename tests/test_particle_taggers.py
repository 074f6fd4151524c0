"""The particle taggers example (Deep Sets, MLP-Mixer) on the toy set, and the loader.

The taggers are trained on generated jets (three classes: chance is 1/3) and must
learn them far above chance; their conversion must be bit-exact on every output.
The ``.npz`` loader is tested on small files written here, good and bad.
"""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from HGQ.bops import compute_bops
from HGQ.particle_data import TOY_CLASSES, load_particle_jets, toy_particle_jets

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import particle_taggers  # noqa: E402

EPOCHS = {"deepsets": 15, "mixer": 30}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, dict]:
    keras.utils.set_random_seed(1)
    x, y = toy_particle_jets(5000, seed=1)
    out = tmp_path_factory.mktemp("particles")
    return {
        name: particle_taggers.run(name, x, y, epochs, 1e-5, str(out), convert=False)
        | {"x_test": x[4000:]}
        for name, epochs in EPOCHS.items()
    }


def test_toy_set_shapes_classes_and_determinism():
    x, y = toy_particle_jets(300, particles=8, seed=3)
    assert x.shape == (300, 8, 3) and x.dtype == np.float32 and y.dtype == np.int32
    assert set(np.unique(y)) == set(range(len(TOY_CLASSES)))
    np.testing.assert_allclose(x[..., 0].sum(axis=1), 1.0, rtol=1e-5)  # pT fractions
    x2, y2 = toy_particle_jets(300, particles=8, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EPOCHS))
def test_taggers_learn_the_toy_set_and_report_exact_ebops(name, trained):
    result = trained[name]
    assert result["accuracy"] >= 0.8, result["accuracy"]
    model = result["model"]
    assert result["ebops"] > 0
    x, _ = toy_particle_jets(5000, seed=1)
    assert compute_bops(model, x[:4000], verbose=False) == result["ebops"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EPOCHS))
def test_taggers_convert_bit_exactly(name, trained, tmp_path):
    result = trained[name]
    counts = particle_taggers.bit_exact_counts(result["model"], result["x_test"], str(tmp_path))
    for label, (equal, total) in counts.items():
        assert equal == total, label


def test_loader_reads_npz_and_names_what_is_wrong(tmp_path):
    x, y = toy_particle_jets(20)
    good = tmp_path / "jets.npz"
    np.savez(good, x=x.astype(np.float64), y=y.astype(np.int64))
    x2, y2 = load_particle_jets(good)
    assert x2.dtype == np.float32 and y2.dtype == np.int32 and np.array_equal(y2, y)
    with pytest.raises(FileNotFoundError, match="No constituent data at .*expected an .npz"):
        load_particle_jets(tmp_path / "missing.npz")
    np.savez(tmp_path / "nolabels.npz", x=x)
    with pytest.raises(ValueError, match=r"has no array \['y'\]"):
        load_particle_jets(tmp_path / "nolabels.npz")
    np.savez(tmp_path / "flat.npz", x=x.reshape(20, -1), y=y)
    with pytest.raises(ValueError, match="x has shape \\(20, 48\\)"):
        load_particle_jets(tmp_path / "flat.npz")
    np.savez(tmp_path / "floaty.npz", x=x, y=y.astype(np.float32))
    with pytest.raises(ValueError, match="integer class indices"):
        load_particle_jets(tmp_path / "floaty.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="cannot be read as .npz"):
        load_particle_jets(tmp_path / "text.npz")
