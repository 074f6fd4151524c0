"""HActivation: any element-wise Keras activation, quantized per element after the function.

Non-linear functions become lookup tables in hardware, indexed by the raw bits of the
input. Two limits of that deployment are known before training and are checked here,
not only at conversion: the function must act element by element, and a table may be
indexed by at most ``MAX_TABLE_INPUT_BITS`` bits.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from HGQ.fixed_point import union_format
from HGQ.layers.base import NOT_ELEMENTWISE, HBaseLayer, PLayerBase, not_elementwise_fix
from HGQ.layers.signature import Signature
from HGQ.layers.softmax import HSoftmax
from HGQ.logic_costs import table_cost
from HGQ.quantizer import is_calibrating
from HGQ.tabulated import MAX_TABLE_INPUT_BITS, input_table, tabulated


@keras.saving.register_keras_serializable(package="HGQ")
class HActivation(HBaseLayer):
    """Applies ``activation`` then quantizes the result per element.

    Non-linear functions become lookup tables in hardware, indexed by the (already
    fixed-point) input; the output always rounds to nearest, whatever ``'auto'`` says.
    Functions that mix the elements of a sample (softmax, ...) are refused.
    """

    output_absorbs_rounding = True

    def __init__(self, activation: Any, **kwargs):
        """Refuses softmax-like functions here, before any training is spent on them."""
        function = keras.activations.get(activation)
        name = getattr(function, "__name__", "")
        if name in NOT_ELEMENTWISE:
            raise ValueError(
                f"HActivation({activation!r}): {name} is not element-wise (each output "
                "depends on the whole sample), so it cannot be a per-element lookup table, "
                f"and hls4ml's own softmax is not bit-exact. {not_elementwise_fix(name)}"
            )
        kwargs.pop("kernel_quantizer_config", None)
        super().__init__(**kwargs)
        self.activation = function

    def output_is_non_negative(self) -> bool:
        return self.activation in (keras.activations.relu, keras.activations.sigmoid)

    def uses_lookup_table(self) -> bool:
        """Whether deployment computes this function with a table (all but ReLU/linear)."""
        return self.activation not in (keras.activations.relu, keras.activations.linear)

    def lookup_table_input_bits(self) -> int:
        """Width of the table's index: the union of the calibrated input formats."""
        k, i, f = union_format(self.input_source().exact_output_format())
        return k + i + f

    def table_too_wide_message(self, width: int, when: str) -> str:
        """Why a table indexed by ``width`` bits cannot be deployed, and what to do."""
        return (
            f"HActivation '{self.name}' ({getattr(self.activation, '__name__', '?')}): its "
            f"input is up to {width} bits wide {when}, so its lookup table would have "
            f"2^{width} entries; conversion allows at most 2^{MAX_TABLE_INPUT_BITS}. Narrow "
            "the input (a narrower Signature, bw_clip or a larger bops_reg_factor on the "
            "previous layer) or use a ReLU/linear activation."
        )

    def build(self, input_shape) -> None:
        """Refuses a table that is too wide when the input format is declared (Signature)."""
        if self.uses_lookup_table() and self._input_is_declared():
            width = self.lookup_table_input_bits()
            if width > MAX_TABLE_INPUT_BITS:
                raise ValueError(self.table_too_wide_message(width, "(declared by Signature)"))
        super().build(input_shape)

    def _input_is_declared(self) -> bool:
        """Whether the input's formats are fixed before calibration: a Signature's,
        possibly moved by one-input passive layers (reshape, flatten, ...)."""
        if self._input_source_refs is None:
            return False  # a subclassed model's first call: the source is not known yet
        source = self.input_source()
        while isinstance(source, PLayerBase) and len(source._input_source_refs or ()) == 1:
            source = source.input_source()
        return isinstance(source, Signature)

    def prepare_table(self) -> None:
        """Tabulate the function over the grid of the calibrated input formats (their
        union) for inference to read (see ``HGQ.tabulated``); called by ``compute_bops``
        and when a calibrated model is loaded. No table for ReLU/linear, before the
        input's formats are known, or beyond ``MAX_TABLE_INPUT_BITS``."""
        uses_table = self.uses_lookup_table()
        self._inference_table = input_table(self, self.activation) if uses_table else None

    def load_own_variables(self, store) -> None:
        super().load_own_variables(store)
        self.prepare_table()

    def forward(self, inputs, training=None):
        if training or is_calibrating():
            return self.activation(inputs)
        return tabulated(inputs, self.activation, getattr(self, "_inference_table", None))

    def compute_output_shape(self, input_shape):
        return input_shape

    def bops_surrogate(self):
        if not self.uses_lookup_table():
            return None
        return ops.sum(table_cost(self.input_bitwidth(), self.output_bitwidth(), ops))

    def output_varies(self):
        shape = ops.shape(ops.convert_to_tensor(self.output_bitwidth()))
        return ops.broadcast_to(self.input_varies(), shape)

    def exact_output_varies(self) -> np.ndarray:
        return np.broadcast_to(self.exact_input_varies(), np.shape(self.exact_output_bitwidth()))

    def compute_exact_bops(self) -> float:
        """The lookup tables, by ``HGQ.logic_costs`` (0 for ReLU and linear)."""
        if not self.uses_lookup_table():
            return 0.0
        bits_in = self.exact_input_bitwidth().astype(np.float64)
        bits_out = self.exact_output_bitwidth().astype(np.float64)
        return float(np.sum(table_cost(bits_in, bits_out, np)))

    def exact_cost_parts(self) -> dict[str, float]:
        return {"tables": self.compute_exact_bops()}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("kernel_quantizer_config", None)
        config["activation"] = keras.activations.serialize(self.activation)
        return config


def exceeding_table_widths(layers: list[Any]) -> list[str]:
    """Why each calibrated HActivation among ``layers`` could not become a table.

    Called by ``compute_bops``, so that users learn it right after training rather
    than when they convert.
    """
    messages = []
    for layer in layers:
        if isinstance(layer, HSoftmax):
            for stage, width in layer.table_input_bits().items():
                if width > MAX_TABLE_INPUT_BITS:
                    messages.append(
                        f"HSoftmax '{layer.name}': its {stage} table would be indexed by "
                        f"{width} bits (2^{width} entries; conversion allows at most "
                        f"2^{MAX_TABLE_INPUT_BITS}). Narrow its input or give it fewer "
                        "fractional bits (bw_clip in exp_quantizer_config)."
                    )
        if isinstance(layer, HActivation) and layer.uses_lookup_table():
            width = layer.lookup_table_input_bits()
            if width > MAX_TABLE_INPUT_BITS:
                messages.append(
                    layer.table_too_wide_message(width, "(union of its calibrated formats)")
                )
    return messages


__all__ = ["MAX_TABLE_INPUT_BITS", "HActivation", "exceeding_table_widths"]
