"""Full float32 precision for the products HGQ layers compute.

On NVIDIA GPUs the frameworks run float32 matrix products and convolutions on tensor
cores in TF32 unless told otherwise (JAX for its matrix products and convolutions,
PyTorch's cuDNN for convolutions, and PyTorch's matrix products after
``torch.set_float32_matmul_precision('high')``). TF32 keeps 11 significant bits of
each operand; a quantized activation or weight may have more, and the firmware
multiplies exactly, so a reduced-precision product would break bit-exactness with
hls4ml. The HGQ layers therefore compute their own products inside
``full_precision()``. The setting is scoped to those products: everything else in the
user's program keeps the framework's defaults. On CPUs it changes nothing.

TensorFlow has only a process-wide switch, read when its kernels run, so no scope can
be set here: on a GPU, ``compute_bops`` warns (``tensorflow_tf32_warning``) until the
user calls ``tf.config.experimental.enable_tensor_float_32_execution(False)``.

For the same reason HGQ layers compute in float32 whatever Keras's dtype policy
(``float32_dtype_policy``): mixed precision would round their values to float16's 11
or bfloat16's 8 significant bits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras


@contextlib.contextmanager
def _torch_full_precision() -> Iterator[None]:
    import torch

    cudnn = torch.backends.cudnn
    saved = (torch.get_float32_matmul_precision(), cudnn.allow_tf32)
    torch.set_float32_matmul_precision("highest")
    cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        cudnn.allow_tf32 = saved[1]


def full_precision() -> contextlib.AbstractContextManager:
    """A context in which float32 products and convolutions use every operand bit.

    JAX reads it when an operation is traced (the precision is recorded in the
    compiled step); PyTorch when the operation runs, which for Keras's eager torch
    layers is inside the context too.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_matmul_precision("highest")
    if backend == "torch":
        return _torch_full_precision()
    return contextlib.nullcontext()


def _tensorflow_gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def tensorflow_tf32_warning() -> str | None:
    """Why TensorFlow inference would not be bit-exact here (TF32 on a GPU), or None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if not _tensorflow_gpus():
        return None
    if not tf.config.experimental.tensor_float_32_execution_enabled():
        return None
    return (
        "TensorFlow runs float32 matrix products and convolutions in TF32 on this GPU, "
        "which rounds operands to 11 significant bits: the model's inference can then "
        "differ from the deployed firmware. Call "
        "tf.config.experimental.enable_tensor_float_32_execution(False) before "
        "compute_bops (it is process-wide, so HGQ does not change it for you)."
    )


def float32_dtype_policy(owner: str, dtype: Any = None) -> keras.DTypePolicy:
    """The float32 policy an HGQ layer computes in, whatever the global policy says.

    Quantized values need up to 24 significant bits (float32's significand) to match
    the firmware, which computes exactly. Under a mixed or half-precision global
    policy (``mixed_float16``, ``mixed_bfloat16``, ``bfloat16``) a layer that followed
    it would round them, so HGQ layers take float32 instead: Keras then casts their
    inputs to float32, and their variables are float32. ``dtype`` is what the user
    asked for: None or a float32 policy; anything else is refused with ``owner`` named,
    rather than silently replaced.
    """
    policy = keras.dtype_policies.get("float32" if dtype is None else dtype)
    if (
        policy.compute_dtype == "float32"
        and policy.variable_dtype == "float32"
        and policy.quantization_mode is None
    ):
        return policy
    raise ValueError(
        f"{owner}: dtype={getattr(policy, 'name', dtype)!r} is not supported. HGQ layers "
        "compute in float32, because fixed-point values need float32's 24 significant "
        "bits to match the firmware bit for bit; they do so under any global dtype policy "
        "(mixed precision included), casting their inputs. Omit dtype (or pass 'float32')."
    )
