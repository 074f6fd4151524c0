"""HGQ layers compute in float32 whatever Keras's global dtype policy (SPEC §6).

Under a mixed or half-precision policy a layer that followed it would round its
fixed-point values to float16's 11 or bfloat16's 8 significant bits, so inference
would differ from the firmware. The reference here is independent of the policy: the
same weights in the same model built under the float32 policy.
"""

from __future__ import annotations

from collections.abc import Iterator

import hls_support as hs
import keras
import numpy as np
import pytest

from HGQ import HActivation, HDense, HQuantize
from HGQ.bops import ResetMinMax, compute_bops

# The default run covers both mixed policies; pure bfloat16 runs with the slow tests.
POLICIES = ["mixed_float16", "mixed_bfloat16", pytest.param("bfloat16", marks=pytest.mark.slow)]
# Wide formats: values with more significant bits than float16 or bfloat16 keep.
WIDE = {"init_bw": 8}


@pytest.fixture(params=POLICIES)
def policy(request) -> Iterator[str]:
    """Set the global dtype policy for one test, and always restore float32."""
    keras.config.set_dtype_policy(request.param)
    try:
        yield request.param
    finally:
        keras.config.set_dtype_policy("float32")


def mlp() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,)),
            HQuantize(name="inp_q", pre_activation_quantizer_config=WIDE),
            HDense(
                8,
                activation="relu",
                kernel_quantizer_config=WIDE,
                pre_activation_quantizer_config=WIDE,
            ),
            HActivation("tanh", pre_activation_quantizer_config=WIDE),
            HDense(3, kernel_quantizer_config=WIDE, pre_activation_quantizer_config=WIDE),
        ]
    )


def data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(scale=4.0, size=(256, 6)).astype("float32")
    return x, rng.normal(size=(256, 3)).astype("float32")


def float32_twin(model: keras.Model) -> keras.Model:
    """The same architecture and weights, built under the float32 policy."""
    saved = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        twin = mlp()
    finally:
        keras.config.set_dtype_policy(saved)
    twin.set_weights(model.get_weights())
    return twin


def assert_all_float32(model: keras.Model) -> None:
    wrong = {v.path: str(v.dtype) for v in model.variables if str(v.dtype) != "float32"}
    assert not wrong, wrong


@pytest.mark.smoke
def test_trains_calibrates_and_predicts_the_float32_bits(policy, rng):
    model = mlp()
    x, y = data(rng)
    model.compile("adam", "mse")
    model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[ResetMinMax()])
    bops = compute_bops(model, x, verbose=False)
    x_test = np.concatenate([x, 8 * x])  # 8x: outside the calibrated range, wraps
    got = model.predict(x_test, verbose=0)
    twin = float32_twin(model)
    np.testing.assert_array_equal(got, twin.predict(x_test, verbose=0))
    assert compute_bops(twin, x, verbose=False) == bops
    assert got.dtype == np.float32
    assert_all_float32(model)


def test_layers_created_before_the_policy_is_set_build_in_float32(rng):
    layers = [HQuantize(name="inp_q"), HDense(4, activation="relu"), HDense(2)]
    keras.config.set_dtype_policy("bfloat16")
    try:
        model = keras.Sequential([keras.Input((6,)), *layers])  # quantizers built here
        assert_all_float32(model)
        sublayers = [
            layer
            for layer in model._flatten_layers(include_self=False)
            if not isinstance(layer, keras.layers.InputLayer)
        ]
        assert len(sublayers) == 3 + 5  # 3 layers, 5 quantizers
        assert all(layer.compute_dtype == "float32" for layer in sublayers)
    finally:
        keras.config.set_dtype_policy("float32")


def test_save_and_load_under_the_policy(policy, rng, tmp_path):
    model = mlp()
    x, y = data(rng)
    model.compile("adam", "mse")
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    bops = compute_bops(model, x, verbose=False)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert_all_float32(loaded)
    x_test = np.concatenate([x, 8 * x])
    np.testing.assert_array_equal(
        model.predict(x_test, verbose=0), loaded.predict(x_test, verbose=0)
    )
    assert compute_bops(loaded, x, verbose=False) == bops


@pytest.mark.parametrize("dtype", ["float16", "mixed_float16", "bfloat16", "float64"])
def test_explicit_non_float32_dtype_is_refused(dtype):
    with pytest.raises(ValueError, match=rf"HDense 'd': dtype='{dtype}'.*Omit dtype"):
        HDense(4, dtype=dtype, name="d")
    with pytest.raises(ValueError, match=r"pre_activation_quantizer_config: dtype.*Omit dtype"):
        HDense(4, pre_activation_quantizer_config={"dtype": dtype})


def test_explicit_float32_dtype_is_accepted():
    assert HDense(4, dtype="float32").compute_dtype == "float32"
    layer = HDense(4, kernel_quantizer_config={"dtype": "float32"})
    layer.build((None, 3))
    assert str(layer.kernel_quantizer.fractional_bits.dtype) == "float32"


@pytest.mark.slow
def test_converts_bit_exactly_under_mixed_precision(rng, tmp_path):
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = mlp()
        x, y = data(rng)
        hs.train_briefly(model, x, y, epochs=1)
        model_hls = hs.convert_compiled(model, x, tmp_path / "prj")
        x_test = np.concatenate([x, hs.out_of_range(x, rng)])
        assert hs.mismatches(model, model_hls, x_test) == (0, x_test.shape[0] * 3)
    finally:
        keras.config.set_dtype_policy("float32")
