"""HDense on inputs of rank > 2: one kernel for every position (particle), as in Deep Sets.

The reference is exact rational arithmetic (tests/reference.py through the MLP
reference of test_exactness), the EBOPs are worked out by hand, and the conversion is
checked against hls4ml's C simulation on every output, inside and far outside the
calibrated range.
"""

import hls_support as hs
import keras
import numpy as np
import pytest
import reference as ref
from randomise import randomise_bits
from test_exactness import numpy_params

from HGQ import HDense, HDenseBatchNorm, HQuantize, Signature, compute_bops


def particle_model(rng, n_particles=4, n_features=3, units=(5, 2), parallel_factor=1):
    model = keras.Sequential(
        [
            keras.Input((n_particles, n_features)),
            HQuantize(name="inp_q"),
            HDense(units[0], activation="relu", name="d1", parallel_factor=parallel_factor),
            HDense(units[1], name="d2"),
        ]
    )
    for layer in model.layers:
        randomise_bits(layer.pre_activation_quantizer, rng, 0, 4)
        if isinstance(layer, HDense):
            randomise_bits(layer.kernel_quantizer, rng, 0, 4)
            layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    return model


def reference_forward(params, x, formats=None):
    """Exact forward pass over particles; with ``formats`` wrap, else record ranges.

    The bias is one vector for every particle, so it sits on the finest output grid of
    its unit over the particles (what HGQ deploys).
    """
    values = ref.to_fractions(x)
    seen = {}
    for name, p in params.items():
        if "kernel" in p:
            kernel = ref.quantize_array(p["kernel"], p["f_kernel"])
            f_bias = p["f_out"].reshape(-1, p["f_out"].shape[-1]).max(axis=0)
            values = values.dot(kernel) + ref.quantize_array(p["bias"], f_bias)
            if p["relu"]:
                values = np.vectorize(lambda v: max(v, 0), otypes=[object])(values)
        values = ref.quantize_array(values, p["f_out"][None])
        if formats is None:
            seen[name] = ref.calibrate(values, p["f_out"])
        else:
            values = ref.wrap_array(values, *formats[name], p["f_out"])
    return values, seen


def test_ebops_by_hand_with_parallel_factor():
    # Two particles, two unsigned 3-bit features each (k=0, i=1, f=2): every input is 3 bits.
    # Kernel [[0.75, 0], [0.5, 1.25]] on a 1/4 grid: bit spans 2, 0, 1, 3.
    # One particle: 3*(2+0) + 3*(1+3) = 18; both particles: 36.
    # parallel_factor 1 prices one kernel instance reused: 36 * 1/2 = 18; 2 prices two: 36,
    # as does the default (None: one instance per particle).
    for parallel_factor, expected in ((1, 18.0), (2, 36.0), (None, 36.0)):
        inp = keras.Input((2, 2))
        dense = HDense(2, use_bias=False, parallel_factor=parallel_factor)
        model = keras.Model(inp, dense(Signature(keep_negative=0, bits=3, int_bits=1)(inp)))
        dense.kernel.assign(np.array([[0.75, 0.0], [0.5, 1.25]], "float32"))
        fb = dense.kernel_quantizer.fractional_bits
        fb.assign(np.full(fb.shape, 2.0, "float32"))
        x = np.array([[[0.25, 1.75], [1.0, 0.0]]], "float32")
        assert compute_bops(model, x, verbose=False) == expected


@pytest.mark.smoke
def test_inference_equals_the_rational_reference_in_and_out_of_range(rng):
    model = particle_model(rng)
    params = numpy_params(model)
    x_cal = rng.normal(size=(100, 4, 3)).astype("float32")
    compute_bops(model, x_cal, verbose=False)
    _, formats = reference_forward(params, x_cal)
    for layer in model.layers:
        k, i, _ = layer.pre_activation_quantizer.exact_format()
        np.testing.assert_array_equal(k, formats[layer.name][0], err_msg=layer.name)
        np.testing.assert_array_equal(i, formats[layer.name][1], err_msg=layer.name)
    x_test = np.concatenate([x_cal[:20], 30 * rng.normal(size=(20, 4, 3))]).astype("float32")
    expected, _ = reference_forward(params, x_test, formats)
    got = model.predict(x_test, verbose=0)
    assert np.array_equal(got, expected.astype(np.float64))
    unwrapped, _ = reference_forward(params, x_test[20:])
    assert not np.array_equal(unwrapped.astype(np.float64), expected[20:])  # it overflowed


def test_parallel_factor_round_trips_and_is_checked(tmp_path, rng):
    model = particle_model(rng, parallel_factor=4)
    compute_bops(model, rng.normal(size=(32, 4, 3)), verbose=False)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.get_layer("d1").parallel_factor == 4
    assert compute_bops(loaded, rng.normal(size=(32, 4, 3)), verbose=False) > 0
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ValueError, match="parallel_factor must be None .* or an int >= 1"):
            HDense(2, parallel_factor=bad)
    with pytest.raises(ValueError, match="parallel_factor=5 exceeds the 4 position"):
        keras.Sequential([keras.Input((4, 3)), HQuantize(), HDense(2, parallel_factor=5)])
    with pytest.raises(ValueError, match="parallel_factor=2 exceeds the 1 position"):
        keras.Sequential([keras.Input((3,)), HQuantize(), HDense(2, parallel_factor=2)])


@pytest.mark.slow
@pytest.mark.parametrize(
    "shape, parallel_factor, batchnorm",
    [((6, 4), 1, False), ((6, 4), 6, False), ((3, 2, 4), 1, False), ((5, 4), 1, True)],
)
def test_conversion_is_bit_exact(shape, parallel_factor, batchnorm, tmp_path, rng):
    first = HDenseBatchNorm if batchnorm else HDense
    model = keras.Sequential(
        [
            keras.Input(shape),
            HQuantize(name="inp_q"),
            first(8, activation="relu", name="d1", parallel_factor=parallel_factor),
            HDense(3, name="d2"),
        ]
    )
    x = rng.normal(scale=2, size=(256, *shape)).astype("float32")
    hs.train_briefly(model, x, rng.normal(size=(256, *shape[:-1], 3)).astype("float32"))
    hs.scramble_bitwidths(model, rng)
    model_hls = hs.convert_compiled(model, x, tmp_path)
    n_out = 256 * int(np.prod(shape[:-1])) * 3
    assert hs.mismatches(model, model_hls, x) == (0, n_out)
    assert hs.mismatches(model, model_hls, hs.out_of_range(x, rng)) == (0, n_out)


def test_rank_five_is_refused_at_conversion_naming_the_fix(tmp_path, rng):
    from HGQ.hls4ml_hook import convert_from_hgq_model

    model = keras.Sequential([keras.Input((2, 2, 2, 3)), HQuantize(), HDense(2, name="deep")])
    compute_bops(model, rng.normal(size=(16, 2, 2, 2, 3)), verbose=False)
    with pytest.raises(ValueError, match="'deep'.*rank 2 to 4.*PReshape"):
        convert_from_hgq_model(model, str(tmp_path / "prj"))
