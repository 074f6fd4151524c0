"""Pick a Keras backend before Keras is imported.

Keras defaults to TensorFlow; a user who installed only the JAX flavour of this
package would otherwise get an ImportError on `import HGQ`. The rule: an explicit
choice (``KERAS_BACKEND`` or a ``backend`` entry in keras.json) always wins; with
no choice and no TensorFlow installed, use JAX.

Keras writes ``~/.keras/keras.json`` with ``"backend": "tensorflow"`` the first time
it is imported, whatever backend it then runs, so a keras.json that names a backend
which is not installed is not taken as a choice: it would only make Keras fail.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path


def _keras_config_backend() -> str | None:
    """The backend named in keras.json, looked up where Keras looks for it."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    candidates = [Path(base) / "keras.json", Path("/tmp/.keras/keras.json")]
    for path in candidates:
        try:
            backend = json.loads(path.read_text()).get("backend")
        except (OSError, ValueError, AttributeError):
            continue
        if backend:
            return str(backend)
    return None


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def choose_backend(
    env_backend: str | None,
    config_backend: str | None,
    tensorflow_available: bool,
    config_backend_available: bool = True,
) -> str | None:
    """The backend to force, or None to leave Keras's own choice alone."""
    if env_backend or (config_backend and config_backend_available):
        return None
    if tensorflow_available:
        return None
    return "jax"


def select_backend() -> None:
    """Set ``KERAS_BACKEND`` when the fallback rule applies (before importing Keras)."""
    config_backend = _keras_config_backend()
    forced = choose_backend(
        os.environ.get("KERAS_BACKEND"),
        config_backend,
        _module_available("tensorflow"),
        config_backend is None or _module_available(config_backend),
    )
    if forced is not None:
        os.environ["KERAS_BACKEND"] = forced
