"""Every deployable HGQ layer has a handler; plain hls4ml conversion understands HGQ."""

import inspect

import keras
import pytest

import HGQ
from HGQ import HActivation, HDense, HQuantize
from HGQ.layers import HBaseLayer, HKernelLayer, PLayerBase, QLayerBase


def deployable_layer_classes():
    bases = {QLayerBase, HBaseLayer, HKernelLayer, PLayerBase}
    exported = {getattr(HGQ, name) for name in HGQ.__all__}
    return sorted(
        (
            c
            for c in exported
            if inspect.isclass(c) and issubclass(c, QLayerBase) and c not in bases
        ),
        key=lambda c: c.__name__,
    )


def test_every_exported_layer_class_has_a_handler():
    from hls4ml.converters.keras_v3._base import registry

    import HGQ.hls4ml_hook.handlers  # noqa: F401

    classes = deployable_layer_classes()
    assert len(classes) >= 19  # the guide's layers and the newer ones
    missing = [c.__name__ for c in classes if f"{c.__module__}.{c.__name__}" not in registry]
    assert missing == []


@pytest.mark.smoke
def test_plain_hls4ml_conversion_is_refused_with_the_entry_point(tmp_path, rng):
    """hls4ml's own entry point would miss the corrections convert_from_hgq_model makes
    (tests/test_hls4ml_regressions.py), so the handlers point to it instead."""
    import hls4ml

    from HGQ.bops import compute_bops

    model = keras.Sequential(
        [keras.Input((5,)), HQuantize(name="inp_q"), HActivation("linear"), HDense(2)]
    )
    compute_bops(model, rng.normal(size=(300, 5)).astype("float32"), verbose=False)
    with pytest.raises(RuntimeError, match="convert_from_hgq_model, not hls4ml's"):
        hls4ml.converters.convert_from_keras_model(
            model, output_dir=str(tmp_path / "prj"), backend="Vivado"
        )
