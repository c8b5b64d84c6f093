// The suite of suite.mjs against the built component, run by Node through `jco transpile`:
// the JS engine inside the component (StarlingMonkey, a SpiderMonkey) is not Node's V8, so
// this is what shows that TextDecoder's `fatal`, JSON.parse and the bindings behave there.
// Skipped unless scripts/build-js-guest.sh has built the component and installed jco.
//   node --test guests/js/drink_count/component.test.mjs
// STREAMHOST_JS_GUEST=path.wasm picks another build.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { defineSuite } from './suite.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const wasm = process.env.STREAMHOST_JS_GUEST ?? join(root, 'build', 'guests', 'drink_count_js.wasm');
const tools = join(process.env.STREAMHOST_CACHE ?? join(homedir(), '.cache', 'streamhost'), 'js-tools');
const jco = join(tools, 'node_modules', '.bin', 'jco');

if (!existsSync(wasm) || !existsSync(jco)) {
  test('drink_count_js.wasm', { skip: `no ${existsSync(wasm) ? jco : wasm}: run scripts/build-js-guest.sh` }, () => {});
} else {
  const out = mkdtempSync(join(tmpdir(), 'drink-count-js-'));
  after(() => rmSync(out, { recursive: true, force: true }));
  execFileSync(jco, ['transpile', wasm, '-o', out, '--name', 'guest', '--quiet'], { stdio: 'inherit' });
  const { counter } = await import(pathToFileURL(join(out, 'guest.js')).href);
  // jco's host side throws a ComponentError carrying the `err` string; the suite expects the string.
  const process = (value) => {
    try {
      return counter.process(value);
    } catch (e) {
      throw e !== null && typeof e === 'object' && 'payload' in e ? e.payload : e;
    }
  };
  defineSuite('component', { process, processBatch: counter.processBatch, topN: counter.topN });
}
