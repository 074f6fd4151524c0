"""Keras callbacks that steer and record the cost of an HGQ model while it trains.

One training run whose β rises over the epochs sweeps the accuracy-vs-EBOPs trade-off;
``CalibratedBOPs`` measures each epoch's exact cost, ``ParetoFront`` keeps the
checkpoints no other epoch beats on both, and ``BetaScheduler`` / ``BetaController``
move β (a variable in every HGQ layer, so no recompile is needed).

The callbacks that log a value (``ResetMinMax``, ``FreeBOPs``, ``CalibratedBOPs``,
``BetaScheduler``) move themselves to the front of ``fit``'s callback list, so every
other callback (``EarlyStopping``, ``ModelCheckpoint``, ``ParetoFront``, ...) sees
``bops``, ``ebops`` and ``beta`` in the epoch's logs, whatever the order they were
listed in.
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import keras
import numpy as np

from HGQ.calibration import calibrated_ebops
from HGQ.calibration_data import check_batch_size
from HGQ.layers.base import HBaseLayer, check_bops_reg_factor
from HGQ.layers.replacements import check_only_hgq_layers
from HGQ.model_layers import hgq_layers


def _surrogate_total(model: keras.Model) -> float:
    """The training EBOPs of the last step, summed over layers."""
    return sum(
        float(layer.bops.numpy())
        for layer in hgq_layers(model)
        if isinstance(layer, HBaseLayer) and layer.built
    )


class LogsFirst(keras.callbacks.Callback):
    """A callback whose logged value other callbacks read: it runs before them.

    Keras calls callbacks in list order at each epoch's end and gives each the same
    logs dict, so a value logged by a callback listed later is missing for
    ``EarlyStopping(monitor='bops')`` listed earlier. Keras has no priority setting;
    when ``fit``'s ``CallbackList`` hands this callback the model, the callback moves
    every ``LogsFirst`` (in their own order) to the front of that list.
    """

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        frame = inspect.currentframe()
        for _ in range(4):  # the CallbackList's set_model, possibly via subclasses
            frame = frame.f_back if frame is not None else None
            owner = frame.f_locals.get("self") if frame is not None else None
            if isinstance(owner, keras.callbacks.CallbackList) and self in owner.callbacks:
                first = [c for c in owner.callbacks if isinstance(c, LogsFirst)]
                # A new list: the loop that is calling set_model keeps iterating the old one.
                owner.callbacks = first + [c for c in owner.callbacks if c not in first]
                return


class FreeBOPs(LogsFirst):
    """Log the training-time EBOPs (``bops``) at each epoch's end, resetting nothing.

    The name of the original HGQ. ``bops`` is the training surrogate of the epoch's
    last step, summed over layers; it appears in the progress bar and in
    ``history.history['bops']``.
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["bops"] = _surrogate_total(self.model)


class ResetMinMax(FreeBOPs):
    """Reset every min/max record at the start of each epoch; log ``bops`` at its end.

    Without it the recorded ranges keep the widest values ever seen, and the
    training-time EBOPs (and integer bits) would not follow the weights.
    """

    def on_train_begin(self, logs: dict | None = None) -> None:
        check_only_hgq_layers(self.model)
        self._first_epoch = True

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        for layer in hgq_layers(self.model):
            layer.reset_minmax()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        if getattr(self, "_first_epoch", False):
            self._first_epoch = False
            _warn_if_not_trained(self.model)


def _warn_if_not_trained(model: keras.Model) -> None:
    """Warn about HGQ layers that recorded nothing in a training epoch.

    A layer that ran in training mode records its range; one whose record is still
    empty after an epoch ran in inference mode. That happens, silently, in a subclassed
    model whose ``call`` does not pass ``training`` on: Keras hands it on to the inner
    layers only when ``call`` accepts it, and its JAX trainer calls ``call`` directly,
    not even then. The inner layers then never learn of training, and neither bitwidths
    nor (through the exact rounding) weights move.
    """
    idle = [
        layer.name
        for layer in hgq_layers(model)
        if isinstance(layer, HBaseLayer)
        and layer.built
        and np.all(layer.pre_activation_quantizer.vmax.numpy() == -np.inf)
    ]
    if idle:
        warnings.warn(
            f"ResetMinMax: HGQ layer(s) {', '.join(idle)} of model '{model.name}' did not "
            "run in training mode during this epoch, so they do not learn. In a subclassed "
            "model, write call(self, x, training=None) and pass training=training to every "
            "HGQ layer it calls (Keras does not pass it on by itself on JAX, nor on any "
            "backend when call has no training argument). "
            "Ignore this if those layers are frozen on purpose (called with training=False).",
            stacklevel=2,
        )


class CalibratedBOPs(LogsFirst):
    """Log the exact EBOPs of each epoch's weights, calibrated on ``data``, as ``ebops``.

    At each epoch's end the model is calibrated as ``compute_bops(model, data,
    bsz=bsz)`` would, its exact EBOPs taken, and every piece of training state the
    calibration touched (min/max records, frozen integer bits, per-layer ``bops``) put
    back, so training continues as if nothing happened. The calibration pass is
    compiled once for the whole run. A checkpoint saved at that epoch, reloaded and
    calibrated with ``compute_bops`` on the same data, has exactly the logged EBOPs.

    ``data``: what ``compute_bops`` takes, except a one-shot generator or iterator (it
    is read again every epoch): arrays (or a list/dict of them), a ``tf.data.Dataset``
    or a ``keras.utils.PyDataset``. ``bsz``: samples per calibration batch of arrays
    (None: all of them in one batch, or in equal batches of at most 65,536).
    """

    def __init__(self, data: Any, bsz: int | None = None, name: str = "ebops"):
        super().__init__()
        if hasattr(data, "__next__"):
            raise ValueError(
                "CalibratedBOPs reads its data again at every epoch's end, and a generator "
                "or iterator can be read only once. Pass arrays, a tf.data.Dataset or a "
                "keras.utils.PyDataset instead."
            )
        self.data = data
        self.bsz = check_batch_size(bsz, "CalibratedBOPs")
        self.name = name
        self._calibration = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._calibration = None  # the model may have been rebuilt since the last fit

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value, self._calibration = calibrated_ebops(
            self.model, self.data, self.bsz, self._calibration
        )
        if logs is not None:
            logs[self.name] = value


def set_bops_reg_factor(model: keras.Model, beta: float, layers: Iterable[Any] | None = None):
    """Set β of every HGQ layer of ``model`` that has an EBOPs penalty (or of ``layers``)."""
    beta = check_bops_reg_factor(beta, "set_bops_reg_factor")
    for layer in _beta_layers(model, layers):
        layer.bops_reg_factor = beta


def _beta_layers(model: keras.Model, layers: Iterable[Any] | None) -> list[HBaseLayer]:
    candidates = [layer for layer in hgq_layers(model) if isinstance(layer, HBaseLayer)]
    if layers is None:
        return candidates
    wanted = list(layers)
    chosen = []
    for item in wanted:
        match = [c for c in candidates if c is item or c.name == item]
        if not match:
            names = ", ".join(c.name for c in candidates)
            raise ValueError(
                f"No HGQ layer {getattr(item, 'name', item)!r} in model '{model.name}' "
                f"takes a bops_reg_factor; its HGQ layers are: {names}."
            )
        chosen += match
    return chosen


class BetaScheduler(LogsFirst):
    """Set β (``bops_reg_factor``) at each epoch's start from ``schedule(epoch)``.

    Like ``keras.callbacks.LearningRateScheduler``: ``schedule`` takes the epoch index
    (and, if it accepts two arguments, the current β) and returns the new β. It is set
    on every HGQ layer, or on ``layers`` (names or layer objects) only, so per-layer
    values can differ; the value is logged as ``beta``.
    ``ConstantThenLogRamp`` is a ready schedule.
    """

    def __init__(
        self,
        schedule: Callable[..., float],
        layers: Sequence[Any] | None = None,
        verbose: int = 0,
        log_name: str = "beta",
    ):
        super().__init__()
        self.schedule = schedule
        self.layers = layers
        self.verbose = verbose
        self.log_name = log_name
        self._beta: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        targets = _beta_layers(self.model, self.layers)
        current = targets[0].bops_reg_factor if targets else 0.0
        try:
            beta = self.schedule(epoch, current)
        except TypeError:
            beta = self.schedule(epoch)
        beta = check_bops_reg_factor(beta, f"BetaScheduler: schedule({epoch})")
        for layer in targets:
            layer.bops_reg_factor = beta
        self._beta = beta
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: BetaScheduler setting bops_reg_factor to {beta:.3g}.")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None and self._beta is not None:
            logs[self.log_name] = self._beta


class ConstantThenLogRamp:
    """β schedule: ``beta0`` for ``hold`` epochs, then geometric steps to ``beta1`` over
    ``ramp`` epochs, then ``beta1``.

    The recipe of one-run fronts: the model first learns at a small β, then β rises a
    constant factor per epoch and the run walks down the accuracy-vs-EBOPs front.
    """

    def __init__(self, beta0: float, beta1: float, hold: int, ramp: int):
        self.beta0 = check_bops_reg_factor(beta0, "ConstantThenLogRamp: beta0")
        self.beta1 = check_bops_reg_factor(beta1, "ConstantThenLogRamp: beta1")
        if self.beta0 <= 0 or self.beta1 <= 0:
            raise ValueError(
                "ConstantThenLogRamp: beta0 and beta1 must be > 0 (a geometric ramp); got "
                f"{beta0!r} and {beta1!r}."
            )
        if int(hold) < 0 or int(ramp) < 1:
            raise ValueError(
                f"ConstantThenLogRamp: hold must be >= 0 and ramp >= 1 epochs, got {hold!r} "
                f"and {ramp!r}."
            )
        self.hold = int(hold)
        self.ramp = int(ramp)

    def __call__(self, epoch: int) -> float:
        if epoch < self.hold:
            return self.beta0
        step = min(epoch - self.hold + 1, self.ramp)
        return self.beta0 * (self.beta1 / self.beta0) ** (step / self.ramp)


class BetaController(keras.callbacks.Callback):
    """Steer β so that the model's EBOPs (``metric`` in the logs) approach ``target``.

    At each epoch's end, β is multiplied by ``step`` while the cost is above
    ``target * (1 + tolerance)`` and divided by it while below ``target * (1 -
    tolerance)``, within ``[beta_min, beta_max]``. Put the callback that logs
    ``metric`` (``CalibratedBOPs`` for ``ebops``, ``ResetMinMax`` for ``bops``) before
    it. Logs ``beta``.
    """

    def __init__(
        self,
        target: float,
        metric: str = "ebops",
        step: float = 1.25,
        tolerance: float = 0.05,
        beta_min: float = 1e-8,
        beta_max: float = 1e-2,
        layers: Sequence[Any] | None = None,
    ):
        super().__init__()
        if not (np.isfinite(target) and target > 0):
            raise ValueError(f"BetaController: target must be a positive EBOPs, got {target!r}.")
        if not (step > 1):
            raise ValueError(f"BetaController: step must be > 1, got {step!r}.")
        self.target = float(target)
        self.metric = metric
        self.step = float(step)
        self.tolerance = float(tolerance)
        self.beta_min = check_bops_reg_factor(beta_min, "BetaController: beta_min")
        self.beta_max = check_bops_reg_factor(beta_max, "BetaController: beta_max")
        self.layers = layers

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        if self.metric not in logs:
            raise ValueError(
                f"BetaController: '{self.metric}' is not in the logs at the end of epoch "
                f"{epoch} (keys: {sorted(logs)}). Add the callback that logs it "
                "(CalibratedBOPs for 'ebops', ResetMinMax for 'bops') to fit's callbacks."
            )
        cost = float(logs[self.metric])
        targets = _beta_layers(self.model, self.layers)
        beta = max(targets[0].bops_reg_factor, self.beta_min) if targets else self.beta_min
        if cost > self.target * (1 + self.tolerance):
            beta *= self.step
        elif cost < self.target * (1 - self.tolerance):
            beta /= self.step
        beta = float(min(max(beta, self.beta_min), self.beta_max))
        for layer in targets:
            layer.bops_reg_factor = beta
        logs["beta"] = beta


def _dominates(a: Sequence[float], b: Sequence[float], sides: Sequence[int]) -> bool:
    """Whether ``a`` is at least as good as ``b`` on every metric (``side`` 1: higher)."""
    return all(s * x >= s * y for x, y, s in zip(a, b, sides, strict=True))


class ParetoFront(keras.callbacks.Callback):
    """Keep a ``.keras`` checkpoint of every epoch that no other epoch beats on ``metrics``.

    ``sides``: 1 where higher is better (accuracy), -1 where lower is (EBOPs). At each
    epoch's end, an epoch at least matched on every metric by a kept one is dropped;
    otherwise it is saved in ``directory`` (the file name carries the epoch and the
    values) and the kept checkpoints it now beats are deleted. ``front`` lists the kept
    records (dicts with ``epoch``, ``path`` and each metric) in epoch order.

    A kept model holds the weights of that epoch, not its calibration: load it with
    ``keras.models.load_model`` and run ``compute_bops`` on the data ``CalibratedBOPs``
    used, which gives exactly the recorded ``ebops``, before converting it.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        metrics: Sequence[str] = ("val_accuracy", "ebops"),
        sides: Sequence[int] = (1, -1),
        file_prefix: str = "epoch",
    ):
        super().__init__()
        self.metrics = tuple(metrics)
        self.sides = tuple(int(s) for s in sides)
        if len(self.metrics) != len(self.sides) or not self.metrics:
            raise ValueError(
                f"ParetoFront: give one side per metric, got metrics={self.metrics} and "
                f"sides={self.sides}."
            )
        if any(s not in (1, -1) for s in self.sides):
            raise ValueError(
                f"ParetoFront: sides are 1 (higher is better) or -1 (lower is better), got "
                f"{self.sides}."
            )
        self.directory = os.fspath(directory)
        self.file_prefix = file_prefix
        self.front: list[dict[str, Any]] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        os.makedirs(self.directory, exist_ok=True)

    def _values(self, epoch: int, logs: dict | None) -> tuple[float, ...] | None:
        logs = logs or {}
        missing = [m for m in self.metrics if m not in logs]
        if missing:
            hint = (
                " Add CalibratedBOPs(x_calibration) to fit's callbacks."
                if "ebops" in missing
                else " Pass validation_data (or validation_split) to fit for 'val_' metrics."
                if any(m.startswith("val_") for m in missing)
                else ""
            )
            raise ValueError(
                f"ParetoFront: {missing} not in the logs at the end of epoch {epoch} "
                f"(keys: {sorted(logs)}).{hint}"
            )
        values = tuple(float(logs[m]) for m in self.metrics)
        return values if all(math.isfinite(v) for v in values) else None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = self._values(epoch, logs)
        if values is None:
            return
        kept = [tuple(r[m] for m in self.metrics) for r in self.front]
        if any(_dominates(k, values, self.sides) for k in kept):
            return
        parts = [f"{self.file_prefix}={epoch:04d}"] + [
            f"{m}={v:.6g}" for m, v in zip(self.metrics, values, strict=True)
        ]
        path = os.path.join(self.directory, "-".join(parts) + ".keras")
        self.model.save(path)
        survivors = []
        for record, old in zip(self.front, kept, strict=True):
            if _dominates(values, old, self.sides):
                if os.path.exists(record["path"]):
                    os.remove(record["path"])
            else:
                survivors.append(record)
        record = {"epoch": epoch, "path": path}
        record.update(zip(self.metrics, values, strict=True))
        self.front = survivors + [record]
