"""Tests of HGQ.datasets.load_jet_tagging on small generated files of the OpenML format.

The real data set (OpenML 42468) cannot be downloaded here, so the tests write ARFF and CSV
files with the same layout and check the loader against preprocessing recomputed with numpy.
"""

from __future__ import annotations

import gzip
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from HGQ import datasets
from HGQ.datasets import JET_CLASSES, DatasetUnavailableError, load_jet_tagging

FEATURES = [
    "zlogz",
    "c1_b0_mmdt",
    "c1_b1_mmdt",
    "c1_b2_mmdt",
    "c2_b1_mmdt",
    "c2_b2_mmdt",
    "d2_b1_mmdt",
    "d2_b2_mmdt",
    "d2_a1_b1_mmdt",
    "d2_a1_b2_mmdt",
    "m2_b1_mmdt",
    "m2_b2_mmdt",
    "n2_b1_mmdt",
    "n2_b2_mmdt",
    "mass_mmdt",
    "multiplicity",
]
LETTERS = np.array(["g", "q", "t", "w", "z"])
# Written out independently of the module: alphabetical, as LabelEncoder sorts.
EXPECTED_INDEX = {"g": 0, "q": 1, "t": 2, "w": 3, "z": 4}
N_ROWS = 200


def _raw(n_features: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Features with distinct per-column offsets/scales (so scaling is visible) and letters."""
    rng = np.random.default_rng(1234)
    scale = np.linspace(0.5, 40.0, n_features)
    offset = np.linspace(-3.0, 100.0, n_features)
    x = rng.normal(size=(N_ROWS, n_features)) * scale + offset
    y = rng.choice(LETTERS, size=N_ROWS)
    return x, y


def _data_rows(x: np.ndarray, y: np.ndarray) -> list[str]:
    """Comma-separated rows: exact float reprs (so raw values round-trip) then the letter."""
    return [",".join(repr(float(v)) for v in row) + f",{c}" for row, c in zip(x, y, strict=True)]


def _arff_text(x: np.ndarray, y: np.ndarray) -> str:
    names = FEATURES if x.shape[1] == len(FEATURES) else [f"f{i}" for i in range(x.shape[1])]
    lines = ["% generated for tests", "@RELATION hls4ml_lhc_jets_hlf", ""]
    lines += [f"@ATTRIBUTE {name} NUMERIC" for name in names]
    lines += ["@ATTRIBUTE class {g,q,t,w,z}", "", "@DATA"]
    lines += _data_rows(x, y)
    return "\n".join(lines) + "\n"


def _write_arff(directory: Path, x: np.ndarray, y: np.ndarray, name: str = "jets.arff") -> Path:
    path = directory / name
    path.write_text(_arff_text(x, y))
    return path


def _write_arff_gz(directory: Path, x: np.ndarray, y: np.ndarray) -> Path:
    path = directory / "jets.arff.gz"
    with gzip.open(path, "wt") as stream:
        stream.write(_arff_text(x, y))
    return path


def _write_csv(directory: Path, x: np.ndarray, y: np.ndarray) -> Path:
    path = directory / "jets.csv"
    lines = [",".join([*FEATURES, "class"])]
    lines += _data_rows(x, y)
    path.write_text("\n".join(lines) + "\n")
    return path


def _expected_split(x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    labels = np.array([EXPECTED_INDEX[c] for c in y])
    return train_test_split(x, labels, test_size=0.2, random_state=42)


def _write_npz(directory: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """Integer labels in the hls4ml order, no names (the plain layout)."""
    path = directory / "jets.npz"
    np.savez(path, x=x.astype(np.float32), y=np.array([EXPECTED_INDEX[c] for c in y]))
    return path


def _write_npz_named(directory: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """Labels index the file's own class_names, in another order than hls4ml's."""
    order = ["z", "q", "w", "g", "t"]
    path = directory / "jets_named.npz"
    labels = np.array([order.index(c) for c in y], dtype=np.int64)
    np.savez(path, x=x.astype(np.float32), y=labels, class_names=order, feature_names=FEATURES)
    return path


def _write_npz_one_hot(directory: Path, x: np.ndarray, y: np.ndarray) -> Path:
    path = directory / "jets_one_hot.npz"
    one_hot = np.zeros((len(y), 5), dtype=np.float32)
    one_hot[np.arange(len(y)), [EXPECTED_INDEX[c] for c in y]] = 1
    np.savez(path, x=x.astype(np.float32), y=one_hot)
    return path


WRITERS = {
    "arff": _write_arff,
    "arff.gz": _write_arff_gz,
    "csv": _write_csv,
    "npz": _write_npz,
    "npz named": _write_npz_named,
    "npz one-hot": _write_npz_one_hot,
}


@pytest.fixture(params=sorted(WRITERS))
def jet_file(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    x, y = _raw()
    path = WRITERS[request.param](tmp_path, x, y)
    if path.suffix == ".npz":  # stored as float32, as the shared and generated files are
        x = x.astype(np.float32).astype(np.float64)
    return path, x, y


def test_class_order_is_label_encoder_order():
    assert list(JET_CLASSES) == sorted(EXPECTED_INDEX, key=EXPECTED_INDEX.get)
    assert list(JET_CLASSES) == sorted(JET_CLASSES)


def test_shapes_dtypes_and_labels(jet_file):
    path, x, y = jet_file
    x_train, x_test, y_train, y_test = load_jet_tagging(path=path)

    assert x_train.shape == (160, 16) and x_test.shape == (40, 16)
    assert y_train.shape == (160,) and y_test.shape == (40,)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.dtype == np.int32 and y_test.dtype == np.int32

    _, _, y_train_ref, y_test_ref = _expected_split(x, y)
    np.testing.assert_array_equal(y_train, y_train_ref)
    np.testing.assert_array_equal(y_test, y_test_ref)
    # Labels decode back to the letters written in the file.
    assert sorted(np.asarray(JET_CLASSES)[np.concatenate([y_train, y_test])]) == sorted(y)


def test_standardised_with_training_statistics(jet_file):
    path, x, y = jet_file
    x_train, x_test, _, _ = load_jet_tagging(path=path)

    np.testing.assert_allclose(x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(axis=0), 1.0, atol=1e-5)

    raw_train, raw_test, _, _ = _expected_split(x, y)
    mean, std = raw_train.mean(axis=0), raw_train.std(axis=0)
    np.testing.assert_allclose(x_train, (raw_train - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x_test, (raw_test - mean) / std, rtol=1e-5, atol=1e-5)
    # Training statistics, not the test split's own: the test split is not exactly centred.
    assert np.abs(x_test.mean(axis=0)).max() > 1e-3


def test_unstandardised_returns_raw_values(jet_file):
    path, x, y = jet_file
    x_train, x_test, _, _ = load_jet_tagging(path=path, standardize=False)
    raw_train, raw_test, _, _ = _expected_split(x, y)
    np.testing.assert_array_equal(x_train, raw_train.astype(np.float32))
    np.testing.assert_array_equal(x_test, raw_test.astype(np.float32))


def test_split_parameters_are_forwarded(tmp_path: Path):
    x, y = _raw()
    path = _write_arff(tmp_path, x, y)
    x_train, x_test, _, _ = load_jet_tagging(path=path, test_size=50, random_state=0)
    assert x_train.shape == (150, 16) and x_test.shape == (50, 16)


def test_missing_file(tmp_path: Path):
    missing = tmp_path / "nope.arff"
    with pytest.raises(FileNotFoundError, match="nope.arff"):
        load_jet_tagging(path=missing)


@pytest.mark.parametrize("fmt", ["arff", "csv"])
def test_wrong_feature_count(tmp_path: Path, fmt: str):
    x, y = _raw(n_features=15)
    if fmt == "arff":
        path = _write_arff(tmp_path, x, y)
    else:
        path = tmp_path / "jets.csv"
        header = ",".join([f"f{i}" for i in range(15)] + ["class"])
        path.write_text("\n".join([header, *_data_rows(x, y)]) + "\n")
    with pytest.raises(ValueError, match=r"15 feature columns.*expected 16"):
        load_jet_tagging(path=path)


def test_missing_class_column(tmp_path: Path):
    x, _ = _raw()
    path = tmp_path / "jets.csv"
    rows = [",".join(FEATURES)] + [",".join(map(repr, row.tolist())) for row in x]
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match="no 'class' column"):
        load_jet_tagging(path=path)


def test_unknown_class_name(tmp_path: Path):
    x, y = _raw()
    path = _write_csv(tmp_path, x, np.where(y == "g", "b", y))
    with pytest.raises(ValueError, match="Unknown jet class names.*'b'"):
        load_jet_tagging(path=path)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((4, 16))}, "no array 'y'"),
        ({"features": np.zeros((4, 16)), "y": np.zeros(4, int)}, "no array 'x'"),
        ({"x": np.zeros((4, 15)), "y": np.zeros(4, int)}, r"'x' must be a numeric \(jets, 16\)"),
        (
            {"x": np.zeros((4, 16)), "y": np.zeros(3, int)},
            r"one integer label per jet, shape \(4,\)",
        ),
        ({"x": np.zeros((4, 16)), "y": np.zeros(4)}, "got float64 of shape"),
        ({"x": np.zeros((4, 16)), "y": np.array([0, 1, 5, -1])}, r"labels \[-1, 5\] are outside"),
        (
            {"x": np.zeros((2, 16)), "y": np.array([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])},
            "one-hot row",
        ),
        (
            {"x": np.zeros((2, 16)), "y": np.array([0, 1]), "class_names": ["g", "b"]},
            "Unknown jet class names.*'b'",
        ),
        (
            {"x": np.zeros((2, 16)), "y": np.array([0, 1]), "feature_names": FEATURES[:3]},
            "'feature_names' lists 3 names",
        ),
    ],
)
def test_npz_errors_name_the_array_and_the_fix(tmp_path: Path, arrays: dict, message: str):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_jet_tagging(path=path)


def test_unreadable_npz_is_named(tmp_path: Path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="broken.npz.*as a NumPy .npz"):
        load_jet_tagging(path=path)


def test_fetch_path_uses_openml_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """path=None goes through fetch_openml (stubbed) and applies the same preprocessing."""
    x, y = _raw()
    calls = []

    def fake_fetch(*args, **kwargs):
        calls.append((args, kwargs))
        return x.copy(), y.astype(object)

    monkeypatch.setattr(datasets, "fetch_openml", fake_fetch)
    x_train, x_test, y_train, y_test = load_jet_tagging(data_home=tmp_path, standardize=False)

    (args, kwargs), *rest = calls
    assert not rest
    assert args == ("hls4ml_lhc_jets_hlf",) and kwargs["version"] == 1
    assert kwargs["as_frame"] is False and kwargs["data_home"] == str(tmp_path)
    try:
        import pandas  # noqa: F401
    except ImportError:  # Without pandas only the bundled liac-arff parser works.
        assert kwargs["parser"] == "liac-arff"
    raw_train, raw_test, y_train_ref, y_test_ref = _expected_split(x, y)
    np.testing.assert_array_equal(x_train, raw_train.astype(np.float32))
    np.testing.assert_array_equal(x_test, raw_test.astype(np.float32))
    np.testing.assert_array_equal(y_train, y_train_ref)
    np.testing.assert_array_equal(y_test, y_test_ref)


def test_offline_fetch_explains_how_to_use_a_local_copy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(datasets, "fetch_openml", offline)
    with pytest.raises(DatasetUnavailableError) as info:
        load_jet_tagging(data_home=tmp_path)
    message = str(info.value)
    assert isinstance(info.value, ConnectionError)
    assert "hls4ml_lhc_jets_hlf" in message and "42468" in message
    assert "https://www.openml.org/d/42468" in message
    assert "path=" in message and "data_home" in message
    assert isinstance(info.value.__cause__, urllib.error.URLError)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:A network error occurred:UserWarning")
def test_real_fetch_without_internet(tmp_path: Path):
    """The real scikit-learn download path, offline: its retries take a few seconds."""
    start = time.perf_counter()
    try:
        result = load_jet_tagging(data_home=tmp_path)
    except DatasetUnavailableError as err:
        assert "hls4ml_lhc_jets_hlf" in str(err) and "path=" in str(err)
        assert err.__cause__ is not None
    else:
        assert result[0].shape[1] == 16
        pytest.skip("internet is available: OpenML download succeeded")
    finally:
        print(f"real fetch_openml attempt took {time.perf_counter() - start:.1f}s")
