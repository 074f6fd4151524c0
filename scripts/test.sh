#!/usr/bin/env bash
# Test suite: everything on JAX (the default backend), then the smoke subset on
# TensorFlow and PyTorch. Pass pytest arguments to narrow the JAX run.
source "$(dirname "$0")/_venv.sh"
# torch first and pinned: this version has a CPU wheel here; an unpinned install
# would pull several GB of CUDA packages.
ensure_installed test torch==2.13.0 -e ".[test,tensorflow,rtl]"
export PYTHONUNBUFFERED=1
echo "== ruff"
"$VENV_PY" -m ruff check src tests bench examples
"$VENV_PY" -m ruff format --check src tests bench examples
echo "== import layering (contracts in pyproject.toml)"
"$ROOT/.venv/bin/lint-imports" --no-cache
echo "== pytest, JAX backend (full suite, two workers; a module's tests share one)"
KERAS_BACKEND=jax "$VENV_PY" -m pytest -q -n 2 --dist loadfile "$@"
for backend in tensorflow torch; do
  echo "== pytest, $backend backend (smoke subset)"
  KERAS_BACKEND=$backend "$VENV_PY" -m pytest -q -m smoke -p no:cacheprovider
done
