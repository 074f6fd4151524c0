"""compute_bops takes what model.predict takes, streams it, and accumulates on request.

The reference for every form of data is the same values as one float32 numpy array in
one batch: the records are a min and a max, so any batching of the same samples must
give the same ranges, formats and EBOPs, bit for bit.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import HGQ
from HGQ import HDense, HQuantize, PConcatenate, compute_bops
from HGQ.calibration import _activation_quantizers

N = 300


def two_input_model() -> keras.Model:
    """Inputs named so that their order is not alphabetical: 'zeta' first, then 'alpha'."""
    keras.utils.set_random_seed(7)
    zeta, alpha = keras.Input((3,), name="zeta"), keras.Input((2,), name="alpha")
    joined = PConcatenate(name="join")([HQuantize(name="qz")(zeta), HQuantize(name="qa")(alpha)])
    hidden = HDense(5, activation="relu", name="hidden")(joined)
    return keras.Model([zeta, alpha], HDense(2, name="out")(hidden))


def one_input_model() -> keras.Model:
    keras.utils.set_random_seed(8)
    return keras.Sequential(
        [keras.Input((4,)), HQuantize(name="q"), HDense(3, activation="relu"), HDense(2)]
    )


def two_input_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Different scales per input, so that swapping the inputs changes every record.
    return (
        (rng.normal(size=(N, 3)) * 6).astype("float32"),
        (rng.normal(size=(N, 2)) * 0.3).astype("float32"),
    )


def calibration_state(model: keras.Model, data, **kwargs):
    """EBOPs and every activation quantizer's records and formats after compute_bops."""
    ebops = compute_bops(model, data, verbose=False, **kwargs)
    state = []
    for q in _activation_quantizers(model):
        state += [q.vmin.numpy(), q.vmax.numpy(), *q.exact_format()]
    return float(ebops), state


def assert_same(got, want):
    assert got[0] == want[0]
    assert len(got[1]) == len(want[1])
    for a, b in zip(got[1], want[1], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def two_input_reference():
    zeta, alpha = two_input_data()
    return calibration_state(two_input_model(), [zeta, alpha], bsz=N)


def batched(arrays, size):
    for start in range(0, N, size):
        yield [a[start : start + size] for a in arrays]


class Batches(keras.utils.PyDataset):
    def __init__(self, arrays, size):
        super().__init__()
        self.arrays, self.size = arrays, size

    def __len__(self):
        return -(-N // self.size)

    def __getitem__(self, index):
        part = [a[index * self.size : (index + 1) * self.size] for a in self.arrays]
        return {"alpha": part[1], "zeta": part[0]}, np.zeros(len(part[0]))


def two_input_forms():
    zeta, alpha = two_input_data()
    y = np.zeros((N, 2), "float32")
    return {
        "dict, keys not in input order": lambda: {"alpha": alpha, "zeta": zeta},
        "list, small batches": lambda: [zeta, alpha],
        "float64 and a tuple": lambda: (zeta.astype("float64"), alpha.astype("float64")),
        "tf.data of (x, y)": lambda: tf.data.Dataset.from_tensor_slices(((zeta, alpha), y)).batch(
            64
        ),
        "tf.data of dicts": lambda: tf.data.Dataset.from_tensor_slices(
            {"alpha": alpha, "zeta": zeta}
        ).batch(50),
        "PyDataset": lambda: Batches([zeta, alpha], 40),
        "generator of (x, y)": lambda: ((b, None) for b in batched([zeta, alpha], 70)),
        "generator of x": lambda: ((b,) for b in batched([zeta, alpha], 70)),
    }


@pytest.mark.smoke
@pytest.mark.parametrize("form", list(two_input_forms()))
def test_every_form_of_data_calibrates_like_one_array(form, two_input_reference):
    data = two_input_forms()[form]()
    bsz = 32 if form == "list, small batches" else None
    assert_same(calibration_state(two_input_model(), data, bsz=bsz), two_input_reference)


def torch_loader(x: np.ndarray, size: int):
    torch = pytest.importorskip("torch")
    return torch.utils.data.DataLoader(torch.tensor(x.astype("float32")), batch_size=size)


@pytest.mark.smoke
@pytest.mark.parametrize(
    "form",
    [
        "int8",
        "float64",
        "list of lists",
        "[x]",
        "tensor",
        "generator of bare arrays",
        "torch DataLoader",
    ],
)
def test_one_input_forms(form):
    rng = np.random.default_rng(2)
    x = rng.integers(-100, 100, size=(N, 4)).astype("int8")
    reference = calibration_state(one_input_model(), x.astype("float32"), bsz=N)
    data = {
        "int8": x,
        "float64": x.astype("float64"),
        "list of lists": x.tolist(),
        "[x]": [x.astype("float32")],
        "tensor": keras.ops.convert_to_tensor(x.astype("float32")),
        "generator of bare arrays": (x[s : s + 64] for s in range(0, N, 64)),
        "torch DataLoader": torch_loader(x, 64) if form == "torch DataLoader" else None,
    }[form]
    assert_same(calibration_state(one_input_model(), data), reference)


def test_calibration_streams_batch_by_batch():
    """Each batch is recorded before the next is read: memory is bounded by a batch."""
    model = one_input_model()
    compute_bops(model, np.ones((8, 4), "float32"), verbose=False)
    record = model.layers[0].pre_activation_quantizer.vmax
    seen = []

    def batches():
        for k in range(1, 6):
            if k > 1:
                seen.append(float(record.numpy().max()))
            x = np.zeros((16, 4), "float32")
            x[0, 0] = k  # batch k raises the input's maximum to k
            yield x

    compute_bops(model, batches(), verbose=False)
    assert seen == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.smoke
def test_chunked_calibration_with_reset_false_equals_one_call(two_input_reference):
    zeta, alpha = two_input_data()
    model = two_input_model()
    for start in range(0, N, 75):
        part = [zeta[start : start + 75], alpha[start : start + 75]]
        got = calibration_state(model, part, reset=start == 0)
    assert_same(got, two_input_reference)
    # Without reset=False, only the last chunk counts.
    last = calibration_state(model, [zeta[-75:], alpha[-75:]])
    assert last[1][1].max() < got[1][1].max() or last[0] != got[0]


def test_chunked_calibration_keeps_cover_factor():
    zeta, alpha = two_input_data()
    whole = calibration_state(two_input_model(), [zeta, alpha], cover_factor=1.5)
    model = two_input_model()
    calibration_state(model, [zeta[:150], alpha[:150]], cover_factor=1.5)
    assert_same(
        calibration_state(model, [zeta[150:], alpha[150:]], cover_factor=1.5, reset=False),
        whole,
    )


def _weights(model):
    return [v.numpy().copy() for v in model.variables]


def _unchanged(model, before):
    for a, b in zip(before, _weights(model), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def calibrated_model():
    model = one_input_model()
    compute_bops(model, np.random.default_rng(0).normal(size=(64, 4)), verbose=False)
    return model


@pytest.mark.smoke
@pytest.mark.parametrize("bsz", [-1, 0, 256.0, "32", True])
def test_bad_batch_size_is_named_and_model_unchanged(bsz, calibrated_model):
    before = _weights(calibrated_model)
    with pytest.raises(ValueError, match=r"bsz must be None or a whole number.*got"):
        compute_bops(calibrated_model, np.ones((10, 4)), bsz=bsz, verbose=False)
    _unchanged(calibrated_model, before)


@pytest.mark.parametrize(
    "data, match",
    [
        ("samples.npy", "cannot read calibration data of type str"),
        (5, "cannot read calibration data of type int"),
        ([[1.0, 2.0], [3.0]], "does not form one array"),
        (iter([]), "empty calibration set"),
        (np.ones((0, 4)), "empty calibration set"),
    ],
)
def test_unreadable_or_empty_data(data, match, calibrated_model):
    before = _weights(calibrated_model)
    with pytest.raises(ValueError, match=match):
        compute_bops(calibrated_model, data, verbose=False)
    _unchanged(calibrated_model, before)


def test_nan_in_a_later_batch_restores_the_model(calibrated_model):
    before = _weights(calibrated_model)

    def batches():
        yield np.full((8, 4), 50.0, "float32")  # would widen every record
        yield np.array([[np.nan, 0, 0, 0]] * 8, "float32")

    with pytest.raises(ValueError, match="NaN/inf"):
        compute_bops(calibrated_model, batches(), verbose=False)
    _unchanged(calibrated_model, before)


def test_wrong_input_count_and_shape_name_the_input():
    zeta, alpha = two_input_data()
    with pytest.raises(ValueError, match="has 2 inputs.*list of 3 items"):
        compute_bops(two_input_model(), [zeta, alpha, alpha], verbose=False)
    with pytest.raises(ValueError, match=r"input 'alpha' has sample shape \(3,\)"):
        compute_bops(two_input_model(), {"zeta": zeta, "alpha": zeta}, verbose=False)


def test_bad_reset_is_named():
    with pytest.raises(ValueError, match="reset must be True or False"):
        compute_bops(one_input_model(), np.ones((4, 4)), reset="no", verbose=False)


@pytest.mark.smoke
@pytest.mark.parametrize("config", [[("bw_clip", (0, 8))], "kernel", 3])
def test_config_that_is_not_a_dict_is_named(config):
    with pytest.raises(ValueError, match="kernel_quantizer_config must be a dict"):
        HDense(2, kernel_quantizer_config=config)
    with pytest.raises(ValueError, match="pre_activation_quantizer_config must be a dict"):
        HQuantize(pre_activation_quantizer_config=config)
    with pytest.raises(ValueError, match="set_default_kernel_quantizer_config.*must be a dict"):
        HGQ.set_default_kernel_quantizer_config(config)


@pytest.mark.smoke
@pytest.mark.parametrize("beta", [-1e-5, "1e-5", float("nan"), None])
def test_bad_bops_reg_factor_is_named(beta):
    with pytest.raises(ValueError, match=r"bops_reg_factor \(β\) must be a finite number >= 0"):
        HDense(2, bops_reg_factor=beta)


@pytest.mark.slow
def test_calibrated_bops_reads_a_dataset_every_epoch():
    zeta, alpha = two_input_data()
    dataset = tf.data.Dataset.from_tensor_slices({"alpha": alpha, "zeta": zeta}).batch(64)
    model = two_input_model()
    model.compile("adam", "mse")
    callback = HGQ.CalibratedBOPs(dataset)
    y = np.zeros((N, 2), "float32")
    history = model.fit([zeta, alpha], y, epochs=2, verbose=0, callbacks=[callback])
    assert history.history["ebops"][-1] == compute_bops(model, [zeta, alpha], verbose=False)


def test_calibrated_bops_refuses_a_one_shot_generator():
    with pytest.raises(ValueError, match="generator or iterator can be read only once"):
        HGQ.CalibratedBOPs(x for x in [np.ones((4, 4))])
    with pytest.raises(ValueError, match="CalibratedBOPs: bsz must be"):
        HGQ.CalibratedBOPs(np.ones((4, 4)), bsz=-3)
