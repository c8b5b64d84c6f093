#!/usr/bin/env bash
# Builds the Python guests (guests/python/drink_count, a counting guest, and
# guests/python/order_dedup, a processor) into WebAssembly components with componentize-py,
# installed on first use into a venv outside the clone.
#
#   scripts/build-python-guest.sh [OUT_DIR]   -> OUT_DIR/drink_count_py.wasm and
#                                                OUT_DIR/order_dedup_py.wasm (default build/guests)
#
# --stub-wasi replaces every WASI import with a trapping stub: the host grants guests no
# imports at all, and the guest needs none (no clock, files, randomness or output).
# The bindings (`wit_world`) are generated inside the build, in a temporary directory;
# stub bindings for the native tests are written to $STREAMHOST_CACHE/py-bindings.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
root=$(cd "$(dirname "$0")/.." && pwd)
out_dir=${1:-$root/build/guests}
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
cache=${STREAMHOST_CACHE:-$HOME/.cache/streamhost}
venv=$cache/py-venv
tool=$venv/bin/componentize-py

if [ "$("$tool" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
  echo "build-python-guest: installing componentize-py $COMPONENTIZE_PY_VERSION into $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# build NAME WIT_DIR WORLD FILE...: guests/python/NAME's FILEs into OUT_DIR/NAME_py.wasm.
build() {
  local name=$1 wit=$2 world=$3
  shift 3
  # Only the guest's own modules go into the component: componentize-py bundles its
  # python path, so build from a directory holding nothing else.
  mkdir "$work/$name"
  for file in "$@"; do cp -p "$root/guests/python/$name/$file" "$work/$name/"; done
  local start
  start=$(date +%s%N)
  (cd "$work" && env -u VIRTUAL_ENV "$tool" -q -d "$wit" -w "$world" componentize --stub-wasi \
    -p "$work/$name" app -o "$work/${name}_py.wasm")
  mv "$work/${name}_py.wasm" "$out_dir/${name}_py.wasm"
  local ms=$((($(date +%s%N) - start) / 1000000))
  echo "build-python-guest: $out_dir/${name}_py.wasm ($(wc -c <"$out_dir/${name}_py.wasm") bytes) in $((ms / 1000)).$((ms % 1000 / 100)) s"
}

build drink_count "$root/wit" counting-guest app.py drinks.py
build order_dedup "$root/wit/processor" processor-guest app.py
"$tool" -q -d "$root/wit" -w counting-guest bindings "$work/bindings"
rm -rf "$cache/py-bindings" && mv "$work/bindings" "$cache/py-bindings"
