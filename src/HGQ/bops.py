"""Exact EBOPs, calibration of integer bits, and the per-epoch record reset.

``compute_bops`` is the step between training and deployment: it runs data through
the model in inference mode while recording every activation's range, fixes the
integer bits from those ranges (after which inference wraps on overflow exactly as
the firmware does) and returns the exact EBOPs.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from HGQ.config import is_finite_number
from HGQ.full_precision import tensorflow_tf32_warning
from HGQ.layers.activation import exceeding_table_widths
from HGQ.layers.base import HBaseLayer, QLayerBase
from HGQ.layers.replacements import check_only_hgq_layers
from HGQ.layers.signature import Signature
from HGQ.quantizer import HGQuantizer, calibrating


def hgq_layers(model: keras.Model) -> list[QLayerBase]:
    """Every HGQ layer of ``model``, nested ones included, in tracking order."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, QLayerBase)
    ]


def _activation_quantizers(model: keras.Model) -> list[HGQuantizer]:
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, HGQuantizer) and layer.is_activation
    ]


def _check_calibration_data(data: Any) -> None:
    arrays = (
        [np.asarray(a) for a in keras.tree.flatten(data)] if not hasattr(data, "__next__") else []
    )
    if not arrays:
        raise ValueError(
            "compute_bops needs calibration data as arrays (numpy, tensors, or a "
            "list/dict of them), e.g. compute_bops(model, X_train, bsz=1024)."
        )
    for array in arrays:
        if array.ndim == 0 or array.shape[0] == 0:
            raise ValueError(
                "compute_bops got an empty calibration set: pass the training data "
                "(or a representative part of it) so every activation's range is seen."
            )
        if np.issubdtype(array.dtype, np.number) and not np.all(np.isfinite(array)):
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


def _check_input_shapes(model: keras.Model, data: Any) -> None:
    inputs = getattr(model, "inputs", None)
    if not inputs or hasattr(data, "__next__"):
        return
    arrays = keras.tree.flatten(data)
    if len(arrays) != len(inputs):
        return  # let Keras report structural mismatches
    for array, tensor in zip(arrays, inputs, strict=True):
        expected = tuple(tensor.shape[1:])
        got = tuple(np.shape(array)[1:])
        if len(expected) != len(got) or any(
            e is not None and e != g for e, g in zip(expected, got, strict=True)
        ):
            raise ValueError(
                f"compute_bops: calibration data has sample shape {got}, but model "
                f"'{model.name}' expects {expected}. Pass data shaped like the training inputs."
            )


def _signature_inputs(model: keras.Model, data: Any) -> list[tuple[Signature, np.ndarray]]:
    """Each ``Signature`` fed directly by a model input, with that input's data.

    Only functional and Sequential models say which input feeds which layer; in a
    subclassed model the Signatures are not found, and nothing is checked.
    """
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return []
    if isinstance(data, dict):  # Keras matches dict keys to input names
        pairs = [(t, data[t.name]) for t in inputs if t.name in data]
    else:
        arrays = keras.tree.flatten(data)
        if len(arrays) != len(inputs):
            return []
        pairs = list(zip(inputs, arrays, strict=True))
    by_input = {id(tensor): array for tensor, array in pairs}
    found = []
    for layer in hgq_layers(model):
        if not isinstance(layer, Signature):
            continue
        # A Sequential model rebuilt after `add` calls its layers again: any node counts.
        fed = [id(tensor) for node in layer._inbound_nodes for tensor in node.input_tensors]
        array = next((by_input[i] for i in fed if i in by_input), None)
        if array is not None:
            found.append((layer, np.asarray(array, dtype=np.float32)))
    return found


def _shortest(value: np.float32) -> str:
    """The shortest decimal that reads back as this float32."""
    return np.format_float_positional(value, unique=True, trim="-")


def _nonconforming_signature_warnings(model: keras.Model, data: Any) -> list[str]:
    """Why calibration data does not fit a ``Signature``'s declared format, per layer.

    A Signature stands for an ``ap_fixed`` input port: values off its grid are
    truncated and values out of its range wrap, in Keras as in firmware. The model is
    then calibrated (and later fed) on other values than the user believes, which
    usually means the data was not quantized to the declared format.
    """
    messages = []
    for layer, x in _signature_inputs(model, data):
        stored = keras.ops.convert_to_numpy(layer.call(keras.ops.convert_to_tensor(x)))
        changed = np.asarray(stored, dtype=np.float32) != x
        count = int(np.count_nonzero(changed))
        if count:
            index = np.unravel_index(np.argmax(changed), x.shape)
            example = f"{_shortest(x[index])} is stored as {_shortest(stored[index])}"
            messages.append(
                f"compute_bops: {count} of {x.size} calibration values fed to Signature "
                f"'{layer.name}' do not fit its declared format (keep_negative, bits, "
                f"int_bits), so the input port truncates or wraps them (e.g. {example}). "
                "Quantize the data to that format before calibrating and deploying, or "
                "declare a format that holds it."
            )
    return messages


def _whole_batches(data: Any, bsz: int | None) -> Any:
    """Pad numpy data to a multiple of ``bsz`` by repeating its first samples.

    A short last batch has another shape, so the calibration pass would be compiled
    twice; repeated samples leave every min/max record unchanged.
    """
    arrays = keras.tree.flatten(data)
    if not bsz or not arrays or not all(isinstance(a, np.ndarray) for a in arrays):
        return data
    n = len(arrays[0])
    missing = -n % bsz
    if n <= bsz or missing == 0:
        return data
    return keras.tree.map_structure(lambda a: np.concatenate([a, a[np.arange(missing) % n]]), data)


def _format_table(rows: list[tuple[str, str, str, float]], total: float) -> str:
    header = ("layer", "type", "output bits (mean/max)", "EBOPs")
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(3)]
    lines = [
        f"{header[0]:<{widths[0]}}  {header[1]:<{widths[1]}}  {header[2]:<{widths[2]}}  "
        f"{header[3]:>12}"
    ]
    for name, kind, bits, bops in rows:
        lines.append(
            f"{name:<{widths[0]}}  {kind:<{widths[1]}}  {bits:<{widths[2]}}  {bops:>12,.0f}"
        )
    lines.append(f"{'total':<{sum(widths) + 4}}  {total:>12,.0f}")
    return "\n".join(lines)


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
) -> float:
    """Calibrate integer bits on ``X`` and return the model's exact EBOPs.

    Resets every min/max record, runs ``X`` through the model in inference mode
    (batches of ``bsz``) while recording, widens each recorded range by
    ``cover_factor`` (a margin for inputs beyond the calibration data), freezes each
    activation's ``(k, i)``, then prints a per-layer table (``verbose``) and returns
    the total. Required before conversion. On failure the model's records are left as
    they were. Warns when data fed to a ``Signature`` does not fit its declared format,
    and when a non-linear ``HActivation``'s calibrated input is too wide for its table.
    """
    cover_factor = _check_cover_factor(cover_factor)
    layers = hgq_layers(model)
    if not layers:
        raise ValueError(
            f"Model '{model.name}' contains no HGQ layers; build it from HQuantize, "
            "HDense, ... before calling compute_bops."
        )
    check_only_hgq_layers(model)
    _check_calibration_data(X)
    _check_input_shapes(model, X)
    _check_finite_weights(model)
    tf32 = tensorflow_tf32_warning()
    if tf32:
        warnings.warn(tf32, stacklevel=2)
    for message in _nonconforming_signature_warnings(model, X):
        warnings.warn(message, stacklevel=2)
    quantizers = _activation_quantizers(model)
    saved = _snapshot(model)
    try:
        for quantizer in quantizers:
            quantizer.reset_minmax()
        model.predict_function = None  # the calibration trace must not be reused
        with calibrating():
            model.predict(_whole_batches(X, bsz), batch_size=bsz, verbose=0)
        for layer in layers:
            layer.freeze(cover_factor)
        rows = []
        total = 0.0
        for layer in layers:
            bops = layer.compute_exact_bops()
            total += bops
            bits = layer.exact_output_bitwidth()
            rows.append((layer.name, type(layer).__name__, f"{bits.mean():.2f}/{bits.max()}", bops))
            if isinstance(layer, HBaseLayer):
                layer.bops.assign(bops)
    except BaseException:
        for variable, value in saved:
            variable.assign(value)
        raise
    finally:
        model.predict_function = None
    if verbose:
        print(_format_table(rows, total))
    for message in exceeding_table_widths(layers):
        warnings.warn(f"compute_bops: {message}", stacklevel=2)
    return total


trace_minmax = compute_bops


def _records(model: keras.Model) -> list[Any]:
    """The min/max record variables of every activation quantizer."""
    return [
        variable
        for quantizer in _activation_quantizers(model)
        if quantizer.built
        for variable in (quantizer.vmin, quantizer.vmax)
    ]


def _batches(data: Any, bsz: int) -> Iterator[Any]:
    """``data`` (arrays, or a list/dict of them) in whole batches of ``bsz`` samples."""
    size = min(bsz, len(keras.tree.flatten(data)[0]))
    data = _whole_batches(data, size)
    for start in range(0, len(keras.tree.flatten(data)[0]), size):
        yield keras.tree.map_structure(lambda a, s=start: a[s : s + size], data)


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

    def run(self, model: keras.Model, data: Any, bsz: int) -> None:
        saved = model.predict_function
        model.predict_function = self.function
        try:
            with calibrating():
                for batch in _batches(data, bsz):
                    model.predict_on_batch(batch)
            self.function = model.predict_function
        finally:
            model.predict_function = saved


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
    arrays = [np.asarray(a) for a in keras.tree.flatten(data)]
    if not arrays or arrays[0].ndim == 0 or len(arrays[0]) == 0:
        raise ValueError(
            "CalibratedBOPs needs calibration data as non-empty arrays (numpy, or a "
            "list/dict of them), e.g. CalibratedBOPs(x_train)."
        )
    data = keras.tree.map_structure(np.asarray, data)
    calibration = calibration or CalibrationPass()
    layers = hgq_layers(model)
    quantizers = [q for q in _activation_quantizers(model) if q.built]
    records = _records(model)
    saved = [v.numpy() for v in records]
    try:
        for quantizer in quantizers:
            quantizer.reset_minmax()
        calibration.run(model, data, int(bsz) if bsz else _even_batch_size(len(arrays[0])))
        # The formats the records give, read without freezing: only the records change.
        with contextlib.ExitStack() as formats:
            for quantizer in quantizers:
                formats.enter_context(quantizer.assuming_recorded_format())
            total = float(sum(layer.compute_exact_bops() for layer in layers))
    finally:
        for variable, value in zip(records, saved, strict=True):
            variable.assign(value)
    return total, calibration


def __getattr__(name: str) -> Any:
    """The callbacks live in ``HGQ.callbacks``; the original HGQ imported them from here."""
    if name in ("ResetMinMax", "FreeBOPs", "CalibratedBOPs"):
        from HGQ import callbacks

        return getattr(callbacks, name)
    raise AttributeError(f"module 'HGQ.bops' has no attribute {name!r}")
