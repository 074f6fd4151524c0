"""Deployment limits known before training are reported before training (issue item 7).

What conversion would refuse (dilated convolutions, softmax-like activations, lookup
tables wider than the limit) is refused when the layer is written or the model is
built, or, where only calibration tells, warned about by compute_bops; never first
found after training, at conversion.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from HGQ import HActivation, HConv1D, HConv2D, HDense, HQuantize, Signature
from HGQ.bops import compute_bops
from HGQ.layers.activation import MAX_TABLE_INPUT_BITS
from HGQ.layers.batchnorm import HConv2DBatchNorm
from HGQ.layers.reshaping import PReshape

NOT_ELEMENTWISE_FIX = r"End the model with a linear layer and apply \w+ outside the firmware"


@pytest.mark.parametrize(
    "make",
    [
        lambda: HConv1D(2, 3, dilation_rate=2),
        lambda: HConv2D(2, 3, dilation_rate=(1, 2)),
        lambda: HConv2DBatchNorm(2, 3, dilation_rate=3),
    ],
    ids=["conv1d", "conv2d", "conv2d_batchnorm"],
)
def test_dilated_convolution_is_refused_at_construction(make):
    with pytest.raises(ValueError, match=r"dilation_rate=.* is not supported: hls4ml 1\.3.*"):
        make()


def test_undilated_convolution_is_accepted():
    assert HConv2D(2, 3, dilation_rate=(1, 1)).dilation_rate == (1, 1)


@pytest.mark.smoke
@pytest.mark.parametrize(
    "activation",
    ["softmax", "log_softmax", "sparsemax", keras.activations.softmax],
    ids=["softmax", "log_softmax", "sparsemax", "softmax_function"],
)
def test_not_elementwise_activation_is_refused_at_construction(activation):
    with pytest.raises(ValueError, match=rf"is not element-wise.*{NOT_ELEMENTWISE_FIX}.*argmax"):
        HActivation(activation)


@pytest.mark.parametrize("layer", [HDense, lambda n, **kw: HConv1D(n, 3, **kw)])
@pytest.mark.parametrize("activation", ["softmax", "log_softmax"])
def test_softmax_in_a_layer_points_to_what_converts(layer, activation):
    with pytest.raises(ValueError) as error:
        layer(4, activation=activation)
    message = str(error.value)
    assert "HActivation(" not in message  # HActivation('softmax') is refused as well
    assert "not element-wise" in message
    assert "from_logits=True" in message


def table_model(signature: Signature, activation: str, reshape: bool = False) -> keras.Model:
    layers = [keras.Input((4,)), signature]
    if reshape:
        layers.append(PReshape((2, 2)))
    return keras.Sequential([*layers, HActivation(activation, name="act")])


@pytest.mark.parametrize("reshape", [False, True], ids=["direct", "through_reshape"])
def test_table_wider_than_the_limit_is_refused_when_a_signature_declares_it(reshape):
    too_wide = Signature(keep_negative=[1, 0, 0, 0], bits=[8, 17, 6, 6], int_bits=[3, 4, 2, 2])
    with pytest.raises(ValueError, match=r"'act' \(tanh\): its input is up to 18 bits wide"):
        # union of the formats: k = 1, i = 4, f = 13 (the 17-bit unsigned element)
        table_model(too_wide, "tanh", reshape)


def test_tables_at_the_limit_and_tableless_activations_build():
    at_limit = Signature(keep_negative=1, bits=MAX_TABLE_INPUT_BITS, int_bits=3)
    table_model(at_limit, "tanh")
    table_model(Signature(keep_negative=1, bits=24, int_bits=3), "relu")  # no table


def calibrated_width_model(frac_bits: int, activation: str) -> keras.Model:
    quantize = HQuantize(name="q", pre_activation_quantizer_config={"init_bw": frac_bits})
    return keras.Sequential([keras.Input((3,)), quantize, HActivation(activation, name="act")])


def table_warnings(model: keras.Model, rng: np.random.Generator) -> list[str]:
    # Values in [-4, 3.5]: k = 1, i = 2, so the input is 3 + f bits wide.
    x = rng.uniform(-4, 3.5, size=(64, 3)).astype("float32")
    x[0], x[1] = -4.0, 3.5
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        compute_bops(model, x, verbose=False)
    return [str(w.message) for w in record if "lookup table" in str(w.message)]


def test_compute_bops_warns_when_a_calibrated_table_would_be_too_wide(rng):
    assert table_warnings(calibrated_width_model(14, "sigmoid"), rng) == [
        "compute_bops: HActivation 'act' (sigmoid): its input is up to 17 bits wide (union "
        "of its calibrated formats), so its lookup table would have 2^17 entries; "
        "conversion allows at most 2^16. Narrow the input (a narrower Signature, bw_clip "
        "or a larger bops_reg_factor on the previous layer) or use a ReLU/linear activation."
    ]


@pytest.mark.parametrize("frac_bits, activation", [(13, "sigmoid"), (20, "relu")])
def test_compute_bops_is_silent_on_tables_within_the_limit(frac_bits, activation, rng):
    assert table_warnings(calibrated_width_model(frac_bits, activation), rng) == []
