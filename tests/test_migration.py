"""Code written for the original HGQ 0.2 runs: its keyword and import names."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from HGQ import HDense, HQuantize, PFlatten


@pytest.mark.smoke
def test_original_imports_from_the_package():
    import HGQ
    from HGQ import CalibratedBOPs, FreeBOPs, ResetMinMax, callbacks, trace_minmax

    assert ResetMinMax is callbacks.ResetMinMax and FreeBOPs is callbacks.FreeBOPs
    assert CalibratedBOPs is callbacks.CalibratedBOPs
    assert trace_minmax is HGQ.bops.compute_bops


@pytest.mark.smoke
def test_beta_kq_conf_and_paq_conf_mean_the_new_keywords():
    layer = HDense(4, beta=3e-5, kq_conf={"init_bw": 5}, paq_conf={"init_bw": 6})
    assert layer.bops_reg_factor == 3e-5
    assert layer.kernel_quantizer_config["init_bw"] == 5
    assert layer.pre_activation_quantizer_config["init_bw"] == 6
    q = HQuantize(name="inp_q", beta=1e-6, paq_conf={"init_bw": 3})
    assert q.bops_reg_factor == 1e-6 and q.pre_activation_quantizer_config["init_bw"] == 3
    assert q.pre_activation_quantizer_config["skip_dims"] == (0,)  # the 'inp_q' rule holds
    assert PFlatten(beta=1e-6).get_config().get("bops_reg_factor") is None
    config = layer.get_config()
    assert config["bops_reg_factor"] == 3e-5 and "beta" not in config
    assert HDense.from_config(config).kernel_quantizer_config["init_bw"] == 5


def test_original_keywords_train_and_calibrate():
    from HGQ import ResetMinMax, trace_minmax

    model = keras.Sequential(
        [
            keras.Input((6,)),
            HQuantize(name="inp_q", beta=1e-5),
            HDense(4, activation="relu", beta=1e-5, kq_conf={"init_bw": 3}),
            HDense(2, beta=1e-5),
        ]
    )
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    model.compile("adam", "mse")
    model.fit(x, x[:, :2], epochs=1, verbose=0, callbacks=[ResetMinMax()])
    assert trace_minmax(model, x, verbose=False) > 0


def test_a_keyword_and_its_original_alias_together_is_an_error():
    with pytest.raises(ValueError, match="beta"):
        HDense(4, beta=1e-5, bops_reg_factor=1e-4)
    with pytest.raises(ValueError, match="kq_conf"):
        HDense(4, kq_conf={}, kernel_quantizer_config={"init_bw": 3})
    with pytest.raises(ValueError, match="paq_conf"):
        HQuantize(paq_conf={}, pre_activation_quantizer_config={"init_bw": 3})
