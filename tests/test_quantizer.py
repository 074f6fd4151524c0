"""The heterogeneous quantizer: rounding modes, gradients, skip_dims, clipping, records."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from HGQ.quantizer import HGQuantizer, calibrating


def make(role="activation", shape=(None, 4), **config):
    q = HGQuantizer(config, role=role)
    q.build(shape)
    return q


def set_f(q, value):
    q.fractional_bits.assign(np.broadcast_to(value, q.fractional_bits.shape).astype("float32"))


def run(q, x, training):
    return ops.convert_to_numpy(q(np.asarray(x, "float32"), training=training))


@pytest.mark.smoke
def test_powers_of_two_are_exact_on_this_backend():
    n = np.arange(-40, 41, dtype="float32")
    got = ops.convert_to_numpy(ops.power(2.0, ops.convert_to_tensor(n)))
    np.testing.assert_array_equal(got, np.ldexp(np.float32(1), n.astype(int)))


@pytest.mark.smoke
def test_standard_round_is_half_up_not_half_even():
    q = make(rnd_strategy="standard_round")
    set_f(q, 0)
    x = [[0.5, 1.5, 2.5, -0.5]]
    # Hand-worked: floor(x + 0.5) -> 1, 2, 3, 0 (keras.ops.round would give 0, 2, 2, -0).
    expected = [[1.0, 2.0, 3.0, 0.0]]
    np.testing.assert_array_equal(run(q, x, training=True), expected)
    np.testing.assert_array_equal(run(q, x, training=False), expected)


def test_round_half_up_just_below_a_tie_stays_down():
    q = make(rnd_strategy="standard_round")
    set_f(q, 0)
    below_half = np.nextafter(np.float32(0.5), np.float32(0))  # 0.49999997
    below_one_and_half = np.nextafter(np.float32(1.5), np.float32(0))
    got = run(q, [[below_half, -below_half, below_one_and_half, 0.25]], training=False)
    np.testing.assert_array_equal(got, [[0.0, 0.0, 1.0, 0.0]])


def test_floor_truncates_towards_minus_infinity_with_fractional_bits():
    q = make(rnd_strategy="floor")
    set_f(q, 2)  # grid of 0.25
    x = [[0.3, -0.3, 0.99, -0.01]]
    expected = [[0.25, -0.5, 0.75, -0.25]]
    np.testing.assert_array_equal(run(q, x, training=True), expected)
    np.testing.assert_array_equal(run(q, x, training=False), expected)


def test_heterogeneous_bits_per_element():
    q = make(rnd_strategy="standard_round")
    set_f(q, np.array([[0, 1, 2, 3]]))
    got = run(q, [[0.7, 0.7, 0.7, 0.7]], training=False)
    # 0.7 rounded on grids 1, 1/2, 1/4, 1/8: 1, 0.5, 0.75, 0.75 (5.6 -> 6 -> 0.75)
    np.testing.assert_array_equal(got, [[1.0, 0.5, 0.75, 0.75]])


def test_stochastic_round_picks_a_neighbour_with_the_right_frequency():
    q = make(rnd_strategy="stochastic_round", shape=(None, 1))
    set_f(q, 0)
    x = np.full((20000, 1), 0.25, "float32")
    got = run(q, x, training=True)
    assert set(np.unique(got)) <= {0.0, 1.0}
    assert abs(got.mean() - 0.25) < 0.02  # P(up) = fractional part
    # Inference rounds to nearest.
    np.testing.assert_array_equal(run(q, x[:3], training=False), np.zeros((3, 1)))


def test_noise_injection_zeroes_small_values_and_stays_within_half_lsb():
    q = make(rnd_strategy="fast_uniform_noise_injection", shape=(None, 1))
    set_f(q, 1)  # LSB 0.5
    small = np.full((1000, 1), 0.2, "float32")  # |0.2 * 2| <= 0.5 -> 0
    np.testing.assert_array_equal(run(q, small, training=True), np.zeros((1000, 1)))
    big = np.full((5000, 1), 1.3, "float32")
    got = run(q, big, training=True)
    assert np.all(np.abs(got - 1.3) <= 0.25 + 1e-6)
    assert got.std() > 0.1  # noise, not rounding
    np.testing.assert_array_equal(run(q, big[:2], training=False), [[1.5], [1.5]])


def test_exact_q_value_rounds_fractional_bits():
    q = make(rnd_strategy="floor", exact_q_value=True)
    set_f(q, 1.6)  # used as 2
    np.testing.assert_array_equal(run(q, [[0.3] * 4], training=True), [[0.25] * 4])
    q2 = make(rnd_strategy="floor", exact_q_value=False)
    set_f(q2, 1.6)  # used as 1.6 while training, 2 at inference
    train = run(q2, [[0.3] * 4], training=True)
    scale = 2.0**1.6
    np.testing.assert_allclose(train, np.floor(0.3 * scale) / scale, rtol=1e-6)
    np.testing.assert_array_equal(run(q2, [[0.3] * 4], training=False), [[0.25] * 4])


@pytest.mark.parametrize(
    "skip_dims, expected",
    [
        ((0,), (1, 3, 4)),
        ("batch", (1, 3, 4)),
        ("all", (1, 1, 1)),
        ("none", (1, 3, 4)),  # the batch axis is always shared for activations
        ("except_last", (1, 1, 4)),
        ("except_1st", (1, 3, 1)),
        ((0, 2), (1, 3, 1)),
        ((-1,), (1, 3, 1)),
    ],
)
def test_skip_dims_shapes_for_activations(skip_dims, expected):
    q = make(shape=(None, 3, 4), skip_dims=skip_dims)
    assert tuple(q.fractional_bits.shape) == expected


@pytest.mark.parametrize(
    "skip_dims, expected",
    [(None, (3, 4)), ("all", (1, 1)), ("except_last", (1, 4)), ("except_1st", (1, 4))],
)
def test_skip_dims_shapes_for_kernels(skip_dims, expected):
    q = make(role="kernel", shape=(3, 4), skip_dims=skip_dims)
    assert tuple(q.fractional_bits.shape) == expected


def _grads_jax(q, x, weights):
    import jax

    f0 = q.fractional_bits.value
    non_trainable = [v.value for v in q.non_trainable_variables]

    def loss(f, x):
        out, _ = q.stateless_call([f], non_trainable, x, training=True)
        return (out * weights).sum()

    return jax.grad(loss, argnums=(0, 1))(f0, x)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="uses jax.grad")
def test_bitwidth_gradient_matches_the_surrogate_formula(rng):
    q = make(shape=(None, 5), rnd_strategy="standard_round", exact_q_value=False)
    f = rng.uniform(0.5, 3.5, size=(1, 5)).astype("float32")
    set_f(q, f)
    x = rng.normal(size=(7, 5)).astype("float32")
    w = rng.normal(size=(7, 5)).astype("float32")
    grad_f, grad_x = _grads_jax(q, x, w)
    scale = 2.0 ** f.astype(np.float64)
    q_val = np.floor(x * scale + 0.5) / scale
    expected = (-math.log(2) * (q_val - x) * w).sum(axis=0, keepdims=True)
    np.testing.assert_allclose(np.asarray(grad_f), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(grad_x), w)  # straight through


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="uses jax.grad")
def test_shared_bitwidth_gradient_sums_over_its_group(rng):
    q = make(shape=(None, 5), skip_dims="all", exact_q_value=False)
    set_f(q, 1.3)
    x = rng.normal(size=(6, 5)).astype("float32")
    w = np.ones((6, 5), "float32")
    grad_f, _ = _grads_jax(q, x, w)
    scale = 2.0**1.3
    q_val = np.floor(x * scale + 0.5) / scale
    np.testing.assert_allclose(
        np.asarray(grad_f), [[(-math.log(2) * (q_val - x)).sum()]], rtol=1e-4
    )


def test_bw_clip_is_enforced_after_optimizer_updates():
    inp = keras.Input((4,))
    layer = HGQuantizer({"bw_clip": (1, 3), "init_bw": 2.9}, role="activation")
    model = keras.Model(inp, layer(inp))
    # A huge learning rate and a loss that pushes f upwards.
    model.compile(keras.optimizers.SGD(100.0), loss=lambda y, p: -ops.sum(layer.fractional_bits))
    model.fit(np.ones((8, 4), "float32"), np.ones((8, 4), "float32"), epochs=1, verbose=0)
    f = ops.convert_to_numpy(layer.fractional_bits)
    assert f.max() <= 3.0 and f.min() >= 1.0


@pytest.mark.smoke
def test_minmax_record_while_training_and_calibrating_only():
    q = make(shape=(None, 3))
    set_f(q, 4)
    run(q, [[1.0, -2.0, 0.5], [3.0, 0.0, 0.25]], training=True)
    np.testing.assert_array_equal(ops.convert_to_numpy(q.vmin), [[1.0, -2.0, 0.25]])
    np.testing.assert_array_equal(ops.convert_to_numpy(q.vmax), [[3.0, 0.0, 0.5]])
    run(q, [[100.0, 100.0, 100.0]], training=False)  # plain inference: no record
    np.testing.assert_array_equal(ops.convert_to_numpy(q.vmax), [[3.0, 0.0, 0.5]])
    with calibrating():
        run(q, [[5.0, -3.0, 0.0]], training=False)
    np.testing.assert_array_equal(ops.convert_to_numpy(q.vmax), [[5.0, 0.0, 0.5]])
    np.testing.assert_array_equal(ops.convert_to_numpy(q.vmin), [[1.0, -3.0, 0.0]])
    q.reset_minmax()
    assert np.all(np.isinf(ops.convert_to_numpy(q.vmax)))


def test_non_negative_record_keeps_zero_as_minimum_and_same_format():
    """A quantizer behind a ReLU skips the min reduction; its (k, i, f) must not change."""
    data = [[0.0, 3.0, 0.25], [1.5, 0.5, 0.75]]
    formats = []
    for non_negative in (False, True):
        q = HGQuantizer({}, role="activation", non_negative=non_negative)
        q.build((None, 3))
        set_f(q, 2)
        run(q, data, training=True)
        expected_min = [[0.0, 0.0, 0.0]] if non_negative else [[0.0, 0.5, 0.25]]
        np.testing.assert_array_equal(ops.convert_to_numpy(q.vmin), expected_min)
        np.testing.assert_array_equal(ops.convert_to_numpy(q.vmax), [[1.5, 3.0, 0.75]])
        q.freeze_int_bits()
        formats.append(q.exact_format())
    for plain, skipped in zip(*formats, strict=True):
        np.testing.assert_array_equal(plain, skipped)
    np.testing.assert_array_equal(formats[1][0], [0, 0, 0])  # no sign bit


def test_non_negative_record_still_knows_when_it_is_empty():
    """Its minimum is 0 from the start, so emptiness must be read from the maximum."""
    q = HGQuantizer({}, role="activation", non_negative=True)
    q.build((None, 2))
    with pytest.raises(RuntimeError, match="no values were recorded"):
        q.freeze_int_bits()
    run(q, [[1.0, 2.0]], training=True)
    q.reset_minmax()
    np.testing.assert_array_equal(ops.convert_to_numpy(q.vmin), [[0.0, 0.0]])
    with pytest.raises(RuntimeError, match="no values were recorded"):
        q.freeze_int_bits()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_record_is_not_mistaken_for_an_empty_one(bad):
    q = HGQuantizer({}, role="activation")
    q.build((None, 2))
    run(q, [[1.0, -2.0]], training=True)
    q.vmax.assign(np.array([[1.0, bad]], "float32"))
    with pytest.raises(RuntimeError, match="holds NaN or inf"):
        q.freeze_int_bits()


def test_layers_declare_non_negative_outputs():
    from HGQ import HActivation, HDense, HQuantize

    inputs = keras.Input((4,))
    x = HQuantize(name="inp_q")(inputs)
    relu = HDense(3, activation="relu")
    linear = HDense(3)
    sigmoid = HActivation("sigmoid")
    tanh = HActivation("tanh")
    tanh(sigmoid(linear(relu(x))))
    assert relu.pre_activation_quantizer.non_negative
    assert sigmoid.pre_activation_quantizer.non_negative
    assert not linear.pre_activation_quantizer.non_negative
    assert not tanh.pre_activation_quantizer.non_negative


def test_freeze_then_wrap_like_ap_fixed():
    q = make(shape=(None, 2))
    set_f(q, 1)
    with calibrating():
        run(q, [[1.5, -1.0], [0.0, 0.5]], training=False)
    q.freeze_int_bits()
    k, i, f = q.exact_format()
    # element 0: [0, 1.5] -> unsigned, 1 integer bit (ufixed<2,1>: 0..1.5)
    # element 1: [-1, 0.5] -> signed, 0 integer bits (fixed<2,1>: -1..0.5)
    np.testing.assert_array_equal(k, [0, 1])
    np.testing.assert_array_equal(i, [1, 0])
    np.testing.assert_array_equal(q.exact_bitwidth(), [2, 2])
    got = run(q, [[2.0, 1.0], [2.5, -1.5], [1.5, 0.5]], training=False)
    # 2.0 mod 2 = 0; 2.5 -> 0.5; signed 1.0 -> -1.0; -1.5 -> 0.5
    np.testing.assert_array_equal(got, [[0.0, -1.0], [0.5, 0.5], [1.5, 0.5]])


@pytest.mark.parametrize(
    ("shape", "axes"),
    [
        ((6, 4), (0,)),
        ((5, 3, 2, 4), (0, 1, 2)),
        ((5, 1, 3), (0,)),
        ((5, 3, 4), (0, 2)),
        ((8192, 3), (0,)),  # long enough for the product with ones
        ((2048, 5, 2), (0, 1)),
    ],
)
def test_sum_over_shared_axes_equals_plain_sum(shape, axes):
    """The bitwidth gradient's batch sum (a product with ones for long sums) is a sum."""
    from HGQ.quantizer import _sum_to_shape

    values = np.random.default_rng(1).integers(-8, 8, size=shape).astype("float32")
    expected = values.sum(axis=axes, keepdims=True)
    got = ops.convert_to_numpy(_sum_to_shape(ops.convert_to_tensor(values), axes, expected.shape))
    np.testing.assert_array_equal(got, expected)


def test_magnitude_init_gives_each_weight_init_bw_significant_bits():
    from HGQ import HDense

    kernel = np.array([[1.5], [0.375], [0.0], [-0.01]], "float32")
    layer = HDense(
        1,
        use_bias=False,
        kernel_initializer=keras.initializers.Constant(kernel),
        kernel_quantizer_config={"init_mode": "magnitude", "init_bw": 2},
    )
    layer.build((None, 4))
    # Hand-worked f = init_bw - floor(log2|w|) - 1: 1.5 -> 1, 0.375 -> 3, 0 keeps
    # init_bw, 0.01 (2^-7 <= 0.01 < 2^-6) -> 8.
    np.testing.assert_array_equal(
        layer.kernel_quantizer.fractional_bits.numpy(), [[1], [3], [2], [8]]
    )
    # Deployed: 1.5 (0b11), 0.375 (0b11 * 2^-3), 0, -0.01 -> -3 * 2^-8: two bits each.
    np.testing.assert_array_equal(layer.deployed_kernel(), [[1.5], [0.375], [0.0], [-3 / 256]])
    fixed = HDense(1, kernel_initializer=keras.initializers.Constant(kernel))
    fixed.build((None, 4))
    np.testing.assert_array_equal(fixed.kernel_quantizer.fractional_bits.numpy(), [[2]] * 4)


def test_init_mode_is_refused_for_activations_and_unknown_values():
    from HGQ import HDense

    with pytest.raises(ValueError, match="kernel_quantizer_config"):
        HDense(1, pre_activation_quantizer_config={"init_mode": "magnitude"})
    with pytest.raises(ValueError, match="init_mode"):
        HDense(1, kernel_quantizer_config={"init_mode": "largest"})
