#!/usr/bin/env bash
# Main job: train an HGQ MLP on scikit-learn's bundled digits, calibrate it, and
# compare accuracy and EBOPs with a float model of the same shape.
source "$(dirname "$0")/_venv.sh"
ensure_installed main -e ".[examples,rtl]"
# JAX, the default backend, even where ./scripts/test.sh has put TensorFlow in the same
# .venv (Keras itself would then pick TensorFlow); KERAS_BACKEND=... chooses another.
export KERAS_BACKEND="${KERAS_BACKEND:-jax}"
exec "$VENV_PY" examples/digits_mlp.py "$@"
