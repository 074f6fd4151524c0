"""Subclassed models and models nested in models: calibrate, convert, bit-exact.

hls4ml reads one functional graph. A subclassed model (layers called in ``call``) and a
functional or Sequential model used as a layer of another are converted through one
flat functional graph of the same layer objects (``HGQ.deploy.flat_graph``).
What cannot be flattened reliably is refused with the cause, leaving the model as it was.
"""

from __future__ import annotations

import warnings

import hls_support as hs
import keras
import numpy as np
import pytest
from randomise import randomise_bits

from HGQ import (
    CalibratedBOPs,
    HActivation,
    HAdd,
    HBaseLayer,
    HDense,
    HQuantize,
    PConcatenate,
    ResetMinMax,
    Signature,
)
from HGQ.bops import compute_bops, hgq_layers
from HGQ.deploy.flat_graph import flat_functional
from HGQ.hls4ml_hook import convert_from_hgq_model

N_SAMPLES = 256


class MLP(keras.Model):
    """HQuantize -> HDense(relu) -> HDense, written as a subclassed model.

    ``training`` is passed on to every layer: on the JAX backend ``fit`` calls ``call``
    directly, so a layer not given it would run in inference mode while training.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inp_q = HQuantize(name="inp_q")
        self.hidden = HDense(8, activation="relu", name="hidden")
        self.out = HDense(3, name="out")

    def call(self, x, training=None):
        h = self.hidden(self.inp_q(x, training=training), training=training)
        return self.out(h, training=training)


class BlockThenDense(keras.Model):
    """A subclassed model applying a Sequential block, then its own layer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.block = keras.Sequential([HQuantize(), HDense(8, activation="relu")])
        self.out = HDense(3)

    def call(self, x, training=None):
        return self.out(self.block(x, training=training), training=training)


def subclassed_mlp() -> keras.Model:
    return MLP()


def sequential_in_functional() -> keras.Model:
    inner = keras.Sequential(
        [keras.Input((6,)), HQuantize(), HDense(8, activation="relu")], name="inner"
    )
    inp = keras.Input((6,))
    return keras.Model(inp, HDense(3)(inner(inp)))


def functional_in_functional() -> keras.Model:
    """Two inputs into an inner functional model; two outputs (a Dense and a table)."""
    a, b = keras.Input((6,)), keras.Input((4,))
    joined = PConcatenate()([HDense(5, activation="relu")(HQuantize()(a)), HQuantize()(b)])
    inner = keras.Model([a, b], HDense(6)(joined), name="inner")
    x1, x2 = keras.Input((6,)), keras.Input((4,))
    h = inner([x1, x2])
    return keras.Model([x1, x2], [HDense(3)(h), HActivation("tanh")(h)])


def sequential_in_sequential() -> keras.Model:
    inner = keras.Sequential([keras.Input((6,)), HQuantize(), HDense(8, activation="relu")])
    return keras.Sequential([inner, HDense(5, activation="relu"), HDense(3)])


BUILDERS = {
    "subclassed": subclassed_mlp,
    "sequential_in_functional": sequential_in_functional,
    "functional_in_functional": functional_in_functional,
    "sequential_in_sequential": sequential_in_sequential,
}


def data_for(name: str, rng: np.random.Generator):
    """Inputs and targets matching a builder's model."""
    x = rng.normal(size=(N_SAMPLES, 6)).astype("float32")
    y = rng.normal(size=(N_SAMPLES, 3)).astype("float32")
    if name == "functional_in_functional":
        x2 = rng.normal(size=(N_SAMPLES, 4)).astype("float32")
        return [x, x2], [y, rng.normal(size=(N_SAMPLES, 6)).astype("float32")]
    return x, y


def far(x, rng):
    """``hs.out_of_range`` on every input array."""
    return [hs.out_of_range(a, rng) for a in x] if isinstance(x, list) else hs.out_of_range(x, rng)


def n_outputs(model, x) -> int:
    out = model.predict(x, verbose=0)
    return sum(o.size for o in out) if isinstance(out, list) else out.size


def scramble_all_bitwidths(model: keras.Model, rng: np.random.Generator) -> None:
    """``hs.scramble_bitwidths`` reaching into nested and subclassed models' layers."""
    for layer in hgq_layers(model):
        if isinstance(layer, HBaseLayer):
            randomise_bits(layer.pre_activation_quantizer, rng, -1, 5)
            if hasattr(layer, "kernel_quantizer"):
                randomise_bits(layer.kernel_quantizer, rng, -1, 5)


def weights_of(model):
    return [np.array(v) for v in model.weights]


def graph_state(model):
    """Keras' call records and HGQ's lineage of every layer: what a refusal must keep."""
    return [
        (
            layer.name,
            len(layer._inbound_nodes),
            len(layer._outbound_nodes),
            getattr(layer, "_input_source_refs", None),
        )
        for layer in model._flatten_layers(include_self=True)
    ]


# ---------------------------------------------------------------- bit-exact conversion
@pytest.fixture(scope="module", params=list(BUILDERS))
def converted(request, tmp_path_factory):
    name = request.param
    keras.utils.set_random_seed(11)
    rng = np.random.default_rng(11)
    model = BUILDERS[name]()
    x, y = data_for(name, rng)
    hs.train_briefly(model, x, y, epochs=2)
    scramble_all_bitwidths(model, rng)
    model_hls = hs.convert_compiled(model, x, tmp_path_factory.mktemp(name))
    return model, model_hls, x, rng


@pytest.mark.slow
def test_nested_and_subclassed_models_convert_bit_exact(converted):
    model, model_hls, x, rng = converted
    total = n_outputs(model, x)
    assert hs.mismatches(model, model_hls, x) == (0, total)
    x_far = far(x, rng)
    # Far inputs really overflow the first layer's calibrated formats.
    first = next(layer for layer in hgq_layers(model) if isinstance(layer, HQuantize))
    _, i, _ = first.pre_activation_quantizer.exact_format()
    assert np.abs(x_far[0] if isinstance(x_far, list) else x_far).max() > 2.0 ** i.max()
    assert hs.mismatches(model, model_hls, x_far) == (0, total)


# ------------------------------------------------------------- the flat graph (fast)
# The four BUILDERS models are converted end to end above (slow); here, quickly, the
# graph a subclassed model applying a Sequential gives, and two nested kinds.
@pytest.mark.parametrize(
    "name", ["subclassed_with_block", "functional_in_functional", "sequential_in_sequential"]
)
def test_flat_graph_shares_the_layers_and_computes_the_same(name, rng):
    model = BlockThenDense() if name == "subclassed_with_block" else BUILDERS[name]()
    x, _ = data_for(name, rng)
    compute_bops(model, x, verbose=False)
    expected = model.predict(x, verbose=0)
    lineage = [getattr(layer, "_input_source_refs", None) for layer in hgq_layers(model)]
    with flat_functional(model) as flat:
        layers = [layer for layer in flat.layers if not isinstance(layer, keras.layers.InputLayer)]
        assert not any(isinstance(layer, keras.Model) for layer in layers)
        assert {id(layer) for layer in layers} == {id(layer) for layer in hgq_layers(model)}
        got = flat.predict(x, verbose=0)
    for e, g in zip(keras.tree.flatten(expected), keras.tree.flatten(got), strict=True):
        np.testing.assert_array_equal(e, g)
    # HGQ's lineage is the model's own again once the conversion is over.
    assert [getattr(layer, "_input_source_refs", None) for layer in hgq_layers(model)] == lineage


def test_plain_functional_model_is_its_own_flat_graph(rng):
    inp = keras.Input((6,))
    model = keras.Model(inp, HDense(3)(HQuantize()(inp)))
    with flat_functional(model) as flat:
        assert flat is model


def test_lineage_crosses_the_sub_model_boundary():
    """The layer after a nested model reads the bitwidths of the layer inside it."""
    model = sequential_in_functional()
    inner, after = model.layers[1], model.layers[2]
    assert after.input_source() is inner.layers[-1]


@pytest.mark.parametrize("name", ["subclassed", "sequential_in_functional"])
def test_callbacks_and_compute_bops_on_nested_and_subclassed_models(name, rng):
    model = BUILDERS[name]()
    x, y = data_for(name, rng)
    model.compile(keras.optimizers.Adam(0.01), "mse")
    history = model.fit(
        x, y, epochs=2, batch_size=128, verbose=0, callbacks=[ResetMinMax(), CalibratedBOPs(x)]
    )
    assert len(history.history["ebops"]) == 2
    assert history.history["bops"][-1] > 0
    assert history.history["ebops"][-1] == compute_bops(model, x, verbose=False) > 0


class SignatureMLP(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sig = Signature(keep_negative=1, bits=6, int_bits=2)
        self.out = HDense(3)

    def call(self, x):
        return self.out(self.sig(x))


@pytest.mark.parametrize("kind", ["subclassed", "nested"])
def test_signature_check_of_compute_bops_does_not_fail_on_nested_models(kind, rng):
    """Data off a Signature's grid: compute_bops calibrates (its warning may be skipped)."""
    if kind == "subclassed":
        model = SignatureMLP()
    else:
        inner = keras.Sequential([keras.Input((6,)), Signature(1, 6, 2), HDense(4)])
        inp = keras.Input((6,))
        model = keras.Model(inp, HDense(3)(inner(inp)))
    x = rng.normal(size=(64, 6)).astype("float32")
    assert compute_bops(model, x, verbose=False) > 0


# ------------------------------------------------------------------------- refusals
def refused(model, tmp_path, match):
    """Conversion raises ``match``; weights, call records and lineage are unchanged."""
    before, state = weights_of(model), graph_state(model)
    with pytest.raises(ValueError, match=match):
        convert_from_hgq_model(model, str(tmp_path / "p"))
    assert not (tmp_path / "p").exists()
    after = weights_of(model)
    assert len(before) == len(after)
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert graph_state(model) == state


class LayerTwice(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.q = HQuantize()
        self.dense = HDense(6, name="twice")
        self.add = HAdd()

    def call(self, x):
        h = self.q(x)
        return self.add([self.dense(h), self.dense(h)])


class RawOperation(MLP):
    def call(self, x, training=None):
        return super().call(x, training=training) * 2.0


class SymbolicBatch(MLP):
    def call(self, x, training=None):
        h = self.hidden(self.inp_q(x))
        return self.out(h) if x.shape[0] > 0 else h


class TwoArguments(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.qa, self.qb, self.add = HQuantize(), HQuantize(), HAdd()

    def call(self, a, b):
        return self.add([self.qa(a), self.qb(b)])


def test_unbuilt_subclassed_model_is_refused(tmp_path):
    model = MLP(name="net")
    refused(model, tmp_path, r"'net' \(MLP\) has not been built.*compute_bops")
    assert not model.built


@pytest.mark.parametrize(
    ("model_class", "match"),
    [
        (LayerTwice, r"Layer 'twice' is used 2 times.*one layer per use"),
        (RawOperation, r"'multiply' \(Multiply\) with a raw keras.ops call.*functional model"),
        (SymbolicBatch, r"running its call\(\) on symbolic inputs.*failed \(TypeError"),
    ],
)
def test_subclassed_models_that_cannot_be_traced_are_refused(model_class, match, tmp_path, rng):
    model = model_class()
    x = rng.normal(size=(64, 6)).astype("float32")
    compute_bops(model, x, verbose=False)
    refused(model, tmp_path, match)


def test_subclassed_model_with_two_call_arguments_is_refused(tmp_path, rng):
    model = TwoArguments()
    x = rng.normal(size=(8, 6)).astype("float32")
    model(x, x)
    refused(model, tmp_path, r"2 arguments \(a, b\).*call\(self, inputs\)")


def test_sub_model_called_twice_is_refused(tmp_path, rng):
    inner = keras.Sequential([keras.Input((6,)), HQuantize(), HDense(4, name="shared_d")])
    x1, x2 = keras.Input((6,)), keras.Input((6,))
    model = keras.Model([x1, x2], HAdd()([inner(x1), inner(x2)]))
    x = rng.normal(size=(64, 6)).astype("float32")
    compute_bops(model, [x, x], verbose=False)
    refused(model, tmp_path, r"Layer '\w+' is used 2 times")


def test_clashing_layer_names_across_sub_models_are_refused(tmp_path, rng):
    inner = keras.Sequential([keras.Input((6,)), HQuantize(name="q"), HDense(4, name="d")])
    inp = keras.Input((6,))
    model = keras.Model(inp, HDense(3, name="d")(inner(inp)))
    compute_bops(model, rng.normal(size=(64, 6)).astype("float32"), verbose=False)
    refused(model, tmp_path, r"names distinct")


class DropsTraining(keras.Model):
    """A subclassed model whose call takes ``training`` but does not pass it on."""

    def __init__(self):
        super().__init__()
        self.q = HQuantize(name="inp_q")
        self.d = HDense(3, name="d")

    def call(self, x, training=None):
        return self.d(self.q(x))


class LacksTraining(DropsTraining):
    """A subclassed model whose call has no ``training`` argument at all."""

    def call(self, x):
        return self.d(self.q(x))


@pytest.mark.smoke
@pytest.mark.parametrize("model_class", [DropsTraining, LacksTraining])
def test_reset_minmax_warns_when_layers_never_train(model_class):
    """Such layers train nothing, silently; ResetMinMax says so after one epoch.

    Keras passes ``training`` to inner layers through its call context only when
    ``call`` accepts it, and not at all on JAX, whose trainer calls ``call`` directly.
    """
    model = model_class()
    model.compile("adam", "mse")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = np.zeros((64, 3), "float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=2, verbose=0, callbacks=[ResetMinMax()])
    messages = [str(w.message) for w in caught if "did not run in training" in str(w.message)]
    if model_class is LacksTraining or keras.backend.backend() == "jax":
        assert len(messages) == 1 and "inp_q, d" in messages[0]
        assert "training=training" in messages[0]
    else:
        assert messages == []


def test_hgq_layer_after_a_subclassed_block_says_how_to_build_it():
    block = DropsTraining()
    inp = keras.Input((4,))
    with pytest.raises(
        ValueError, match="subclassed model used as a layer.*functional or Sequential"
    ):
        HDense(2)(block(inp))
