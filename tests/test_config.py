"""Quantizer defaults are the usage guide's; setters, getters and per-layer merging."""

import keras
import numpy as np

from HGQ import (
    HDense,
    HQuantize,
    get_default_kernel_quantizer_config,
    get_default_pre_activation_quantizer_config,
    set_default_kernel_quantizer_config,
    set_default_pre_activation_quantizer_config,
)


def test_defaults_are_the_guides():
    k = get_default_kernel_quantizer_config()
    p = get_default_pre_activation_quantizer_config()
    for cfg in (k, p):
        assert cfg["init_bw"] == 2
        assert cfg["rnd_strategy"] == "standard_round"
        assert cfg["dtype"] is None
        assert tuple(cfg["bw_clip"]) == (-23, 23)
        assert cfg["trainable"] is True
        assert isinstance(cfg["regularizer"], keras.regularizers.L1)
        assert np.isclose(cfg["regularizer"].l1, 1e-6)
    assert k["skip_dims"] is None and k["exact_q_value"] is True
    assert tuple(p["skip_dims"]) == (0,) and p["exact_q_value"] is False
    assert p["minmax_record"] is True


def test_setters_change_new_layers_and_getters_return_copies():
    set_default_kernel_quantizer_config({"init_bw": 5})
    set_default_pre_activation_quantizer_config({"init_bw": 7, "rnd_strategy": "floor"})
    cfg = get_default_kernel_quantizer_config()
    cfg["init_bw"] = 99  # a copy: must not leak into the defaults
    assert get_default_kernel_quantizer_config()["init_bw"] == 5
    layer = HDense(2)
    layer.build((None, 3))
    assert np.all(layer.kernel_quantizer.fractional_bits.numpy() == 5)
    assert np.all(layer.pre_activation_quantizer.fractional_bits.numpy() == 7)
    assert layer.pre_activation_quantizer.config["rnd_strategy"] == "floor"


def test_partial_layer_config_merges_over_defaults():
    layer = HDense(2, kernel_quantizer_config={"init_bw": 4})
    assert layer.kernel_quantizer_config["init_bw"] == 4
    assert layer.kernel_quantizer_config["rnd_strategy"] == "standard_round"
    assert tuple(layer.kernel_quantizer_config["bw_clip"]) == (-23, 23)


def test_auto_rounding_depends_on_bias():
    with_bias = HDense(2, pre_activation_quantizer_config={"rnd_strategy": "auto"})
    no_bias = HDense(2, use_bias=False, pre_activation_quantizer_config={"rnd_strategy": "auto"})
    for layer in (with_bias, no_bias):
        layer.build((None, 3))
    assert with_bias.pre_activation_quantizer.config["rnd_strategy"] == "standard_round"
    assert no_bias.pre_activation_quantizer.config["rnd_strategy"] == "floor"


def test_inp_q_name_rule():
    hetero = HQuantize(name="inp_q")
    homo = HQuantize(name="quantize_input")
    explicit = HQuantize(name="q2", pre_activation_quantizer_config={"skip_dims": (0,)})
    for layer in (hetero, homo, explicit):
        layer.build((None, 5))
    assert tuple(hetero.pre_activation_quantizer.fractional_bits.shape) == (1, 5)
    assert tuple(homo.pre_activation_quantizer.fractional_bits.shape) == (1, 1)
    assert tuple(explicit.pre_activation_quantizer.fractional_bits.shape) == (1, 5)
