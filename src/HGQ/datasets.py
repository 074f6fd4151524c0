"""The hls4ml LHC jet-tagging data set, loaded and preprocessed as in the hls4ml tutorials.

The data are ~830k simulated LHC jets, each described by 16 high-level jet-substructure
observables (energy-correlation functions after the modified mass-drop tagger, the groomed
jet mass, the constituent multiplicity, ...) and labelled with the particle that initiated
it: gluon ``g``, light quark ``q``, top quark ``t``, ``W`` boson or ``Z`` boson. It is the
benchmark of the hls4ml and HGQ papers, published on OpenML as ``hls4ml_lhc_jets_hlf``
(data id 42468, version 1, https://www.openml.org/d/42468).

:func:`load_jet_tagging` reproduces the preprocessing of hls4ml tutorial part 1 so that
accuracies and resource figures are comparable with the published ones:

1. class names become integer indices in ``LabelEncoder`` order, i.e. alphabetical
   (:data:`JET_CLASSES`: g, q, t, w, z -> 0..4);
2. ``train_test_split(test_size=0.2, random_state=42)``;
3. a ``StandardScaler`` fitted on the training split only (so no test statistics leak into
   training) and applied to both splits.

Features come back as float32 and labels as int32 class indices (not one-hot), which is
what Keras' sparse categorical losses take.

Downloading goes through :func:`sklearn.datasets.fetch_openml`, which caches the data under
scikit-learn's ``data_home`` (default ``~/scikit_learn_data``). A machine without internet
access cannot download it: copy the ARFF file from OpenML on a machine that has access and
pass it with ``load_jet_tagging(path=...)``, or copy a populated ``data_home`` over.
"""

from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO
from urllib.error import URLError

import numpy as np
from scipy.io import arff

try:
    from sklearn.datasets import fetch_openml, get_data_home
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
except ImportError as _err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "HGQ.datasets needs scikit-learn; install it with `pip install scikit-learn` "
        "(or `pip install hgq-keras[examples]`)."
    ) from _err

try:  # Private in scikit-learn; raised e.g. when OpenML answers with an error page.
    from sklearn.datasets._openml import OpenMLError as _OpenMLError

    _OPENML_ERRORS: tuple[type[Exception], ...] = (_OpenMLError,)
except ImportError:  # pragma: no cover - depends on the scikit-learn version
    # Not a bare ValueError fallback: that would disguise genuine bugs as network failures.
    _OPENML_ERRORS = ()

__all__ = [
    "DatasetUnavailableError",
    "JET_CLASSES",
    "JET_FEATURE_NAMES",
    "OPENML_DATA_ID",
    "OPENML_NAME",
    "load_jet_tagging",
]

OPENML_NAME = "hls4ml_lhc_jets_hlf"
"""Name of the data set on OpenML."""

OPENML_DATA_ID = 42468
"""OpenML data id of version 1 of :data:`OPENML_NAME`."""

OPENML_URL = f"https://www.openml.org/d/{OPENML_DATA_ID}"
"""Human-readable OpenML page of the data set, from which the ARFF file can be downloaded."""

JET_CLASSES: tuple[str, ...] = ("g", "q", "t", "w", "z")
"""Class names in label-index order: the order ``sklearn.preprocessing.LabelEncoder`` gives
(sorted), so label ``i`` means ``JET_CLASSES[i]`` exactly as in the hls4ml tutorials."""

JET_FEATURE_NAMES: tuple[str, ...] = (
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
)
"""The 16 feature columns of the OpenML file, in file order. Only their count is enforced on
local copies; the names serve error messages."""

_CLASS_COLUMN = "class"
_N_FEATURES = len(JET_FEATURE_NAMES)

# What a failed download surfaces as: URLError/HTTPError, socket timeouts, refused or reset
# connections (all OSError subclasses), a truncated cached gzip (EOFError), or an error reply
# from OpenML (OpenMLError).
_DOWNLOAD_ERRORS: tuple[type[BaseException], ...] = (
    URLError,
    ConnectionError,
    TimeoutError,
    OSError,
    EOFError,
    *_OPENML_ERRORS,
)


class DatasetUnavailableError(ConnectionError):
    """The data set could not be fetched from OpenML and no local copy was given.

    A ``ConnectionError`` (hence an ``OSError``) so that callers already handling network
    failures catch it without knowing about this module.
    """


def load_jet_tagging(
    path: str | os.PathLike[str] | None = None,
    data_home: str | os.PathLike[str] | None = None,
    test_size: float | int = 0.2,
    random_state: int | None = 42,
    standardize: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load the hls4ml jet-tagging data set split and preprocessed as in the hls4ml tutorials.

    Args:
        path: A local copy to read instead of downloading: the ARFF file as OpenML serves it
            (``.arff`` or gzipped ``.arff.gz``), or a CSV (``.csv``/``.csv.gz``) with a header
            row; either must hold 16 numeric feature columns and a ``class`` column of class
            names from :data:`JET_CLASSES`. Or a NumPy ``.npz`` with arrays ``x`` (jets x 16
            features) and ``y`` (integer labels, or one-hot rows); its optional
            ``class_names`` name the labels (label ``i`` is ``class_names[i]``, mapped to the
            :data:`JET_CLASSES` order; without it labels 0-4 are g, q, t, w, z) and its
            optional ``feature_names`` must list 16 names. ``None`` fetches the data
            through scikit-learn.
        data_home: scikit-learn's download cache directory, used only when ``path`` is
            ``None`` (default: ``$SCIKIT_LEARN_DATA`` or ``~/scikit_learn_data``).
        test_size: Fraction (float) or number (int) of jets held out, passed to
            ``sklearn.model_selection.train_test_split``.
        random_state: Seed of the split; the default 42 reproduces the tutorials' split.
        standardize: Scale features with a ``StandardScaler`` fitted on the training split
            only. ``False`` returns the raw feature values.

    Returns:
        ``(x_train, x_test, y_train, y_test)``: float32 features of shape ``(n, 16)`` and
        int32 labels of shape ``(n,)`` indexing :data:`JET_CLASSES`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is unreadable as ARFF/CSV/npz, lacks the ``class`` column (the
            ``x`` or ``y`` array), has other than 16 feature columns, non-numeric features,
            labels outside the classes or unknown class names.
        DatasetUnavailableError: ``path`` is ``None`` and the download failed (for instance
            on a machine without internet access); the original error is chained.
    """
    if path is None:
        features, class_names = _fetch_from_openml(data_home)
    else:
        features, class_names = _read_local_copy(Path(path))
    labels = _encode_labels(class_names)

    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=test_size, random_state=random_state
    )
    if standardize:
        # Fitted on the training split only, so test-set statistics never reach the model.
        scaler = StandardScaler().fit(x_train)
        x_train = scaler.transform(x_train)
        x_test = scaler.transform(x_test)
    # Scaling happens in float64 first; float32 is what Keras trains in.
    return (
        np.asarray(x_train, dtype=np.float32),
        np.asarray(x_test, dtype=np.float32),
        np.asarray(y_train, dtype=np.int32),
        np.asarray(y_test, dtype=np.int32),
    )


def _fetch_from_openml(
    data_home: str | os.PathLike[str] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fetch (or read from scikit-learn's cache) the OpenML copy as float64 features and names.

    The pandas ARFF parser is faster but optional; liac-arff ships with scikit-learn, so the
    choice keeps this working in environments without pandas.
    """
    try:
        import pandas  # noqa: F401

        parser = "pandas"
    except ImportError:
        parser = "liac-arff"
    home = None if data_home is None else os.fspath(data_home)
    try:
        x, y = fetch_openml(
            OPENML_NAME,
            version=1,
            as_frame=False,
            return_X_y=True,
            data_home=home,
            parser=parser,
        )
    except _DOWNLOAD_ERRORS as err:
        raise DatasetUnavailableError(_unavailable_message(home, err)) from err
    return np.asarray(x, dtype=np.float64), np.asarray(y)


def _unavailable_message(data_home: str | None, err: BaseException) -> str:
    """Explain a failed download and the two ways around it (local file, cache copy)."""
    try:
        cache = os.path.join(get_data_home(data_home), "openml")
    except OSError:  # The cache directory itself may be what failed.
        cache = f"{data_home or '~/scikit_learn_data'}/openml"
    return (
        f"Could not download the jet-tagging data set {OPENML_NAME!r} (OpenML data id "
        f"{OPENML_DATA_ID}, version 1, {OPENML_URL}) through sklearn.datasets.fetch_openml: "
        f"{type(err).__name__}: {err}. This machine may have no internet access. "
        f"scikit-learn caches the download under data_home (here {cache}), so copying a "
        "populated cache from another machine works; or download the ARFF file from "
        f"{OPENML_URL} on a machine with internet access and pass it as "
        f'load_jet_tagging(path="/path/to/{OPENML_NAME}.arff") (.arff.gz and .csv also work).'
    )


def _read_local_copy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a local ARFF or CSV copy, dispatching on the file extension."""
    if not path.is_file():
        raise FileNotFoundError(
            f"No jet-tagging data file at {str(path)!r} (expected the ARFF file of "
            f"{OPENML_NAME} from {OPENML_URL}, or a CSV)."
        )
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    kind = suffixes[-2] if compressed and len(suffixes) >= 2 else (suffixes or [""])[-1]
    if kind == ".npz" and not compressed:
        return _read_npz(path)
    if kind not in (".arff", ".csv"):
        raise ValueError(
            f"Cannot tell the format of {str(path)!r}: expected a name ending in .arff, "
            ".arff.gz, .csv, .csv.gz or .npz."
        )
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as stream:
            if kind == ".arff":
                return _parse_arff(stream, path)
            return _parse_csv(stream, path)
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as err:
        raise ValueError(f"Cannot read {str(path)!r}: {err}") from err


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``x``, ``y`` and the optional ``class_names``/``feature_names`` of an ``.npz``;
    the labels come back as class names, so that every format is encoded the same way."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"Cannot read {str(path)!r} as a NumPy .npz archive: {err}") from err
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing:
        raise ValueError(
            f"{str(path)!r} has no array {' or '.join(map(repr, missing))} (found "
            f"{sorted(arrays)}); expected 'x' (jets x {_N_FEATURES} features) and 'y' "
            "(integer labels or one-hot rows)."
        )
    x, y = arrays["x"], arrays["y"]
    if x.ndim != 2 or x.shape[1] != _N_FEATURES or not np.issubdtype(x.dtype, np.number):
        raise ValueError(
            f"{str(path)!r}: 'x' must be a numeric (jets, {_N_FEATURES}) array, got "
            f"{x.dtype} of shape {x.shape}."
        )
    if "feature_names" in arrays and len(arrays["feature_names"]) != _N_FEATURES:
        raise ValueError(
            f"{str(path)!r}: 'feature_names' lists {len(arrays['feature_names'])} names for "
            f"{_N_FEATURES} feature columns."
        )
    names = [str(n) for n in arrays.get("class_names", JET_CLASSES)]
    if y.ndim == 2 and y.shape[1] == len(names) and np.all((y == 0) | (y == 1)):
        if not np.all(y.sum(axis=1) == 1):
            raise ValueError(f"{str(path)!r}: a one-hot row of 'y' has other than one 1.")
        y = np.argmax(y, axis=1)
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"{str(path)!r}: 'y' must hold one integer label per jet, shape ({len(x)},), or "
            f"one-hot rows, shape ({len(x)}, {len(names)}); got {y.dtype} of shape {y.shape}."
        )
    outside = y[(y < 0) | (y >= len(names))]
    if outside.size:
        raise ValueError(
            f"{str(path)!r}: labels {sorted(set(outside.tolist()))[:10]} are outside 0.."
            f"{len(names) - 1}, the classes {names}."
        )
    return np.asarray(x, dtype=np.float64), np.asarray(names, dtype=object)[y]


def _parse_arff(stream: TextIO, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse an ARFF stream with scipy's reader (pure numpy, no pandas needed)."""
    try:
        data, meta = arff.loadarff(stream)
    except (arff.ArffError, NotImplementedError, ValueError) as err:
        raise ValueError(f"Cannot parse {str(path)!r} as ARFF: {err}") from err
    names = list(meta.names())
    types = dict(zip(names, meta.types(), strict=True))
    class_column = _find_class_column(names, path)
    feature_columns = [n for n in names if n != class_column]
    _check_feature_count(feature_columns, path)
    non_numeric = [n for n in feature_columns if types[n] != "numeric"]
    if non_numeric:
        raise ValueError(
            f"{str(path)!r}: feature columns must be numeric, but {non_numeric} are not."
        )
    features = np.column_stack([data[n].astype(np.float64) for n in feature_columns])
    raw = data[class_column]
    class_names = np.array(
        [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in raw], dtype=object
    )
    return features, class_names


def _parse_csv(stream: TextIO, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse a CSV stream whose header names the columns, one of them ``class``."""
    reader = csv.reader(stream)
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{str(path)!r} is empty; expected a CSV header row.")
    names = [h.strip() for h in header]
    class_column = _find_class_column(names, path)
    class_index = names.index(class_column)
    feature_columns = [n for i, n in enumerate(names) if i != class_index]
    _check_feature_count(feature_columns, path)

    rows = [row for row in reader if row]
    bad = next((i for i, row in enumerate(rows) if len(row) != len(names)), None)
    if bad is not None:
        raise ValueError(
            f"{str(path)!r}: data row {bad + 1} has {len(rows[bad])} fields, "
            f"the header has {len(names)}."
        )
    table = np.array(rows, dtype=object).reshape(len(rows), len(names))
    feature_indices = [i for i in range(len(names)) if i != class_index]
    try:
        features = table[:, feature_indices].astype(np.float64)
    except ValueError as err:
        raise ValueError(f"{str(path)!r}: non-numeric feature value ({err}).") from err
    class_names = np.array([str(v).strip() for v in table[:, class_index]], dtype=object)
    return features, class_names


def _find_class_column(names: Sequence[str], path: Path) -> str:
    """Return the column holding the labels; OpenML names it ``class``."""
    for name in names:
        if name.strip().lower() == _CLASS_COLUMN:
            return name
    raise ValueError(
        f"{str(path)!r} has no {_CLASS_COLUMN!r} column (found columns {list(names)}); "
        f"expected {_N_FEATURES} feature columns plus a {_CLASS_COLUMN!r} column of class "
        f"names {list(JET_CLASSES)}."
    )


def _check_feature_count(feature_columns: Sequence[str], path: Path) -> None:
    """Reject files whose feature count differs from the 16 the benchmark models expect."""
    if len(feature_columns) != _N_FEATURES:
        raise ValueError(
            f"{str(path)!r} has {len(feature_columns)} feature columns "
            f"{list(feature_columns)}, expected {_N_FEATURES} "
            f"({', '.join(JET_FEATURE_NAMES)}) plus {_CLASS_COLUMN!r}."
        )


def _encode_labels(class_names: np.ndarray) -> np.ndarray:
    """Map class names to indices in :data:`JET_CLASSES` order.

    A fixed table rather than a fitted ``LabelEncoder``: on the full data set both agree, but
    a local subset lacking some class must not shift the indices of the others.
    """
    names = np.asarray(class_names).astype(str)
    names = np.char.strip(np.char.strip(names), "'\"")
    unknown = sorted(set(np.unique(names).tolist()) - set(JET_CLASSES))
    if unknown:
        raise ValueError(
            f"Unknown jet class names {unknown[:10]}; expected only {list(JET_CLASSES)}."
        )
    # JET_CLASSES is sorted, so a binary search maps every name to its index at numpy speed.
    return np.searchsorted(np.asarray(JET_CLASSES), names).astype(np.int32)
