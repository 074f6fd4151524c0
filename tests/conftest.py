"""Shared fixtures: guide defaults restored around every test, seeded RNG."""

# isort: off
import HGQ  # noqa: F401  (selects the Keras backend: must precede keras)
import keras

# isort: on
import numpy as np
import pytest

from HGQ.config import reset_default_quantizer_configs


@pytest.fixture(autouse=True)
def _fresh_defaults():
    reset_default_quantizer_configs()
    keras.utils.set_random_seed(0)
    yield
    reset_default_quantizer_configs()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
