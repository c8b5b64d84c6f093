// The drink count's logic, run natively: `node --test guests/js/drink_count/test.mjs`
// (Node 20, no dependency). The same suite runs against the built component in
// component.test.mjs.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { compareUtf8, countExact, countOrder, process, processBatch, topN, utf8Length } from './drinks.js';
import { defineSuite } from './suite.mjs';

defineSuite('drinks.js', { process, processBatch, topN });

const encoder = new TextEncoder();

// The fast path (JSON.parse) must give the verdict and the deltas of the exact path (the
// serde_json emulation) on every record, which the fixed cases above cannot show alone.
test('fast and exact paths agree on mutated orders', () => {
  let seed = 12345;
  const random = (n) => {
    // mulberry32
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (((t ^ (t >>> 14)) >>> 0) % n);
  };
  const pick = (list) => list[random(list.length)];
  // Mostly good values, so that enough orders are accepted.
  const goodDrinks = ['"latte"', '"mocha"', '" Latte"', '"café"', '"caf\\u00e9"', '"😀"', '"drink"', '"items"', '"7eleven"'];
  const drinks = [...goodDrinks, ...goodDrinks, '""', '5', 'null'];
  const goodQuantities = ['1', '2', '17', '1000000'];
  const quantities = [...goodQuantities, ...goodQuantities, ...goodQuantities, '1000001', '0', '-1', '2.0', '2.5', '1e2', '"2"', '-0', '01', '18446744073709551616'];
  const extras = ['', '"x":1,', '"note":"quantity",', '"y":[1,{"z":null}],', '"drink":"x",', '"items":[],', '"e":1e5,', '"s":"a\\"b",'];
  const itemOf = () => {
    const parts = [`"drink":${pick(drinks)}`, `"quantity":${pick(quantities)}`];
    if (random(4) === 0) parts.push(`"size":"L"`);
    if (random(16) === 0) parts.push(pick(parts));
    if (random(20) === 0) parts.shift();
    if (random(3) === 0) parts.reverse();
    if (random(12) === 0) return `[${pick(drinks)},${pick(quantities)}]`;
    return `{${parts.join(',')}}`;
  };
  const orderOf = () => {
    const items = Array.from({ length: random(4) + (random(8) === 0 ? 0 : 1) }, itemOf);
    const order = `{${pick(extras)}"items":[${items.join(',')}]${random(20) === 0 ? ',"items":[]' : ''}}`;
    // compact, as JSON.stringify and serde_json write it, or spaced, as Python's json does
    return random(2) === 0 ? order : order.replaceAll('":', '": ').replaceAll(',"', ', "');
  };
  const mutate = (b) => {
    const out = Array.from(b);
    for (let k = random(3); k > 0; k--) {
      const at = random(out.length + 1);
      switch (random(4)) {
        case 0: out.splice(at, 1); break;
        case 1: out.splice(at, 0, pick([0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0x22, 0x5c, 0x20, 0x30, 0x2e, 0x65, 0xff, 0xc3, 0x0a, 0x00])); break;
        case 2: out[at] = random(256); break;
        default: out.splice(at, 0, ...out.slice(random(out.length), random(out.length)));
      }
    }
    return Uint8Array.from(out);
  };
  let accepted = 0;
  for (let n = 0; n < 30000; n++) {
    const clean = encoder.encode(orderOf());
    const record = random(4) === 0 ? mutate(clean) : clean;
    const fast = new Map();
    const exact = new Map();
    const a = countOrder(record, fast);
    const b = countExact(record, exact);
    const shown = new TextDecoder().decode(record);
    // countExact is serde_json alone; countOrder first refuses what does not start with `{`.
    if (/^[ \t\n\f\r]*\{/.test(shown)) assert.equal(a === null, b === null, `${shown}: fast says ${a}, exact says ${b}`);
    else assert.notEqual(a, null, shown);
    if (a === null) {
      assert.deepEqual([...fast], [...exact], shown);
      accepted++;
    }
  }
  assert.ok(accepted > 3000, `only ${accepted} accepted: the generator is too harsh`);
});

test('UTF-8 helpers', () => {
  for (const s of ['', 'a', 'é', '～', '😀', 'a😀é～\u0000\u07ff\u0800\uffff']) {
    assert.equal(utf8Length(s), encoder.encode(s).length, s);
  }
  const words = ['', 'a', 'b', 'é', '\uD7FF', '\uE000', '～', '\uFFFF', '😀', '𐀀', 'a😀', 'a～', 'ab'];
  for (const x of words) {
    for (const y of words) {
      const expected = Math.sign(Buffer.compare(encoder.encode(x), encoder.encode(y)));
      assert.equal(Math.sign(compareUtf8(x, y)), expected, `${x} vs ${y}`);
    }
  }
});

test('a refused record leaves the totals alone', () => {
  const totals = new Map([['latte', 1]]);
  assert.notEqual(countOrder(encoder.encode('{"items":[{"drink":"latte","quantity":1},{"drink":"x","quantity":0}]}'), totals), null);
  assert.notEqual(countOrder(encoder.encode('{"items":[["latte",1],["x",2.0]]}'), totals), null);
  assert.deepEqual([...totals], [['latte', 1]]);
});
