"""HSoftmax settings that held-out random models found wrong on one deployment path.

Each test converts on both paths (hls4ml's C simulation and ``HGQ.rtl``) and
compares every output with Keras. The counts in the docstrings are those measured
before the fix.
"""

from __future__ import annotations

import math
from fractions import Fraction

import keras
import numpy as np
import pytest

from HGQ import HActivation, HQuantize, HSoftmax, Signature, compute_bops
from HGQ.config import set_default_pre_activation_quantizer_config

FLOOR = {"rnd_strategy": "floor"}


def _outputs(values) -> list[np.ndarray]:
    return [np.asarray(v) for v in values] if isinstance(values, list) else [np.asarray(values)]


def _differ(expected, got) -> list[int]:
    return [
        int(np.sum(e != np.asarray(g).reshape(e.shape)))
        for e, g in zip(_outputs(expected), _outputs(got), strict=True)
    ]


def floored_softmaxes() -> keras.Model:
    """A quantizer followed by three softmaxes over 8 values: a floored exponential, a
    floored reciprocal, and floor as the global default for every quantizer."""
    inp = keras.Input((8,))
    x = HQuantize(name="inp_q")(inp)
    exp_floor = HSoftmax(exp_quantizer_config=FLOOR, name="exp_floor")(x)
    inv_floor = HSoftmax(inv_quantizer_config=FLOOR, name="inv_floor")(x)
    set_default_pre_activation_quantizer_config(FLOOR)
    everywhere = HSoftmax(name="floor_default")(x)
    return keras.Model(inp, [exp_floor, inv_floor, everywhere])


@pytest.fixture(scope="module")
def floored():
    rng = np.random.default_rng(21)
    model = floored_softmaxes()
    x = rng.normal(scale=2.0, size=(400, 8)).astype("float32")
    compute_bops(model, x, verbose=False)
    ties = (np.floor(rng.uniform(-64, 64, size=(200, 8))) + 0.5) * 2.0**-3
    return model, np.concatenate([x, 9 * x, ties.astype("float32")])


def test_floor_rounding_is_what_keras_computes(floored):
    """Keras floors ``e = Q(exp d)`` and ``r = Q(1/s)`` when their quantizer says so."""
    model, _ = floored
    for name in ("exp_floor", "inv_floor", "floor_default"):
        layer = model.get_layer(name)
        assert layer.exp_quantizer.config["rnd_strategy"] == (
            "floor" if name != "inv_floor" else "standard_round"
        )
        assert layer.inv_quantizer.config["rnd_strategy"] == (
            "floor" if name != "exp_floor" else "standard_round"
        )


@pytest.mark.slow
def test_floored_softmax_quantizers_convert_exactly_with_hls4ml(floored, tmp_path):
    """The handler emitted both table quantizers with round-half-up: 2,024 / 819 / 1,777
    of 8,000 outputs differed (floored exponential / reciprocal / global default)."""
    pytest.importorskip("hls4ml")
    from HGQ.hls4ml_hook import convert_from_hgq_model

    model, x = floored
    model_hls = convert_from_hgq_model(model, str(tmp_path / "prj"))
    model_hls.compile()
    assert _differ(model.predict(x, verbose=0), model_hls.predict(np.ascontiguousarray(x))) == [
        0,
        0,
        0,
    ]


@pytest.mark.rtl
def test_floored_softmax_quantizers_emulate_exactly(floored, tmp_path):
    """0 / 61 / 71 of 8,000 outputs differed: Keras's inference divided ``1 / s`` in
    float32 inside an XLA fusion, which can be an ulp off (1/2 -> 0.49999997, floored
    to 127/256), while the table holds the correctly rounded quotient. Keras now rounds
    the rational ``1 / s`` exactly (``HSoftmax.rounded_reciprocal``)."""
    pytest.importorskip("alkaid")
    from HGQ.rtl import convert_to_rtl

    model, x = floored
    project = convert_to_rtl(model, tmp_path / "rtl")
    assert _differ(model.predict(x, verbose=0), project.emulate(x)) == [0, 0, 0]


def wide_input_softmax(int_bits: int) -> keras.Model:
    inp = keras.Input((6,))
    x = Signature(keep_negative=1, bits=int_bits + 3, int_bits=int_bits, name="sig")(inp)
    return keras.Model(inp, HSoftmax(name="sm")(x))


@pytest.mark.rtl
@pytest.mark.parametrize("int_bits", [6, 9])
def test_softmax_of_a_wide_input_converts_to_rtl(int_bits, tmp_path):
    """With 6 or more integer bits, ``x - max(x)`` may reach +2^(i+1) by interval
    arithmetic and the exponential's table was built there too: float32 ``exp``
    overflows above 88.7, and da4ml's lookup crashed ('low nan must be less than high
    nan'). The table is now built over ``d <= 0`` only, the values that occur."""
    pytest.importorskip("alkaid")
    from HGQ.rtl import convert_to_rtl

    rng = np.random.default_rng(int_bits)
    model = wide_input_softmax(int_bits)
    x = rng.normal(scale=2.0 ** (int_bits - 1), size=(300, 6)).astype("float32")
    compute_bops(model, x, verbose=False)
    project = convert_to_rtl(model, tmp_path / "rtl")
    probe = np.concatenate([x, 8 * x, np.zeros((4, 6), "float32")])
    assert _differ(model.predict(probe, verbose=0), project.emulate(probe)) == [0]


def exponential_activation() -> keras.Model:
    """exp over inputs up to 2^8: float32 overflows to inf above 88.7."""
    inp = keras.Input((3,))
    x = Signature(keep_negative=1, bits=10, int_bits=8, name="sig")(inp)
    return keras.Model(inp, HActivation("exponential", name="exp_act")(x))


@pytest.mark.rtl
def test_non_finite_table_entry_is_refused_by_name_on_the_rtl_path(tmp_path):
    """It crashed inside da4ml before ('low nan must be less than high nan')."""
    pytest.importorskip("alkaid")
    from HGQ.rtl import convert_to_rtl

    model = exponential_activation()
    compute_bops(model, np.zeros((8, 3), "float32"), verbose=False)
    with pytest.raises(ValueError, match="HActivation 'exp_act': the function is not finite"):
        convert_to_rtl(model, tmp_path / "rtl")


def test_non_finite_table_entry_is_refused_by_name_on_the_hls4ml_path(tmp_path):
    """It converted silently before, with a table that cannot hold Keras's inf."""
    pytest.importorskip("hls4ml")
    from HGQ.hls4ml_hook import convert_from_hgq_model

    model = exponential_activation()
    compute_bops(model, np.zeros((8, 3), "float32"), verbose=False)
    with pytest.raises(ValueError, match="HActivation 'exp_act': the function is not finite"):
        convert_from_hgq_model(model, str(tmp_path / "prj"))
    assert not (tmp_path / "prj").exists()


class _Reciprocal(keras.layers.Layer):
    """Runs an HSoftmax's inference reciprocal inside a compiled ``predict``."""

    def __init__(self, softmax: HSoftmax):
        super().__init__()
        self.softmax = softmax

    def call(self, s):
        return self.softmax.rounded_reciprocal(s)


@pytest.mark.parametrize("rounding", ["floor", "standard_round"])
@pytest.mark.parametrize(("f_e", "f_r"), [(0, 0), (3, 8), (8, 8), (11, 11)])
def test_inference_reciprocal_is_the_rational_reciprocal_rounded(rounding, f_e, f_r):
    """Every sum ``s`` on the exponential's grid in ``[1, n]``, compiled as ``predict``
    compiles it, against ``1 / s`` rounded in exact rational arithmetic."""
    n = 16
    layer = HSoftmax(inv_quantizer_config={"rnd_strategy": rounding})
    layer.build((None, n))
    layer.exp_quantizer.fractional_bits.assign(np.full((1, n), f_e, "float32"))
    layer.inv_quantizer.fractional_bits.assign(np.full((1, 1), f_r, "float32"))
    sums = np.arange(2**f_e, n * 2**f_e + 1)[:, None] / 2.0**f_e
    model = keras.Sequential([keras.Input((1,)), _Reciprocal(layer)])
    got = model.predict(sums.astype("float32"), verbose=0, batch_size=4096)
    half = Fraction(1, 2) if rounding == "standard_round" else Fraction(0)
    want = [
        math.floor(Fraction(2**f_r) / Fraction(int(s * 2**f_e), 2**f_e) + half) / 2**f_r
        for s in sums[:, 0]
    ]
    assert np.array_equal(got[:, 0], np.array(want, dtype=np.float64))


def test_softmax_fractional_bits_beyond_the_exact_reciprocal_are_refused():
    with pytest.raises(ValueError, match="inv_quantizer_config: bw_clip must end at 11"):
        HSoftmax(inv_quantizer_config={"bw_clip": (0, 12)})
    with pytest.raises(ValueError, match="exp_quantizer_config: bw_clip must end at 11"):
        HSoftmax(exp_quantizer_config={"bw_clip": (0, 16)})


@pytest.mark.rtl
@pytest.mark.parametrize(
    "function",
    [
        "elu",
        *(
            pytest.param(f, marks=pytest.mark.slow)
            for f in ("exponential", "tanh", "sigmoid", "gelu", "silu")
        ),
    ],
)
def test_floored_activation_reads_the_deployed_table(function, tmp_path):
    """Every input of a 12-bit grid through ``HActivation(function)`` with a floor output
    quantizer: Keras's compiled ``predict`` equals the RTL table (alkaid's interpreter)
    on all of them. Inference reads the function from the same standalone values the
    tables hold (``HGQ.tabulated``); on JAX these six also agreed without that, so this
    guards the mechanism rather than reproducing a measured failure."""
    pytest.importorskip("alkaid")
    from HGQ.rtl import convert_to_rtl

    inp = keras.Input((8,))
    x = Signature(keep_negative=1, bits=12, int_bits=2, name="sig")(inp)
    config = {"rnd_strategy": "floor", "init_bw": 14, "bw_clip": (14, 14)}
    model = keras.Model(
        inp, HActivation(function, pre_activation_quantizer_config=config, name="act")(x)
    )
    grid = (np.arange(-(2**11), 2**11) * 2.0**-9).astype("float32").reshape(-1, 8)
    compute_bops(model, grid, verbose=False)
    project = convert_to_rtl(model, tmp_path / "rtl")
    assert _differ(model.predict(grid, verbose=0), project.emulate(grid)) == [0]


@pytest.mark.rtl
def test_too_wide_softmax_table_is_refused_before_any_grid_is_made(tmp_path):
    """A softmax on a 29-bit input: the RTL rule built every element's grid of 2^29
    values before checking the 2^16 limit, and fuzzer seed 3078 was killed by the
    kernel at 20 GB. The sizes are now checked first; the refusal names the layer."""
    pytest.importorskip("alkaid")
    from HGQ.rtl import convert_to_rtl

    inp = keras.Input((6,))
    x = Signature(keep_negative=1, bits=28, int_bits=18, name="sig")(inp)
    model = keras.Model(inp, HSoftmax(name="sm")(x))
    rng = np.random.default_rng(7)
    with pytest.warns(UserWarning, match="exp table would be indexed by"):
        compute_bops(model, rng.normal(scale=1e4, size=(64, 6)).astype("float32"), verbose=False)
    with pytest.raises(ValueError, match="HSoftmax 'sm' \\(exponential\\).*exceed 2\\^16"):
        convert_to_rtl(model, tmp_path / "rtl")
