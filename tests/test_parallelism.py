"""parallel_factor: the default prices the fully parallel firmware, old files keep their
price, and both deployment paths say when they build something else than is priced."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from HGQ import HConv1D, HDense, HEinsumDense, HMultiHeadAttention, HQuantize, Signature
from HGQ.bops import compute_bops
from HGQ.costs import summary

DATA = Path(__file__).parent / "data"


def conv_model(parallel_factor=None) -> keras.Model:
    inp = keras.Input((8, 2))
    x = HQuantize(name="inp_q")(inp)
    x = HConv1D(3, 3, name="conv", parallel_factor=parallel_factor)(x)
    return keras.Model(inp, HDense(2, name="per_position")(x))


@pytest.mark.smoke
def test_default_is_one_instance_per_position():
    model = conv_model()
    conv, dense = model.get_layer("conv"), model.get_layer("per_position")
    assert (conv.parallel_factor, conv.positions) == (6, 6)
    assert (dense.parallel_factor, dense.positions) == (6, 6)
    assert conv.bops_scale == dense.bops_scale == 1.0
    # The configuration keeps None (fully parallel whatever the shape), not 6.
    assert conv.get_config()["parallel_factor"] is None
    assert HConv1D(3, 3).parallel_factor is None  # unknown before build


def test_explicit_factor_is_kept_and_priced_as_a_share(rng):
    x = rng.normal(size=(64, 8, 2)).astype("float32")
    full = conv_model()
    shared = conv_model(parallel_factor=2)
    shared.set_weights(full.get_weights())
    conv_full = compute_bops(full, x, verbose=False).by_layer()["conv"]
    conv_shared = compute_bops(shared, x, verbose=False).by_layer()["conv"]
    # Two instances of six positions: a third of the fully parallel price.
    assert conv_shared == pytest.approx(conv_full * 2 / 6, rel=1e-12)
    assert shared.get_layer("conv").get_config()["parallel_factor"] == 2


def test_attention_passes_its_factor_to_the_projections():
    inp = keras.Input((4, 3))
    x = HQuantize()(inp)
    layer = HMultiHeadAttention(2, 2, parallel_factor=2, name="mha")
    keras.Model(inp, layer(x, x))
    projections = [layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense]
    assert [p.parallel_factor for p in projections] == [2, 2, 2, 2]
    assert [p.positions for p in projections] == [4, 4, 4, 4]
    default = HMultiHeadAttention(2, 2, name="mha_default")
    keras.Model(inp, default(x, x))
    assert default.query_dense.parallel_factor == 4
    config = layer.get_config()
    assert config["parallel_factor"] == 2
    del config["parallel_factor"]  # a configuration from before the argument existed
    assert HMultiHeadAttention.from_config(config).parallel_factor == 1


def test_configuration_without_the_key_loads_with_the_old_default():
    for layer in (HDense(3), HConv1D(2, 3), HEinsumDense("bpc,pq->bqc", (2, 3))):
        config = layer.get_config()
        del config["parallel_factor"]
        assert type(layer).from_config(config).parallel_factor == 1


@pytest.mark.slow
def test_file_saved_with_the_old_default_loads_converts_and_prices_as_before(tmp_path):
    """``data/old_default_factor.keras`` was saved by the library before this change
    (``data/make_old_default_factor.py``, run on commit 6755544): a convolution, an
    HDense per position, a token-mixing HEinsumDense and attention, all with the then
    default parallel_factor=1, calibrated. Loaded now, it keeps that price."""
    recorded = json.loads((DATA / "old_default_factor.json").read_text())
    x = np.load(DATA / "old_default_factor_x.npy")
    model = keras.models.load_model(DATA / "old_default_factor.keras")
    factors = {
        layer.name: layer.parallel_factor
        for layer in model._flatten_layers(include_self=False)
        if hasattr(layer, "positions") and hasattr(layer, "bops_scale")
    }
    assert factors and set(factors.values()) == {1}, factors
    assert np.array_equal(model.predict(x, verbose=0), np.asarray(recorded["outputs"], "float32"))
    costs = summary(model, print_fn=lambda _: None)
    # Products are what the old EBOPs counted; the softmax inside the attention now
    # also prices its adders and tables, which the old count left out.
    assert costs.products == pytest.approx(recorded["ebops"], rel=1e-12)
    for name in ("conv", "per_position", "token_mix", "head"):
        assert costs.by_layer()[name] == pytest.approx(recorded["by_layer"][name], rel=1e-12)
    pytest.importorskip("alkaid")
    from HGQ.rtl import convert_to_rtl

    with pytest.warns(UserWarning, match="parallel_factor=1") as caught:
        project = convert_to_rtl(model, tmp_path / "rtl", write=False)
    named = {w.message.args[0].split("'")[1] for w in caught if "parallel_factor" in str(w.message)}
    assert {"conv", "per_position", "token_mix", "mha_query"} <= named
    assert np.array_equal(project.emulate(x), model.predict(x, verbose=0))


def test_rtl_warns_with_the_lut_multiple_and_not_for_the_default(tmp_path, rng):
    pytest.importorskip("alkaid")
    from HGQ.rtl import convert_to_rtl

    x = rng.normal(size=(64, 8, 2)).astype("float32")
    model = conv_model(parallel_factor=2)
    compute_bops(model, x, verbose=False)
    with pytest.warns(UserWarning, match=r"HConv1D 'conv'.*parallel_factor=2.*builds 6.*3x"):
        convert_to_rtl(model, tmp_path / "shared", write=False)
    model = conv_model()
    compute_bops(model, x, verbose=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*EBOPs price.*")
        project = convert_to_rtl(model, tmp_path / "full", write=False)
    estimate = project.estimate()
    # alkaid optimises the whole circuit across layers (shared terms, fused adders), so
    # the layers' own estimates add up to it only roughly (da4ml's were additive).
    layers = sum(r["lut_estimate"] for r in estimate["per_layer"])
    assert layers == pytest.approx(estimate["lut"], rel=0.1)
    assert estimate["lut"] > 0 and estimate["ff"] == 0


def test_summary_shows_instances_over_positions(rng):
    model = conv_model(parallel_factor=3)
    costs = compute_bops(model, rng.normal(size=(32, 8, 2)).astype("float32"), verbose=False)
    lines = costs.table().splitlines()
    assert "parallel" in lines[0]
    assert " 3/6 " in next(line for line in lines if line.startswith("conv"))
    assert " 6/6 " in next(line for line in lines if line.startswith("per_position"))
    assert " - " in next(line for line in lines if line.startswith("inp_q"))


def test_hls4ml_builds_the_priced_factor_and_warns_when_it_cannot(tmp_path, rng):
    pytest.importorskip("hls4ml")
    from HGQ.hls4ml_hook import convert_from_hgq_model

    x = rng.normal(size=(64, 8, 2)).astype("float32")
    model = conv_model()
    compute_bops(model, x, verbose=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*EBOPs price.*")
        model_hls = convert_from_hgq_model(model, str(tmp_path / "full"))
    assert model_hls.graph["conv"].get_attr("parallelization_factor") == 6
    assert model_hls.graph["per_position"].get_attr("parallelization_factor") == 6
    # hls4ml takes only divisors of the positions: 4 becomes another factor.
    model = conv_model(parallel_factor=4)
    compute_bops(model, x, verbose=False)
    with pytest.warns(UserWarning, match=r"HConv1D 'conv'.*parallel_factor=4.*hls4ml builds"):
        convert_from_hgq_model(model, str(tmp_path / "four"))


def test_bad_factors_are_refused_with_the_fix():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="None .* or an int >= 1"):
            HConv1D(2, 3, parallel_factor=bad)
        with pytest.raises(ValueError, match="None .* or an int >= 1"):
            HMultiHeadAttention(2, 2, parallel_factor=bad)
    inp = keras.Input((4, 1))
    with pytest.raises(ValueError, match="parallel_factor=5 exceeds the 2 position.*or None"):
        HConv1D(2, 3, parallel_factor=5)(Signature(keep_negative=1, bits=4, int_bits=2)(inp))
