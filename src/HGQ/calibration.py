"""Calibration of integer bits and the exact EBOPs (``compute_bops``).

``compute_bops`` is the step between training and deployment: it runs data through
the model in inference mode while recording every activation's range, fixes the
integer bits from those ranges (after which inference wraps on overflow exactly as
the firmware does) and returns the exact EBOPs.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import keras
import numpy as np

from HGQ.calibration_data import (
    check_batch_size,
    in_memory_inputs,
    input_batches,
    pad_to,
    pair_with_inputs,
)
from HGQ.config import is_finite_number
from HGQ.costs import EBOPs, layer_costs
from HGQ.full_precision import tensorflow_tf32_warning
from HGQ.layers.activation import exceeding_table_widths
from HGQ.layers.base import HBaseLayer
from HGQ.layers.replacements import check_only_hgq_layers
from HGQ.layers.signature import Signature
from HGQ.model_layers import hgq_layers
from HGQ.quantizer import HGQuantizer, calibrating


def _activation_quantizers(model: keras.Model) -> list[HGQuantizer]:
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, HGQuantizer) and layer.is_activation
    ]


def _check_batch_values(batch: Any) -> None:
    arrays = keras.tree.flatten(batch)
    for array in arrays:
        if array.ndim == 0:
            raise ValueError(
                "compute_bops: a calibration batch holds a scalar; the data must have a "
                "leading sample axis (e.g. shape (n_samples, n_features))."
            )
        if not np.all(np.isfinite(array)):
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise ValueError(
                f"compute_bops got {bad} NaN/inf value(s) in the calibration data; "
                "ranges recorded from them would be meaningless. Clean or drop those "
                "samples (np.isfinite) and call compute_bops again."
            )


def _check_finite_weights(model: keras.Model) -> None:
    """A model whose training diverged has NaN/inf weights; its ranges mean nothing."""
    bad = [v.path for v in model.trainable_variables if not np.all(np.isfinite(v.numpy()))]
    if bad:
        listed = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise ValueError(
            f"compute_bops: {len(bad)} weight(s) of model '{model.name}' hold NaN/inf "
            f"({listed}), so training diverged (the loss history shows nan). Common "
            "causes: a loss that expects probabilities on a linear output (use "
            "from_logits=True), or a learning rate that is too high. Retrain, then "
            "calibrate."
        )


def _snapshot(model: keras.Model) -> list[tuple[Any, np.ndarray]]:
    """Every variable's value. A predict that fails midway on the JAX backend can
    leave variables detached, so all of them are restored, not just the records."""
    return [(v, v.numpy()) for v in model.variables]


def _check_input_shapes(model: keras.Model, batch: Any) -> None:
    for tensor, array in pair_with_inputs(model, batch):
        expected = tuple(tensor.shape[1:])
        got = tuple(np.shape(array)[1:])
        if len(expected) != len(got) or any(
            e is not None and e != g for e, g in zip(expected, got, strict=True)
        ):
            raise ValueError(
                f"compute_bops: calibration data for input '{tensor.name}' has sample "
                f"shape {got}, but model '{model.name}' expects {expected}. Pass data "
                "shaped like the training inputs."
            )


def _fed_signatures(model: keras.Model) -> list[tuple[Signature, set[int]]]:
    """Each ``Signature`` of the model with the ids of the model inputs that feed it.

    Only functional and Sequential models say which input feeds which layer; in a
    subclassed model the Signatures are not found, and nothing is checked.
    """
    found = []
    for layer in hgq_layers(model):
        if isinstance(layer, Signature):
            # A Sequential model rebuilt after `add` calls its layers again: any node counts.
            fed = {id(t) for node in layer._inbound_nodes for t in node.input_tensors}
            found.append((layer, fed))
    return found


def _shortest(value: np.float32) -> str:
    """The shortest decimal that reads back as this float32."""
    return np.format_float_positional(value, unique=True, trim="-")


class _SignatureConformity:
    """Counts, over the calibration batches, values that do not fit a ``Signature``.

    A Signature stands for an ``ap_fixed`` input port: values off its grid are
    truncated and values out of its range wrap, in Keras as in firmware. The model is
    then calibrated (and later fed) on other values than the user believes, which
    usually means the data was not quantized to the declared format.
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self.signatures = _fed_signatures(model)
        self.counts = {id(layer): [0, 0, ""] for layer, _ in self.signatures}

    def add(self, batch: Any) -> None:
        if not self.signatures:
            return
        by_input = {id(tensor): array for tensor, array in pair_with_inputs(self.model, batch)}
        for layer, fed in self.signatures:
            x = next((by_input[i] for i in fed if i in by_input), None)
            if x is None:
                continue
            stored = keras.ops.convert_to_numpy(layer.call(keras.ops.convert_to_tensor(x)))
            changed = np.asarray(stored, dtype=np.float32) != x
            count = self.counts[id(layer)]
            count[1] += x.size
            if np.any(changed):
                if not count[0]:
                    index = np.unravel_index(np.argmax(changed), x.shape)
                    count[2] = f"{_shortest(x[index])} is stored as {_shortest(stored[index])}"
                count[0] += int(np.count_nonzero(changed))

    def warnings(self) -> list[str]:
        messages = []
        for layer, _ in self.signatures:
            changed, total, example = self.counts[id(layer)]
            if changed:
                messages.append(
                    f"compute_bops: {changed} of {total} calibration values fed to Signature "
                    f"'{layer.name}' do not fit its declared format (keep_negative, bits, "
                    f"int_bits), so the input port truncates or wraps them (e.g. {example}). "
                    "Quantize the data to that format before calibrating and deploying, or "
                    "declare a format that holds it."
                )
        return messages


def _check_cover_factor(cover_factor: Any) -> float:
    if not is_finite_number(cover_factor) or cover_factor < 1:
        raise ValueError(
            f"compute_bops: cover_factor must be a finite number >= 1 (the factor every "
            f"recorded range is widened by; 1 keeps it as recorded), got {cover_factor!r}."
        )
    return float(cover_factor)


def compute_bops(
    model: keras.Model,
    X: Any,
    bsz: int | None = None,
    verbose: bool = True,
    cover_factor: float = 1.0,
    reset: bool = True,
) -> EBOPs:
    """Calibrate integer bits on ``X`` and return the model's exact EBOPs.

    ``X`` is anything ``model.predict`` takes: arrays or tensors (or a list/dict of
    them, dicts keyed by input name), a ``tf.data.Dataset``, a ``keras.utils.PyDataset``
    or a generator of batches (``x`` or ``(x, y[, sample_weight])``). It is read one
    batch at a time (``bsz`` samples for arrays, default 1024; datasets come batched),
    in inference mode, while every activation's range is recorded. Each range is
    widened by ``cover_factor`` (a margin for inputs beyond the calibration data),
    each activation's ``(k, i)`` fixed, a per-layer table printed (``verbose``) and the
    total returned as an ``EBOPs`` float that also holds the per-layer rows.

    ``reset=False`` keeps the ranges recorded by earlier calls and extends them:
    calibrating chunk by chunk gives the same result as one call on all the data.
    Required before conversion. On failure every variable of the model is left as it
    was. Warns when data fed to a ``Signature`` does not fit its declared format, and
    when a non-linear ``HActivation``'s calibrated input is too wide for its table.
    """
    cover_factor = _check_cover_factor(cover_factor)
    bsz = check_batch_size(bsz, "compute_bops")
    if not isinstance(reset, (bool, np.bool_)):
        raise ValueError(f"compute_bops: reset must be True or False, got {reset!r}.")
    layers = hgq_layers(model)
    if not layers:
        raise ValueError(
            f"Model '{model.name}' contains no HGQ layers; build it from HQuantize, "
            "HDense, ... before calling compute_bops."
        )
    check_only_hgq_layers(model)
    _check_finite_weights(model)
    tf32 = tensorflow_tf32_warning()
    if tf32:
        warnings.warn(tf32, stacklevel=2)
    conformity = _SignatureConformity(model)
    saved = _snapshot(model)
    try:
        if reset:
            for quantizer in _activation_quantizers(model):
                quantizer.reset_minmax()
        samples = CalibrationPass().run_batches(
            model, _checked_batches(model, input_batches(model, X, bsz), conformity)
        )
        if samples == 0:
            raise ValueError(
                "compute_bops got an empty calibration set: pass the training data (or a "
                "representative part of it) so every activation's range is seen."
            )
        for layer in layers:
            layer.freeze(cover_factor)
        for layer in model._flatten_layers(include_self=False):
            if hasattr(layer, "prepare_table"):  # HActivation, HSoftmax (parts too)
                layer.prepare_table()
        costs = layer_costs(layers)
        for row, layer in zip(costs.rows, layers, strict=True):
            if isinstance(layer, HBaseLayer):
                layer.bops.assign(row.ebops)
    except BaseException:
        for variable, value in saved:
            variable.assign(value)
        raise
    finally:
        model.predict_function = None  # the calibration trace must not be reused
    for message in conformity.warnings():
        warnings.warn(message, stacklevel=2)
    if verbose:
        print(costs.table())
    for message in exceeding_table_widths(layers):
        warnings.warn(f"compute_bops: {message}", stacklevel=2)
    return costs


def _checked_batches(
    model: keras.Model, batches: Iterator[Any], conformity: _SignatureConformity
) -> Iterator[Any]:
    """``batches``, each checked (finite values, sample shapes) and counted for Signatures."""
    for batch in batches:
        _check_batch_values(batch)
        _check_input_shapes(model, batch)
        conformity.add(batch)
        yield batch


trace_minmax = compute_bops


def _records(model: keras.Model) -> list[Any]:
    """The min/max record variables of every activation quantizer."""
    return [
        variable
        for quantizer in _activation_quantizers(model)
        if quantizer.built
        for variable in (quantizer.vmin, quantizer.vmax)
    ]


#: Samples per batch of ``CalibratedBOPs`` when none is given: each batch is a Python
#: round trip that writes back every variable of the model (tens of them), which costs
#: more than the computation of a small model on many samples.
_MAX_DEFAULT_BATCH = 65536


def _even_batch_size(n: int) -> int:
    """The fewest batches of at most ``_MAX_DEFAULT_BATCH``, of equal size (little padding)."""
    batches = -(-n // _MAX_DEFAULT_BATCH)
    return -(-n // batches)


class CalibrationPass:
    """Records ranges over in-memory data with a predict step compiled once and kept.

    ``compute_bops`` traces a fresh step at every call (the calibration flag is read
    at trace time); a callback that calibrates every epoch keeps its own step here
    instead, so it compiles only on its first use, and the model's own predict step
    is left as it was.
    """

    def __init__(self) -> None:
        self.function = None

    def run_batches(self, model: keras.Model, batches: Iterable[Any]) -> int:
        """Record over ``batches``; returns the number of samples seen.

        Every batch is padded to the first one's size (a shorter last batch would be
        compiled again), by repeating samples, which leaves the records unchanged.
        """
        saved = model.predict_function
        model.predict_function = self.function
        samples = 0
        size = None
        try:
            with calibrating():
                for batch in batches:
                    count = len(keras.tree.flatten(batch)[0])
                    if count == 0:
                        continue
                    size = size or count
                    samples += count
                    model.predict_on_batch(pad_to(batch, size))
            self.function = model.predict_function
        finally:
            model.predict_function = saved
        return samples


def calibrated_ebops(
    model: keras.Model,
    data: Any,
    bsz: int | None = None,
    calibration: CalibrationPass | None = None,
) -> tuple[float, CalibrationPass]:
    """Exact EBOPs of the current weights calibrated on ``data``, leaving no trace.

    What ``compute_bops(model, data, bsz)`` returns, without its checks and table;
    every variable the calibration writes is put back afterwards. Returns the value
    and the ``CalibrationPass`` to pass again next time (compiled once).
    """
    arrays = in_memory_inputs(model, data)
    if arrays is not None:
        data = arrays
        if not bsz:
            bsz = _even_batch_size(len(keras.tree.flatten(arrays)[0]) or 1)
    calibration = calibration or CalibrationPass()
    layers = hgq_layers(model)
    quantizers = [q for q in _activation_quantizers(model) if q.built]
    records = _records(model)
    saved = [v.numpy() for v in records]
    try:
        for quantizer in quantizers:
            quantizer.reset_minmax()
        samples = calibration.run_batches(model, input_batches(model, data, bsz))
        if samples == 0:
            raise ValueError(
                "CalibratedBOPs got no calibration samples: pass the training data (or a "
                "representative part of it), e.g. CalibratedBOPs(x_train)."
            )
        # The formats the records give, read without freezing: only the records change.
        with contextlib.ExitStack() as formats:
            for quantizer in quantizers:
                formats.enter_context(quantizer.assuming_recorded_format())
            total = float(sum(layer.compute_exact_bops() for layer in layers))
    finally:
        for variable, value in zip(records, saved, strict=True):
            variable.assign(value)
    return total, calibration
