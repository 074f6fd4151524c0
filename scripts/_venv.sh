# Sourced by the other scripts: create or reuse .venv in the repo root and install
# what the project needs. Re-installs only when pyproject.toml changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VENV_PY="$ROOT/.venv/bin/python"
ensure_installed() {  # ensure_installed <stamp-name> <pip args...>
  local stamp=".venv/.installed-$1"; shift
  local want
  want="$(sha256sum pyproject.toml | cut -c1-16) $*"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$VENV_PY" -m pip install --quiet --disable-pip-version-check "$@"
    echo "$want" > "$stamp"
  fi
}
