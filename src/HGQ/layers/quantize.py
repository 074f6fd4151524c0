"""HQuantize: turns float inputs into heterogeneous fixed point."""

from __future__ import annotations

from typing import Any

import keras

from HGQ.config import check_config_mapping
from HGQ.layers.base import HBaseLayer, take_original_keyword

HETEROGENEOUS_INPUT_TAG = "inp_q"


@keras.saving.register_keras_serializable(package="HGQ")
class HQuantize(HBaseLayer):
    """Quantize the input of the next layer; costs no EBOPs itself.

    The usage guide's rule holds: unless the config names ``skip_dims``, an
    HQuantize whose name contains ``'inp_q'`` learns one bitwidth per input element,
    any other HQuantize one bitwidth for the whole tensor. There is no bias to absorb
    a rounding offset, so ``rnd_strategy='auto'`` truncates.
    """

    requires_input_bitwidth = False
    output_absorbs_rounding = False

    def __init__(self, pre_activation_quantizer_config: dict[str, Any] | None = None, **kwargs):
        pre_activation_quantizer_config = take_original_keyword(
            kwargs, "pre_activation_quantizer_config", pre_activation_quantizer_config, None
        )
        kwargs.pop("kernel_quantizer_config", None)
        kwargs.pop("kq_conf", None)
        check_config_mapping(
            pre_activation_quantizer_config, "HQuantize: pre_activation_quantizer_config"
        )
        user_config = dict(pre_activation_quantizer_config or {})
        super().__init__(pre_activation_quantizer_config=user_config, **kwargs)
        if "skip_dims" not in user_config:
            heterogeneous = HETEROGENEOUS_INPUT_TAG in self.name
            self.pre_activation_quantizer_config["skip_dims"] = (0,) if heterogeneous else "all"

    def forward(self, inputs, training=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape
