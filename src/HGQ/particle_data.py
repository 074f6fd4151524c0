"""Constituent-level jet data: a generated toy set, and real data from an ``.npz`` file.

Taggers over particles (Deep Sets, MLP-Mixers, transformers) take each jet as a
``(particles, features)`` array. Real constituent data sets (e.g. the hls4ml LHC jet
data set's constituent lists, 30-150 particles with pT, η, φ and more per particle) come
in many layouts; :func:`load_particle_jets` reads the one common denominator, an
``.npz`` file with ``x`` of shape ``(jets, particles, features)`` and ``y`` holding one
integer class per jet, so that any source can be converted once and plugged in.

:func:`toy_particle_jets` generates jets whose class is their number of prongs (1, 2
or 3 clusters of particles in (η, φ), spread wider with more prongs): a task a
permutation-invariant tagger learns in a few epochs, for tests and for a first run
without data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Names of the toy set's classes: jets of one, two or three prongs.
TOY_CLASSES = ("1-prong", "2-prong", "3-prong")


def toy_particle_jets(
    n_jets: int, particles: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n_jets`` toy jets, ``x`` of shape ``(n_jets, particles, 3)``, ``y`` the class.

    Features per particle: the pT fraction, Δη and Δφ from the jet axis. A jet of
    class ``c`` has ``c + 1`` prongs spaced evenly (at a random rotation) on a circle
    of radius 0, 0.25 or 0.5 around the axis; particles scatter around their prong by
    0.05 and share the pT with exponential weights. Particles are ordered by
    decreasing pT, as constituent lists usually are (which an MLP-Mixer's token mixing
    relies on; Deep Sets ignore the order). The classes differ in how far the
    particles spread, a sum over particles that a Deep Sets model learns in a few
    epochs.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(TOY_CLASSES), size=n_jets)
    prongs = y + 1
    prong_of = rng.integers(0, 6, size=(n_jets, particles)) % prongs[:, None]
    angle = rng.uniform(0, 2 * np.pi, size=(n_jets, 1)) + 2 * np.pi * prong_of / prongs[:, None]
    radius = np.array([0.0, 0.25, 0.5])[y][:, None]
    position = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)
    position = position + rng.normal(scale=0.05, size=position.shape)
    pt = rng.exponential(size=(n_jets, particles))
    pt /= pt.sum(axis=1, keepdims=True)
    x = np.concatenate([pt[..., None], position], axis=-1)
    order = np.argsort(-pt, axis=1, kind="stable")  # by decreasing pT, as constituent lists are
    x = np.take_along_axis(x, order[..., None], axis=1).astype("float32")
    return x, y.astype("int32")


def load_particle_jets(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (float32, ``(jets, particles, features)``) and ``y`` (int32) from an ``.npz``.

    Errors name what is wrong with the file and what it must hold.
    """
    path = Path(path)
    expected = (
        "an .npz file with 'x' of shape (jets, particles, features) and 'y' holding one "
        "integer class per jet (np.savez(path, x=x, y=y))"
    )
    if not path.is_file():
        raise FileNotFoundError(f"No constituent data at {path}: expected {expected}.")
    try:
        with np.load(path) as data:
            missing = {"x", "y"} - set(data.files)
            if missing:
                raise ValueError(
                    f"{path} has no array {sorted(missing)} (it holds {sorted(data.files)}); "
                    f"expected {expected}."
                )
            x, y = data["x"], data["y"]
    except (OSError, ValueError) as error:
        if isinstance(error, ValueError) and str(path) in str(error):
            raise
        raise ValueError(f"{path} cannot be read as .npz ({error}); expected {expected}.") from None
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(
            f"{path}: x has shape {x.shape} and y {y.shape}; expected {expected}, with as "
            "many labels as jets."
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{path}: y has dtype {y.dtype}; expected integer class indices.")
    return x.astype("float32"), y.astype("int32")
