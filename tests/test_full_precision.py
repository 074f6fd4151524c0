"""HGQ layers ask for full float32 precision in their own products (no TF32 on GPUs).

On a CPU the products are exact either way, so these tests look at what the layers
request: the precision recorded in JAX's traced step, and PyTorch's switches while
the context is open. The exactness tests with wide operands (``widths='wide'`` in
test_exactness.py and test_conv.py) check the outcome on whatever device runs them.
"""

import keras
import numpy as np
import pytest

from HGQ import HConv1D, HConv2D, HDense, HDenseBatchNorm, HQuantize
from HGQ import full_precision as full_precision_module
from HGQ.full_precision import full_precision

LAYERS = [
    (lambda: HDense(3), (4,)),
    (lambda: HDenseBatchNorm(3), (4,)),
    (lambda: HConv1D(2, 3), (6, 2)),
    (lambda: HConv2D(2, 2), (4, 4, 2)),
]


def _precisions_in_step(layer_factory, in_shape, training):
    """The precision of every dot_general/conv in the traced model call."""
    import jax
    from jax.extend.core import jaxprs_in_params

    model = keras.Sequential([keras.Input(in_shape), HQuantize(name="inp_q"), layer_factory()])
    x = np.ones((2, *in_shape), "float32")
    values = [v.value for v in model.trainable_variables]
    others = [v.value for v in model.non_trainable_variables]

    def call(trainable, non_trainable, x):
        out, _ = model.stateless_call(trainable, non_trainable, x, training=training)
        return out

    jaxpr = jax.make_jaxpr(call)(values, others, x)
    found = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
                found.append(eqn.params["precision"])
            for sub in jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jaxpr.jaxpr)
    return found


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="inspects a JAX trace")
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("factory, in_shape", LAYERS)
def test_jax_products_of_hgq_layers_are_traced_at_highest_precision(factory, in_shape, training):
    from jax import lax

    precisions = _precisions_in_step(factory, in_shape, training)
    assert precisions, "no product found in the trace"
    highest = (lax.Precision.HIGHEST, lax.Precision.HIGHEST)
    assert all(p == highest for p in precisions), precisions


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX configuration")
def test_jax_setting_is_scoped_to_the_context():
    import jax

    before = jax.config.jax_default_matmul_precision
    with full_precision():
        assert jax.config.jax_default_matmul_precision == "highest"
    assert jax.config.jax_default_matmul_precision == before


@pytest.mark.smoke
@pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch switches")
def test_torch_switches_are_set_inside_and_restored_after():
    import torch

    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    try:
        with full_precision():
            assert torch.get_float32_matmul_precision() == "highest"
            assert torch.backends.cudnn.allow_tf32 is False
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.set_float32_matmul_precision("highest")


@pytest.mark.smoke
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's TF32 switch")
@pytest.mark.parametrize(
    "gpu, tf32, warns", [(True, True, True), (True, False, False), (False, True, False)]
)
def test_tensorflow_calibration_on_a_tf32_gpu_warns_with_the_fix(monkeypatch, gpu, tf32, warns):
    import warnings

    import tensorflow as tf

    from HGQ.bops import compute_bops

    # This machine has no GPU: pretend TensorFlow sees one; the TF32 switch is real.
    monkeypatch.setattr(full_precision_module, "_tensorflow_gpus", lambda: ["GPU:0"] * gpu)
    model = keras.Sequential([keras.Input((3,)), HQuantize(name="inp_q"), HDense(2)])
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    enabled = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(tf32)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compute_bops(model, x, verbose=False)
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(enabled)
    messages = [str(w.message) for w in caught if "TF32" in str(w.message)]
    if warns:
        assert messages and "enable_tensor_float_32_execution(False)" in messages[0]
    else:
        assert not messages
