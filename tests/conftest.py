"""Shared fixtures: guide defaults restored around every test, seeded RNG."""

# isort: off
import HGQ  # noqa: F401  (selects the Keras backend: must precede keras)
import keras

# isort: on
import numpy as np
import pytest

from HGQ.config import reset_default_quantizer_configs


def pytest_configure(config):
    """JAX's persistent compilation cache, in pytest's cache directory: many tests
    train or calibrate the same small architectures, and a compiled step is then
    read back instead of compiled again (the same executable; only the time differs)."""
    if keras.backend.backend() != "jax" or getattr(config, "cache", None) is None:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", str(config.cache.mkdir("jax-compilation")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


# The longest test files (each over about a minute; `./scripts/test.sh --durations=40`,
# 2026-12-08), heaviest first. `--dist loadfile` hands whole files to the two workers in
# collection order, so a heavy file collected last (alphabetically, test_rtl.py) ran
# alone at the end while the other worker sat idle; starting with these evens the load.
HEAVY_FILES_FIRST = (
    "test_fuzz.py",
    "test_rtl.py",
    "test_attention.py",
    "test_hls4ml_overflow.py",
    "test_demo.py",
    "test_distributed.py",
    "test_jet_tagging_example.py",
    "test_softmax.py",
)


def pytest_collection_modifyitems(config, items):
    """Run the heaviest files first (a stable sort: order within a file is kept)."""
    rank = {name: i for i, name in enumerate(HEAVY_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(autouse=True)
def _fresh_defaults():
    reset_default_quantizer_configs()
    keras.utils.set_random_seed(0)
    yield
    reset_default_quantizer_configs()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
