#!/usr/bin/env bash
# Python fixtures for the end-to-end tests, under target/fixtures (idempotent, quiet when done):
# - venv/               pyenv's Python 3.11 venv with numpy and PyYAML from PyPI
# - vénv with spaces/   a second venv (path with spaces and non-ASCII letters) with PyYAML
# - tools/              DuckDB, for the independent check of `pyusage analyze` (test helper only)
# - wheels/             also setuptools and wheel, for the editable-install tests (`pip install -e`)
# - sampling/<python>/  one venv per interpreter the CPU sampler supports (pyenv's 3.8–3.13,
#                       Debian's 3.11) with numpy, for the sampler's accuracy tests and bench
# Wheels are cached in target/fixtures/wheels so a re-creation needs no network.
set -euo pipefail
cd "$(dirname "$0")/.."
F=target/fixtures

sampling_venvs() {
  local stamp="$F/.done-sampling-v1" py name v
  [ -f "$stamp" ] && return 0
  echo "fixtures: creating the sampler's venvs with numpy (first time only)" >&2
  for py in "$HOME"/.pyenv/versions/3.{8,9,10,11,12,13}.*/bin/python3.{8,9,10,11,12,13} /usr/bin/python3.11; do
    [ -x "$py" ] || continue
    case "$py" in
      /usr/bin/*) name=debian-$(basename "$py" | sed 's/^python//') ;;
      *) name=pyenv-$(basename "$py" | sed 's/^python//') ;;
    esac
    v="$F/sampling/$name"
    rm -rf "$v"
    "$py" -m venv "$v"
    "$v/bin/python" -m pip download -q -d "$F/wheels" numpy
    "$v/bin/python" -m pip install -q --no-index --find-links "$F/wheels" numpy
  done
  touch "$stamp"
}
mkdir -p "$F"
sampling_venvs
PY=${PYUSAGE_TEST_PYTHON:-$(python3 -c 'import sys; print(sys.executable)')}
PKGS=(numpy PyYAML)
TOOLS=("duckdb>=1.1,<2")
BUILD=("setuptools>=70" wheel)
mkdir -p "$F/wheels"
stamp="$F/.done-$(basename "$PY")-v4"
[ -f "$stamp" ] && exit 0
echo "fixtures: creating venvs with ${PKGS[*]} (first time only)" >&2
if ! ls "$F"/wheels/numpy-*.whl >/dev/null 2>&1 || ! ls "$F"/wheels/[Pp]y[Yy][Aa][Mm][Ll]-*.whl >/dev/null 2>&1; then
  "$PY" -m pip download -q -d "$F/wheels" "${PKGS[@]}"
fi
if ! ls "$F"/wheels/wheel-*.whl >/dev/null 2>&1 || ! ls "$F"/wheels/setuptools-*.whl >/dev/null 2>&1; then
  "$PY" -m pip download -q -d "$F/wheels" "${BUILD[@]}"
fi
if ! ls "$F"/wheels/duckdb-*.whl >/dev/null 2>&1; then
  "$PY" -m pip download -q -d "$F/wheels" "${TOOLS[@]}"
fi
for v in "$F/venv" "$F/vénv with spaces" "$F/tools"; do
  rm -rf "$v"
  "$PY" -m venv "$v"
done
"$F/venv/bin/python" -m pip install -q --no-index --find-links "$F/wheels" "${PKGS[@]}"
"$F/vénv with spaces/bin/python" -m pip install -q --no-index --find-links "$F/wheels" PyYAML
"$F/tools/bin/python" -m pip install -q --no-index --find-links "$F/wheels" "${TOOLS[@]}"
# Byte-compile so imports open __pycache__/*.pyc even though PYTHONDONTWRITEBYTECODE is set.
for v in "$F/venv" "$F/vénv with spaces"; do
  "$v/bin/python" -m compileall -q "$v/lib" >/dev/null || true
done
touch "$stamp"
