"""Conversion refuses what it cannot make exact, loudly, and leaves the model alone."""

import subprocess
import sys
import warnings

import hls_support as hs
import keras
import numpy as np
import pytest

from HGQ import HDense, HQuantize
from HGQ.bops import compute_bops
from HGQ.hls4ml_hook import convert_from_hgq_model


def small_model():
    return keras.Sequential([keras.Input((4,)), HQuantize(name="inp_q"), HDense(3, name="d")])


def weights_of(model):
    return [np.array(v) for v in model.weights]


def test_convert_before_compute_bops_is_refused(tmp_path):
    model = small_model()
    before = weights_of(model)
    with pytest.raises(RuntimeError, match="compute_bops"):
        convert_from_hgq_model(model, str(tmp_path / "p"))
    assert all(np.array_equal(a, b) for a, b in zip(before, weights_of(model), strict=True))


def test_io_stream_is_refused(tmp_path, rng):
    model = small_model()
    compute_bops(model, rng.normal(size=(32, 4)).astype("float32"), verbose=False)
    with pytest.raises(ValueError, match="io_parallel"):
        convert_from_hgq_model(model, str(tmp_path / "p"), io_type="io_stream")


@pytest.mark.parametrize("backend", ["Quartus", "oneAPI", "Catapult", "VivadoAccelerator"])
def test_backends_without_the_per_element_quantizer_are_refused(backend, tmp_path, rng):
    model = small_model()
    compute_bops(model, rng.normal(size=(32, 4)).astype("float32"), verbose=False)
    before = weights_of(model)
    with pytest.raises(ValueError, match=f"backend='{backend}'.*Vitis.*Vivado"):
        convert_from_hgq_model(model, str(tmp_path / "p"), backend=backend)
    assert not (tmp_path / "p").exists()
    assert all(np.array_equal(a, b) for a, b in zip(before, weights_of(model), strict=True))


@pytest.mark.slow
def test_vitis_backend_bit_exact(tmp_path, rng):
    """hls4ml's current Xilinx flow: same C simulation, every output equal."""
    from HGQ import HActivation

    model = keras.Sequential(
        [
            keras.Input((6,)),
            HQuantize(name="inp_q"),
            HDense(8, activation="relu", name="d1"),
            HActivation("tanh", name="tanh"),
            HDense(3, name="d2"),
        ]
    )
    x = rng.normal(size=(400, 6)).astype("float32")
    hs.train_briefly(model, x, rng.normal(size=(400, 3)).astype("float32"))
    hs.scramble_bitwidths(model, rng)
    model_hls = hs.convert_compiled(model, x, tmp_path / "vitis", backend="Vitis")
    assert model_hls.config.config["Backend"] == "Vitis"
    for data in (x, hs.out_of_range(x, rng)):
        assert hs.mismatches(model, model_hls, data) == (0, data.shape[0] * 3)


@pytest.mark.parametrize("bad", [-1, 1.5, "2"])
def test_bad_bias_accum_is_refused(tmp_path, rng, bad):
    model = small_model()
    compute_bops(model, rng.normal(size=(32, 4)).astype("float32"), verbose=False)
    with pytest.raises(ValueError, match="bias_accum"):
        convert_from_hgq_model(model, str(tmp_path / "p"), bias_accum=bad)


def test_plain_keras_layer_is_named(tmp_path, rng):
    inp = keras.Input((4,))
    out = keras.layers.Dense(2, name="plain_dense")(HDense(3)(HQuantize(name="inp_q")(inp)))
    model = keras.Model(inp, out)
    with pytest.raises(ValueError, match="plain_dense.*Dense.*HDense"):
        convert_from_hgq_model(model, str(tmp_path / "p"))


def test_missing_hls4ml_gives_install_hint():
    code = (
        "import sys; sys.modules['hls4ml'] = None\n"
        "import HGQ, keras\n"
        "from HGQ.hls4ml_hook import convert_from_hgq_model\n"
        "try:\n"
        "    convert_from_hgq_model(None, 'x')\n"
        "except ImportError as e:\n"
        "    print('ERR', e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert "ERR" in result.stdout and "pip install" in result.stdout, result.stderr[-2000:]


@pytest.mark.slow
def test_accumulator_wider_than_float32_warns(tmp_path, rng):
    model = keras.Sequential(
        [
            keras.Input((16,)),
            HQuantize(name="inp_q", pre_activation_quantizer_config={"init_bw": 14}),
            HDense(2, name="wide", kernel_quantizer_config={"init_bw": 14}),
        ]
    )
    compute_bops(model, rng.normal(scale=100, size=(64, 16)).astype("float32"), verbose=False)
    with pytest.warns(UserWarning, match="wide.*float32"):
        convert_from_hgq_model(model, str(tmp_path / "p"))


@pytest.mark.slow
def test_narrow_model_converts_without_warning(tmp_path, rng):
    model = small_model()
    compute_bops(model, rng.normal(size=(64, 4)).astype("float32"), verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        convert_from_hgq_model(model, str(tmp_path / "p"))


def test_other_hls4ml_release_warns_that_the_workarounds_are_unchecked(tmp_path, rng, monkeypatch):
    import hls4ml

    model = small_model()
    compute_bops(model, rng.normal(size=(32, 4)).astype("float32"), verbose=False)
    monkeypatch.setattr(hls4ml, "__version__", "1.4.0")
    with pytest.warns(UserWarning, match="checked on hls4ml 1.3.0; hls4ml 1.4.0 is installed"):
        convert_from_hgq_model(model, str(tmp_path / "p"))


@pytest.mark.slow
def test_bias_accum_exact_and_truncated(tmp_path, rng):
    """None: exact. An int: accumulators cut to f_out + bias_accum fractional bits."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            HQuantize(name="inp_q", pre_activation_quantizer_config={"init_bw": 6}),
            HDense(4, name="d", kernel_quantizer_config={"init_bw": 6}),
        ]
    )
    x = rng.normal(size=(500, 8)).astype("float32")
    hs.train_briefly(model, x, rng.normal(size=(500, 4)).astype("float32"))
    exact = hs.convert_compiled(model, x, tmp_path / "exact")
    assert hs.mismatches(model, exact, x) == (0, x.shape[0] * 4)
    f_out = int(model.get_layer("d").pre_activation_quantizer.exact_format()[2].max())
    accum_exact = exact.graph["d"].attributes["accum_t"].precision
    assert accum_exact.width - accum_exact.integer > f_out + 1  # products carry more bits

    cut = convert_from_hgq_model(model, str(tmp_path / "cut"), bias_accum=1)
    accum_cut = cut.graph["d"].attributes["accum_t"].precision
    assert accum_cut.width - accum_cut.integer == f_out + 1
    assert accum_cut.integer == accum_exact.integer
    cut.compile()
    differ, total = hs.mismatches(model, cut, x)
    # Documented as possibly inexact: the truncated accumulator may only lose, never gain.
    print(f"bias_accum=1: {differ}/{total} outputs differ")
    assert differ < total


def test_accumulator_wider_than_float32_warns_naming_the_layer(tmp_path, rng):
    model = small_model()
    model.get_layer("inp_q").pre_activation_quantizer.fractional_bits.assign(np.full((1, 4), 12.0))
    model.get_layer("d").kernel_quantizer.fractional_bits.assign(np.full((4, 3), 12.0, "float32"))
    compute_bops(model, rng.normal(scale=8, size=(64, 4)).astype("float32"), verbose=False)
    with pytest.warns(UserWarning, match=r"^d: its accum_t is \d+ bits wide.*float32"):
        convert_from_hgq_model(model, str(tmp_path / "p"))


def test_wide_union_of_narrow_formats_does_not_warn(tmp_path):
    """A quantizer's elements may be far apart (10 integer bits here, 16 fractional bits
    there): hls4ml's type for the whole tensor is wide, but no arithmetic happens in it,
    and each element fits float32 exactly."""
    model = keras.Sequential([keras.Input((2,)), HQuantize(name="inp_q")])
    model.get_layer("inp_q").pre_activation_quantizer.fractional_bits.assign([[0.0, 16.0]])
    x = np.array([[700.0, 0.001], [-3.0, -0.002]], "float32")
    compute_bops(model, x, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model_hls = convert_from_hgq_model(model, str(tmp_path / "p"))
    widths = [n.get_output_variable().type.precision.width for n in model_hls.graph.values()]
    assert max(widths) > 24
