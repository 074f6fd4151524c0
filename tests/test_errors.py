"""SPEC §9: bad input raises an error naming cause and fix; the model stays as it was."""

import keras
import numpy as np
import pytest

from HGQ import (
    HActivation,
    HDense,
    HQuantize,
    set_default_kernel_quantizer_config,
)
from HGQ.bops import compute_bops


@pytest.mark.parametrize(
    "config, match",
    [
        ({"rnd_strategy": "round_nearest"}, "Unknown rnd_strategy 'round_nearest'. Choose one of"),
        ({"skip_dims": "channels"}, "Unknown skip_dims 'channels'"),
        ({"bw_clip": (8, -8)}, r"lo > hi.*bw_clip=\(-8, 8\)"),
        ({"init_bits": 3}, r"Unknown quantizer config key\(s\) \['init_bits'\]"),
    ],
)
def test_bad_quantizer_configs(config, match):
    with pytest.raises(ValueError, match=match):
        HDense(4, kernel_quantizer_config=config)
    with pytest.raises(ValueError, match=match):
        HDense(4, pre_activation_quantizer_config=config)


def test_bad_default_config_leaves_defaults_unchanged():
    from HGQ import get_default_kernel_quantizer_config

    before = get_default_kernel_quantizer_config()
    with pytest.raises(ValueError, match="rnd_strategy"):
        set_default_kernel_quantizer_config({"init_bw": 5, "rnd_strategy": "nope"})
    after = get_default_kernel_quantizer_config()
    assert after["init_bw"] == before["init_bw"]


@pytest.mark.smoke
def test_first_layer_must_be_hquantize_or_signature():
    with pytest.raises(ValueError, match="fed directly by the model input.*HQuantize.*Signature"):
        keras.Sequential([keras.Input((4,)), HDense(3)])


def test_plain_keras_layer_between_hgq_layers_is_rejected():
    with pytest.raises(ValueError, match="'plain'.*not an HGQ layer.*HDense"):
        keras.Sequential(
            [
                keras.Input((4,)),
                HQuantize(name="inp_q"),
                keras.layers.Dense(4, name="plain"),
                HDense(3),
            ]
        )


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "swish"])
def test_dense_rejects_nonlinear_activation_and_points_to_hactivation(activation):
    with pytest.raises(ValueError, match=f"HActivation\\('{activation}'\\)"):
        HDense(4, activation=activation)


def test_unknown_activation_name_in_hactivation():
    with pytest.raises(ValueError):
        HActivation("not_an_activation")


def _model():
    return keras.Sequential([keras.Input((3,)), HQuantize(name="inp_q"), HDense(2)])


def _state(model):
    return [v.numpy().copy() for v in model.variables]


@pytest.mark.parametrize(
    "data, match",
    [
        (np.zeros((0, 3), "float32"), "empty calibration set"),
        (np.array([[1.0, np.nan, 0.0], [0.0, 0.0, 0.0]], "float32"), "1 NaN/inf"),
        (np.array([[np.inf, 0.0, 0.0]], "float32"), "NaN/inf"),
    ],
)
def test_bad_calibration_data_is_refused_and_model_untouched(rng, data, match):
    model = _model()
    compute_bops(model, rng.normal(size=(16, 3)).astype("float32"), verbose=False)
    before = _state(model)
    with pytest.raises(ValueError, match=match):
        compute_bops(model, data, verbose=False)
    for a, b in zip(before, _state(model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_diverged_model_is_refused_with_the_cause_and_left_untouched(rng):
    model = _model()
    compute_bops(model, rng.normal(size=(16, 3)).astype("float32"), verbose=False)
    kernel = model.layers[1].kernel
    kernel.assign(np.where(np.eye(3, 2) > 0, np.nan, kernel.numpy()).astype("float32"))
    before = _state(model)
    with pytest.raises(ValueError, match=rf"1 weight\(s\).*\({kernel.path}\).*diverged"):
        compute_bops(model, rng.normal(size=(16, 3)).astype("float32"), verbose=False)
    for a, b in zip(before, _state(model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_failed_calibration_restores_records(rng):
    model = _model()
    compute_bops(model, rng.normal(size=(16, 3)).astype("float32"), verbose=False)
    before = _state(model)
    with pytest.raises(ValueError, match=r"sample shape \(5,\).*expects \(3,\)"):
        compute_bops(model, rng.normal(size=(16, 5)).astype("float32"), verbose=False)
    for a, b in zip(before, _state(model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_model_without_hgq_layers():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no HGQ layers"):
        compute_bops(model, np.zeros((4, 3), "float32"))


def test_failure_inside_calibration_restores_every_variable(rng, monkeypatch):
    model = _model()
    compute_bops(model, rng.normal(size=(16, 3)).astype("float32"), verbose=False)
    before = _state(model)

    def broken_predict(*args, **kwargs):
        for q in model.layers:
            q.pre_activation_quantizer.vmax.assign(np.full((1,) + q.output.shape[1:], 9.0))
        raise RuntimeError("device lost")

    monkeypatch.setattr(model, "predict_on_batch", broken_predict)
    with pytest.raises(RuntimeError, match="device lost"):
        compute_bops(model, rng.normal(size=(16, 3)).astype("float32"), verbose=False)
    for a, b in zip(before, _state(model), strict=True):
        np.testing.assert_array_equal(a, b)
