"""Sliding-window geometry as Keras computes it, for convolutions and pools."""

from __future__ import annotations


def conv_output_length(size: int | None, kernel: int, stride: int, padding: str):
    """Output length of one spatial axis (None if the input length is unknown)."""
    if size is None:
        return None
    if padding == "same":
        return -(-size // stride)
    return (size - kernel) // stride + 1


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Zeros before and after one axis for ``padding='same'``.

    Keras (on every backend) pads like TensorFlow: the total is what the last window
    needs, and the odd one out goes at the end.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2
