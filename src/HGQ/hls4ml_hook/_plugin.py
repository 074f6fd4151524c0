"""Entry point hls4ml calls while it is imported (group ``hls4ml.backends``).

It adds no backend: it registers HGQ's layer handlers in hls4ml's Keras 3
converter in any import order, so a plain ``hls4ml.converters.convert_from_keras_model``
call on an HGQ model is told to use ``convert_from_hgq_model`` instead of failing on
an unknown layer.
"""

from __future__ import annotations

from typing import Any


def register(*_args: Any, **_kwargs: Any) -> None:
    import HGQ.hls4ml_hook.handlers  # noqa: F401  (registration happens on import)
