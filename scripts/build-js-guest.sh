#!/usr/bin/env bash
# Builds the JavaScript drink count (guests/js/drink_count) into a component with
# componentize-js: build/guests/drink_count_js.wasm, or OUT_DIR/drink_count_js.wasm.
# Usage (from anywhere; paths are relative to the repo root): scripts/build-js-guest.sh [OUT_DIR]
#
# The tools (componentize-js, jco: pinned in guests/js/package-lock.json, ~400 MB) are
# installed with `npm ci` outside the clone, in ${STREAMHOST_CACHE:-~/.cache/streamhost}/js-tools,
# on first use and whenever the lock file changes; then this is a no-op.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
out_dir=${1:-build/guests}
tools="${STREAMHOST_CACHE:-$HOME/.cache/streamhost}/js-tools"

command -v node >/dev/null || { echo "build-js-guest: node (20 or later) is needed" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "build-js-guest: node $(node --version) is too old, 20 or later is needed" >&2
  exit 1
fi

# Install the pinned tools when the lock file differs from the one installed.
stamp="$tools/.installed-lock.sha256"
want=$(sha256sum guests/js/package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -d "$tools/node_modules/@bytecodealliance/componentize-js" ]; then
  echo "== installing the JS guest tools into $tools"
  mkdir -p "$tools"
  rm -f "$stamp"
  cp guests/js/package.json guests/js/package-lock.json "$tools/"
  (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi

mkdir -p "$out_dir"
out="$out_dir/drink_count_js.wasm"
start=$(date +%s.%N)
STREAMHOST_JS_TOOLS="$tools" node guests/js/componentize.mjs \
  guests/js/drink_count/guest.js wit counting-guest "$out.tmp"
mv "$out.tmp" "$out"
end=$(date +%s.%N)
awk -v f="$out" -v n="$(stat -c %s "$out")" -v s="$start" -v e="$end" 'BEGIN { printf "%s: %d bytes, built in %.1f s\n", f, n, e - s }'
