// Builds a JavaScript guest into a component with the componentize-js API (its CLI, and
// `jco componentize`, are not used: see scripts/build-js-guest.sh).
// Usage: STREAMHOST_JS_TOOLS=DIR node componentize.mjs SOURCE.js WIT_DIR WORLD OUT.wasm
// where DIR holds the node_modules that npm ci installed from this folder's package-lock.json.
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

// The tools live outside the repo, so resolve the package from there (ESM ignores NODE_PATH).
const tools = process.env.STREAMHOST_JS_TOOLS;
if (!tools) throw new Error('STREAMHOST_JS_TOOLS is not set (scripts/build-js-guest.sh sets it)');
const pkg = join(tools, 'node_modules', '@bytecodealliance', 'componentize-js');
const entry = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')).exports.import;
const { componentize } = await import(pathToFileURL(join(pkg, entry)).href);

const [sourcePath, witPath, worldName, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node componentize.mjs SOURCE.js WIT_DIR WORLD OUT.wasm');
  process.exit(2);
}
const { component } = await componentize({
  sourcePath,
  witPath,
  worldName,
  // No WASI feature: a pure component that imports as little as the engine allows. Without
  // stdio an uncaught exception traps instead of printing (a thrown string from an export
  // returning `result` is its `err`, not an uncaught exception).
  disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
});
await writeFile(out, component);
