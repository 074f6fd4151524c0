"""One deployment description per layer, accepted by both emitters.

Every public layer class resolves to exactly one registered description (its own or
its nearest registered base's); every step kind has an hls4ml emitter and an RTL rule;
registration errors name the fix. Bit-exactness of the descriptions is tested per
layer by the hls4ml and RTL suites (and ``test_extension.py`` for a user's layer).
"""

import dataclasses
import inspect

import pytest

import HGQ
from HGQ.deploy import descriptions as describe_module
from HGQ.deploy import register_deployment, steps
from HGQ.deploy.descriptions import registered_classes, registration_of
from HGQ.layers import HBaseLayer, HKernelLayer, PLayerBase, QLayerBase

BASES = {QLayerBase, HBaseLayer, HKernelLayer, PLayerBase}


def public_layer_classes():
    exported = {getattr(HGQ, name) for name in HGQ.__all__}
    classes = [
        c for c in exported if inspect.isclass(c) and issubclass(c, QLayerBase) and c not in BASES
    ]
    return sorted(classes, key=lambda c: c.__name__)


def step_kinds():
    return [
        c
        for c in vars(steps).values()
        if inspect.isclass(c) and issubclass(c, steps.Step) and c is not steps.Step
    ]


def test_every_public_layer_has_exactly_one_description():
    classes = public_layer_classes()
    assert len(classes) >= 25
    missing = [c.__name__ for c in classes if registration_of(c.__new__(c)) is None]
    assert missing == []
    for cls in classes:
        owners = [base for base in cls.__mro__ if base in registered_classes()]
        # The nearest registered class decides; a layer is never described twice
        # at the same distance (single inheritance among HGQ's layers).
        assert owners, cls.__name__
        assert registration_of(cls.__new__(cls)) is registration_of(owners[0].__new__(owners[0]))


def test_every_step_kind_has_an_emitter_on_both_paths():
    from HGQ.hls4ml_hook.handlers import EMITTERS

    kinds = set(step_kinds())
    assert len(kinds) == 17
    assert set(EMITTERS) == kinds
    pytest.importorskip("alkaid")
    from HGQ.rtl.step_rules import RULES

    assert set(RULES) == kinds


def test_steps_are_immutable_and_take_keywords_only():
    step = steps.Relu(name="r", inputs=("a",), output="b", shape=(3,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.name = "other"
    with pytest.raises(TypeError):
        steps.Relu("r", ("a",), "b", (3,))


def test_register_deployment_errors_name_the_fix():
    with pytest.raises(TypeError, match="pass the class itself"):
        register_deployment("HScale", lambda layer, tensors: [])
    with pytest.raises(TypeError, match="describe must be a function"):
        register_deployment(HGQ.HDense, "not a function")


def test_a_subclass_description_overrides_its_base(rng):
    class Plain(HGQ.HActivation):
        pass

    class Own(HGQ.HActivation):
        pass

    def describe_own(layer, tensors):
        return []

    register_deployment(Own, describe_own)
    try:
        assert registration_of(Plain("relu")) is registration_of(HGQ.HActivation("relu"))
        assert registration_of(Own("relu")).describe is describe_own
    finally:  # other modules may share this process: leave the registry as it was
        del describe_module._REGISTRY[Own]
