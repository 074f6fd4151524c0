"""β as model state, its schedulers, per-epoch exact EBOPs and the Pareto checkpoints."""

from __future__ import annotations

import os
import warnings

import keras
import numpy as np
import pytest

from HGQ import HDense, HQuantize
from HGQ.bops import compute_bops
from HGQ.callbacks import (
    BetaController,
    BetaScheduler,
    CalibratedBOPs,
    ConstantThenLogRamp,
    ParetoFront,
    ResetMinMax,
    set_bops_reg_factor,
)


def small_model(beta: float = 0.0) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,)),
            HQuantize(name="inp_q", bops_reg_factor=beta),
            HDense(8, activation="relu", bops_reg_factor=beta, name="d1"),
            HDense(3, bops_reg_factor=beta, name="d2"),
        ]
    )


def data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32") + (x[:, 2] > 1).astype("int32")
    return x, y


def compiled(model, lr=3e-3):
    model.compile(
        keras.optimizers.Adam(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def hgq_with_penalty(model):
    return [layer for layer in model.layers if isinstance(layer, HDense)]


@pytest.mark.smoke
def test_beta_changes_the_loss_without_a_new_training_step():
    x, y = data(64)
    model = small_model(0.0)
    model.compile(
        keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    loss_without = float(np.asarray(model.train_on_batch(x, y)))
    step = model.train_function
    set_bops_reg_factor(model, 1e-3)
    loss_with = float(np.asarray(model.train_on_batch(x, y)))
    assert model.train_function is step  # not recompiled
    bops = sum(float(layer.bops.numpy()) for layer in hgq_with_penalty(model))
    assert bops > 0
    # SGD(0) leaves the weights and the records' data as they were: only β differs.
    assert loss_with - loss_without == pytest.approx(1e-3 * bops, rel=1e-4)


def test_beta_is_saved_with_the_model(tmp_path):
    model = small_model(1e-5)
    model.build((None, 6))
    model.layers[1].bops_reg_factor = 3e-4
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.layers[1].bops_reg_factor == pytest.approx(3e-4)
    assert loaded.layers[2].bops_reg_factor == pytest.approx(1e-5)
    assert loaded.layers[1].get_config()["bops_reg_factor"] == pytest.approx(3e-4)


@pytest.mark.parametrize("bad", [-1e-5, "1e-5", float("nan"), float("inf"), True, None])
def test_bad_bops_reg_factor_is_refused_naming_it(bad):
    with pytest.raises(ValueError, match="bops_reg_factor"):
        HDense(3, bops_reg_factor=bad)
    model = small_model(1e-5)
    with pytest.raises(ValueError, match="bops_reg_factor"):
        set_bops_reg_factor(model, bad)
    assert all(layer.bops_reg_factor == 1e-5 for layer in model.layers)


def test_constant_then_log_ramp_by_hand():
    schedule = ConstantThenLogRamp(1e-6, 1e-4, hold=2, ramp=2)
    got = [schedule(e) for e in range(6)]
    np.testing.assert_allclose(got, [1e-6, 1e-6, 1e-5, 1e-4, 1e-4, 1e-4], rtol=1e-12)
    with pytest.raises(ValueError, match="beta0"):
        ConstantThenLogRamp(0.0, 1e-4, hold=1, ramp=3)
    with pytest.raises(ValueError, match="ramp"):
        ConstantThenLogRamp(1e-6, 1e-4, hold=1, ramp=0)


@pytest.mark.smoke
def test_beta_scheduler_sets_every_layer_and_logs_beta():
    x, y = data()
    model = compiled(small_model())
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append([layer.bops_reg_factor for layer in self.model.layers])

    schedule = ConstantThenLogRamp(1e-6, 1e-4, hold=1, ramp=2)
    history = model.fit(
        x, y, epochs=4, verbose=0, callbacks=[ResetMinMax(), BetaScheduler(schedule), Probe()]
    )
    expected = [schedule(e) for e in range(4)]
    np.testing.assert_allclose(history.history["beta"], expected, rtol=1e-6)
    for epoch, values in enumerate(seen):
        np.testing.assert_allclose(values, expected[epoch], rtol=1e-6)


def test_beta_scheduler_on_chosen_layers_and_with_the_current_beta():
    x, y = data(64)
    model = compiled(small_model(2e-6))
    scheduler = BetaScheduler(lambda epoch, beta: beta * 10, layers=["d2"])
    model.fit(x, y, epochs=2, verbose=0, callbacks=[scheduler])
    assert model.get_layer("d2").bops_reg_factor == pytest.approx(2e-4)
    assert model.get_layer("d1").bops_reg_factor == pytest.approx(2e-6)
    with pytest.raises(ValueError, match="no_such_layer"):
        model.fit(
            x, y, epochs=1, verbose=0, callbacks=[BetaScheduler(lambda e: 1e-5, ["no_such_layer"])]
        )


def test_beta_controller_moves_beta_towards_the_target():
    model = small_model(1e-5)
    model.build((None, 6))
    controller = BetaController(target=1000, step=2.0, tolerance=0.1)
    controller.set_model(model)
    logs = {"ebops": 5000.0}
    controller.on_epoch_end(0, logs)
    assert model.get_layer("d1").bops_reg_factor == pytest.approx(2e-5)
    assert logs["beta"] == pytest.approx(2e-5)
    controller.on_epoch_end(1, {"ebops": 1050.0})  # inside the tolerance: unchanged
    assert model.get_layer("d1").bops_reg_factor == pytest.approx(2e-5)
    controller.on_epoch_end(2, {"ebops": 10.0})
    assert model.get_layer("d2").bops_reg_factor == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="CalibratedBOPs"):
        controller.on_epoch_end(3, {"loss": 1.0})


@pytest.mark.smoke
def test_calibrated_bops_equals_compute_bops_and_leaves_training_state_alone():
    x, y = data()
    model = compiled(small_model(1e-5))
    model.fit(x, y, epochs=2, verbose=0, callbacks=[ResetMinMax()])
    predict = model.predict_function
    before = [v.numpy().copy() for v in model.variables]
    callback = CalibratedBOPs(x[:200], bsz=64)
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    callback.on_epoch_end(1, logs)  # the compiled pass is reused
    for variable, value in zip(model.variables, before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)
    assert model.predict_function is predict
    exact = compute_bops(model, x[:200], verbose=False)
    assert logs["ebops"] == exact > 0


def test_calibrated_bops_logs_every_epoch_during_fit():
    x, y = data()
    model = compiled(small_model(1e-4))
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[ResetMinMax(), CalibratedBOPs(x)])
    assert len(history.history["ebops"]) == 3
    assert history.history["ebops"][-1] == compute_bops(model, x, verbose=False)


def test_pareto_front_keeps_only_undominated_checkpoints(tmp_path):
    model = small_model()
    model.build((None, 6))
    front = ParetoFront(tmp_path / "front")
    front.set_model(model)
    front.on_train_begin()
    epochs = [(0.5, 100.0), (0.6, 200.0), (0.55, 150.0), (0.6, 200.0), (0.4, 50.0), (0.7, 120.0)]
    for epoch, (acc, ebops) in enumerate(epochs):
        front.on_epoch_end(epoch, {"val_accuracy": acc, "ebops": ebops})
    # Hand-worked: epoch 3 repeats epoch 1 (not kept again); epoch 5 beats 1 and 2;
    # epoch 0 (cheaper than 5) and epoch 4 (cheapest) stay.
    assert [r["epoch"] for r in front.front] == [0, 4, 5]
    assert [(r["val_accuracy"], r["ebops"]) for r in front.front] == [
        (0.5, 100.0),
        (0.4, 50.0),
        (0.7, 120.0),
    ]
    on_disk = sorted(os.listdir(tmp_path / "front"))
    assert on_disk == sorted(os.path.basename(r["path"]) for r in front.front)
    assert "epoch=0005" in front.front[-1]["path"] and "ebops=120" in front.front[-1]["path"]


def test_pareto_front_says_which_metric_is_missing(tmp_path):
    model = small_model()
    model.build((None, 6))
    front = ParetoFront(tmp_path)
    front.set_model(model)
    with pytest.raises(ValueError, match="CalibratedBOPs"):
        front.on_epoch_end(0, {"val_accuracy": 0.5})
    with pytest.raises(ValueError, match="validation"):
        front.on_epoch_end(0, {"ebops": 5.0})
    with pytest.raises(ValueError, match="side"):
        ParetoFront(tmp_path, metrics=("a", "b"), sides=(1,))


def test_kept_checkpoints_reload_to_their_recorded_ebops(tmp_path):
    x, y = data(512)
    model = compiled(small_model())
    front = ParetoFront(tmp_path)
    model.fit(
        x,
        y,
        epochs=6,
        validation_split=0.25,
        verbose=0,
        callbacks=[
            ResetMinMax(),
            BetaScheduler(ConstantThenLogRamp(1e-6, 1e-3, hold=1, ramp=4)),
            CalibratedBOPs(x[:384], bsz=128),
            front,
        ],
    )
    assert front.front
    for record in front.front:
        loaded = keras.models.load_model(record["path"])
        assert compute_bops(loaded, x[:384], bsz=100, verbose=False) == record["ebops"]


def test_original_hgq_names_import_from_bops():
    from HGQ import callbacks
    from HGQ.bops import CalibratedBOPs as A
    from HGQ.bops import FreeBOPs  # noqa: N817
    from HGQ.bops import ResetMinMax as B

    assert A is callbacks.CalibratedBOPs and B is callbacks.ResetMinMax
    assert FreeBOPs is callbacks.FreeBOPs


def test_the_demo_deploys_the_cheapest_checkpoint_within_one_point_of_the_best():
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
    from digits_common import pick_deployed

    rows = [
        {"val_accuracy": 0.90, "ebops": 900.0},
        {"val_accuracy": 0.955, "ebops": 1500.0},
        {"val_accuracy": 0.958, "ebops": 1400.0},
        {"val_accuracy": 0.965, "ebops": 3000.0},
    ]
    # Best 0.965: within one point are 0.955 (1500) and 0.958 (1400) -> 1400.
    assert pick_deployed(rows) is rows[2]


@pytest.mark.parametrize(
    "seed", [8, *(pytest.param(s, marks=pytest.mark.slow) for s in (7, 9, 12, 14, 16, 20, 25))]
)
def test_calibrated_bops_equals_compute_bops_on_random_architectures(seed):
    """Convolutions, pools, fused batch norms, Signatures, sums, tables, several inputs."""
    import fuzz_models as fm

    case = fm.generate_case(seed)
    fm.train(case)
    fm.force_zero_widths(case)
    x = case.x if len(case.x) > 1 else case.x[0]
    callback = CalibratedBOPs(x, bsz=50)
    callback.set_model(case.model)
    before = [v.numpy().copy() for v in case.model.variables]
    logs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a too-wide table, found by compute_bops
        callback.on_epoch_end(0, logs)
        for variable, value in zip(case.model.variables, before, strict=True):
            np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)
        exact = compute_bops(case.model, x, bsz=64, verbose=False)
    assert logs["ebops"] == exact, case.describe()


def test_beta_controller_raises_beta_while_training_above_the_budget():
    x, y = data()
    model = compiled(small_model(1e-6))
    history = model.fit(
        x,
        y,
        epochs=4,
        verbose=0,
        callbacks=[ResetMinMax(), CalibratedBOPs(x), BetaController(target=1.0, step=2.0)],
    )
    assert all(e > 1.0 for e in history.history["ebops"])
    np.testing.assert_allclose(history.history["beta"], [2e-6, 4e-6, 8e-6, 1.6e-5], rtol=1e-6)
    assert model.get_layer("d1").bops_reg_factor == pytest.approx(1.6e-5)


class SeenLogs(keras.callbacks.Callback):
    """Records the keys of the logs at each epoch's end."""

    def __init__(self):
        super().__init__()
        self.keys = []

    def on_epoch_end(self, epoch, logs=None):
        self.keys.append(set(logs))


@pytest.mark.smoke
def test_logged_cost_is_visible_to_callbacks_listed_before_the_loggers(tmp_path):
    """EarlyStopping / ModelCheckpoint / any callback listed first see bops, ebops, beta."""
    x, y = data()
    model = compiled(small_model())
    seen = SeenLogs()
    best = tmp_path / "best.keras"
    readers = [
        seen,
        keras.callbacks.EarlyStopping(monitor="bops", patience=5, mode="min"),
        keras.callbacks.ModelCheckpoint(best, monitor="ebops", save_best_only=True, mode="min"),
        ParetoFront(tmp_path / "front", metrics=("loss", "ebops"), sides=(-1, -1)),
    ]
    loggers = [
        ResetMinMax(),
        CalibratedBOPs(x[:64]),
        BetaScheduler(lambda epoch: 1e-6),
    ]
    with warnings.catch_warnings():
        # EarlyStopping and ModelCheckpoint warn when their metric is missing.
        warnings.filterwarnings("error", message=".*(conditioned on metric|Can save best).*")
        model.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=readers + loggers)
    assert all({"bops", "ebops", "beta"} <= keys for keys in seen.keys)
    assert len(seen.keys) == 2 and best.exists()
    # The list given by the user is left in its own order.
    assert readers[0] is seen and isinstance(loggers[0], ResetMinMax)
