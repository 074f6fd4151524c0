"""Small models of every architecture family HGQ offers, with default layer settings.

Each builder takes β and returns an uncompiled Keras model; ``teacher_data`` gives a
matching classification task (features from a fixed random teacher, no download), so
that training shapes the formats as real data would. Used by ``bench/resources.py``
(EBOPs against LUTs) and ``bench/front.py`` (the Deep Sets front).
"""

from __future__ import annotations

import time
from collections.abc import Callable

# isort: off
import HGQ  # noqa: F401  (selects the Keras backend: must precede keras)
import keras

# isort: on
import numpy as np

from HGQ import (
    HActivation,
    HAdd,
    HConv1D,
    HConv2D,
    HDense,
    HEinsumDense,
    HMultiHeadAttention,
    HMultiply,
    HQuantize,
    HSoftmax,
    PAvgPool1D,
    PFlatten,
    PGlobalAvgPool1D,
    PGlobalMaxPool1D,
    PMaxPool2D,
)

CLASSES = 5


def _q(beta: float, **kwargs) -> dict:
    return {"bops_reg_factor": beta, **kwargs}


def mlp(beta: float) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((16,)),
            HQuantize(**_q(beta)),
            HDense(32, activation="relu", **_q(beta)),
            HDense(16, activation="relu", **_q(beta)),
            HDense(CLASSES, **_q(beta)),
        ],
        name="mlp",
    )


def cnn2d(beta: float) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            HQuantize(**_q(beta)),
            HConv2D(4, 3, padding="same", activation="relu", **_q(beta)),
            PMaxPool2D(2),
            HConv2D(8, 3, activation="relu", **_q(beta)),
            PFlatten(),
            HDense(CLASSES, **_q(beta)),
        ],
        name="cnn2d",
    )


def cnn1d_avg(beta: float) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((16, 3)),
            HQuantize(**_q(beta)),
            HConv1D(6, 3, activation="relu", **_q(beta)),
            PAvgPool1D(2),
            HConv1D(6, 3, activation="relu", **_q(beta)),
            PFlatten(),
            HDense(CLASSES, **_q(beta)),
        ],
        name="cnn1d_avg",
    )


def deep_sets(beta: float) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((16, 4)),
            HQuantize(**_q(beta)),
            HDense(12, activation="relu", **_q(beta)),
            HDense(12, activation="relu", **_q(beta)),
            PGlobalAvgPool1D(),
            HDense(CLASSES, **_q(beta)),
        ],
        name="deep_sets",
    )


def mixer(beta: float) -> keras.Model:
    inputs = keras.Input((8, 4))
    x = HQuantize(**_q(beta))(inputs)
    x = HDense(8, activation="relu", **_q(beta))(x)
    tokens = HEinsumDense("bpc,pq->bqc", (8, 8), activation="relu", **_q(beta))(x)
    x = HAdd(**_q(beta))([x, tokens])
    x = PGlobalMaxPool1D()(x)
    outputs = HDense(CLASSES, **_q(beta))(x)
    return keras.Model(inputs, outputs, name="mixer")


def softmax_head(beta: float) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((16,)),
            HQuantize(**_q(beta)),
            HDense(16, activation="relu", **_q(beta)),
            HDense(8, **_q(beta)),
            HSoftmax(**_q(beta)),
        ],
        name="softmax_head",
    )


def attention(beta: float) -> keras.Model:
    inputs = keras.Input((8, 4))
    x = HQuantize(**_q(beta))(inputs)
    attended = HMultiHeadAttention(2, 4, **_q(beta))(x, x)
    x = HAdd(**_q(beta))([x, attended])
    x = PGlobalAvgPool1D()(x)
    outputs = HDense(CLASSES, **_q(beta))(x)
    return keras.Model(inputs, outputs, name="attention")


def gated(beta: float) -> keras.Model:
    inputs = keras.Input((16,))
    x = HQuantize(**_q(beta))(inputs)
    value = HDense(16, **_q(beta))(x)
    gate = HDense(16, **_q(beta))(x)
    gate = HActivation("sigmoid", **_q(beta))(gate)
    x = HMultiply(**_q(beta))([value, gate])
    outputs = HDense(CLASSES, **_q(beta))(x)
    return keras.Model(inputs, outputs, name="gated")


FAMILIES: dict[str, tuple[Callable[[float], keras.Model], tuple[int, ...]]] = {
    "mlp": (mlp, (16,)),
    "cnn2d": (cnn2d, (8, 8, 1)),
    "cnn1d_avg": (cnn1d_avg, (16, 3)),
    "deep_sets": (deep_sets, (16, 4)),
    "mixer": (mixer, (8, 4)),
    "softmax_head": (softmax_head, (16,)),
    "attention": (attention, (8, 4)),
    "gated": (gated, (16,)),
}


#: Families that treat their input as a set of tokens (a permutation of the tokens at
#: most permutes their output before a global pool): their task must be symmetric too.
SET_FAMILIES = frozenset({"deep_sets", "mixer", "attention"})


def teacher_data(
    sample_shape: tuple[int, ...], n: int = 4000, seed: int = 0, symmetric: bool = False
):
    """Standard-normal samples of ``sample_shape``, labels from a fixed random teacher;
    returns ``x_train, x_test, y_train, y_test``.

    The teacher is a tanh layer on the flattened sample, or, with ``symmetric`` (for
    ``SET_FAMILIES``: a model that pools over its tokens cannot tell their order), a
    tanh layer per token averaged over the tokens, so that the task is learnable by a
    permutation-invariant model.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *sample_shape)).astype("float32")
    if symmetric:
        tokens, features = sample_shape
        per_token = np.tanh(x @ rng.normal(size=(features, 12)) / np.sqrt(features))
        hidden = per_token.mean(axis=1) * np.sqrt(tokens)
    else:
        flat = x.reshape(n, -1)
        hidden = np.tanh(flat @ rng.normal(size=(flat.shape[1], 12)) / np.sqrt(flat.shape[1]))
    y = np.argmax(hidden @ rng.normal(size=(12, CLASSES)), axis=1).astype("int32")
    cut = int(0.75 * n)
    return x[:cut], x[cut:], y[:cut], y[cut:]


def train_family(family: str, beta: float, epochs: int):
    """The family's model trained at fixed ``beta`` on its teacher task (Adam 3e-3, batch
    64, seed 0), as ``bench/resources.py`` and ``bench/alkaid_options.py`` measure it;
    returns ``model, (x_train, x_test, y_train, y_test), seconds of training``."""
    from HGQ.callbacks import ResetMinMax

    build, sample_shape = FAMILIES[family]
    data = teacher_data(sample_shape, symmetric=family in SET_FAMILIES)
    keras.utils.set_random_seed(0)
    model = build(beta)
    probabilities = family == "softmax_head"
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities)
    model.compile(keras.optimizers.Adam(3e-3), loss, metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(data[0], data[2], epochs=epochs, batch_size=64, verbose=0, callbacks=[ResetMinMax()])
    return model, data, time.perf_counter() - start
