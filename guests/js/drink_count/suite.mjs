// The drink count's tests, for any implementation of the `counter` interface: drinks.js run
// natively (test.mjs) and the built component (component.test.mjs). They are the conformance
// suite (guests/conformance/drink_count), the Rust reference's tests (guests/drinks,
// guests/drink_count, guests/sdk) and the corners where serde_json and JSON.parse differ.
//
// `impl` is { process(Uint8Array) -> [{key, amount}] (throws the reason as a string),
//             processBatch(Uint8Array, Uint32Array) -> {deltas, rejected},
//             topN([{key, count}], n) -> [{key, count}] } with u64 values as BigInt.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const conformance = join(here, '..', '..', 'conformance', 'drink_count');
const encoder = new TextEncoder();
const bytes = (text) => (typeof text === 'string' ? encoder.encode(text) : Uint8Array.from(text));
const concat = (...parts) => Uint8Array.from(parts.flatMap((p) => [...bytes(p)]));

/** Records of a .jsonl file as the host's `host test` splits them. */
export function splitRecords(data) {
  if (data.length === 0) return [];
  const records = [];
  let end = data.length;
  if (data[end - 1] === 0x0a) end--;
  let start = 0;
  for (let i = 0; i <= end; i++) {
    if (i === end || data[i] === 0x0a) {
      let stop = i;
      if (stop > start && data[stop - 1] === 0x0d) stop--;
      records.push(data.subarray(start, stop));
      start = i + 1;
    }
  }
  return records;
}

/** Packs records into one buffer and their end offsets, as the host calls process-batch. */
export function pack(records) {
  const chunks = records.map(bytes);
  const data = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  const ends = new Uint32Array(chunks.length);
  let at = 0;
  chunks.forEach((c, i) => {
    data.set(c, at);
    at += c.length;
    ends[i] = at;
  });
  return { data, ends };
}

export function defineSuite(name, impl) {
  const accept = (record) => {
    try {
      return impl.process(bytes(record)).map((d) => [d.key, d.amount]);
    } catch (e) {
      assert.equal(typeof e, 'string', `not a refusal but ${e?.stack ?? e}`);
      assert.fail(`${JSON.stringify(String.fromCharCode(...bytes(record)))} refused: ${e}`);
    }
  };
  const refuse = (record) => {
    let deltas;
    try {
      deltas = impl.process(bytes(record));
    } catch (e) {
      assert.equal(typeof e, 'string', `not a refusal but ${e?.stack ?? e}`);
      assert.ok(e.length > 0);
      return e;
    }
    assert.fail(`${JSON.stringify(String.fromCharCode(...bytes(record)))} accepted with ${deltas.length} deltas`);
  };
  const ok = (record, expected) => assert.deepEqual(accept(record), expected.map(([k, a]) => [k, BigInt(a)]));
  const item = (drink, quantity) => `{"items":[{"drink":${drink},"quantity":${quantity}}]}`;

  /** process over each record, then process-batch over all: both must agree; returns the former. */
  const countBoth = (records) => {
    const counts = new Map();
    const refused = [];
    records.forEach((record, index) => {
      let deltas;
      try {
        deltas = impl.process(bytes(record));
      } catch (e) {
        assert.equal(typeof e, 'string');
        refused.push([index, e]);
        return;
      }
      for (const { key, amount } of deltas) counts.set(key, (counts.get(key) ?? 0n) + amount);
    });
    const { data, ends } = pack(records);
    const batch = impl.processBatch(data, ends);
    const batchCounts = new Map();
    for (const { key, amount } of batch.deltas) {
      assert.ok(!batchCounts.has(key), `process-batch returned ${key} twice`);
      batchCounts.set(key, amount);
    }
    assert.deepEqual(new Map([...batchCounts].sort()), new Map([...counts].sort()), 'process-batch counts differ');
    assert.deepEqual(
      batch.rejected.map((r) => [r.index, r.reason]),
      refused,
      'process-batch refuses other records than process',
    );
    return { counts, refused };
  };

  for (const file of readdirSync(conformance).filter((f) => f.endsWith('.jsonl'))) {
    test(`${name}: conformance ${file}`, () => {
      const records = splitRecords(readFileSync(join(conformance, file)));
      const expected = JSON.parse(readFileSync(join(conformance, file.replace(/\.jsonl$/, '.expected.json')), 'utf8'));
      const { counts, refused } = countBoth(records);
      assert.equal(records.length - refused.length, expected.records_processed, 'records_processed');
      assert.equal(refused.length, expected.records_skipped, 'records_skipped');
      assert.deepEqual(
        Object.fromEntries([...counts].map(([k, v]) => [k, Number(v)])),
        expected.counts,
        'counts',
      );
      const top = impl.topN([...counts].map(([key, count]) => ({ key, count })), 10);
      assert.deepEqual(top.map((e) => ({ key: e.key, count: Number(e.count) })), expected.top, 'top');
    });
  }

  // guests/drinks/src/lib.rs
  test(`${name}: one delta per distinct drink, summed`, () => {
    ok(
      '{"order_id":"o1","shop_id":7,"items":[{"drink":"latte","quantity":2},{"drink":"mocha","quantity":1},{"drink":"latte","quantity":3}]}',
      [['latte', 5], ['mocha', 1]],
    );
  });

  test(`${name}: unknown fields are ignored`, () => {
    ok('{"x":[1,{}],"items":[{"drink":"tea","quantity":1,"size":"L"}]}', [['tea', 1]]);
  });

  test(`${name}: names are byte exact`, () => {
    ok('{"items":[{"drink":" Latte","quantity":1},{"drink":"latte","quantity":1},{"drink":"caf\\u00e9","quantity":1}]}', [
      [' Latte', 1],
      ['latte', 1],
      ['café', 1],
    ]);
    ok('{"items":[{"drink":"café","quantity":1},{"drink":"caf\\u00e9","quantity":2}]}', [['café', 3]]);
  });

  test(`${name}: quantity bounds both sides`, () => {
    ok(item('"a"', 1), [['a', 1]]);
    ok(item('"a"', 1000000), [['a', 1000000]]);
    assert.match(refuse(item('"a"', 0)), /quantity 0/);
    assert.match(refuse(item('"a"', 1000001)), /quantity 1000001/);
    assert.match(refuse(item('"a"', -1)), /quantity -1/);
  });

  test(`${name}: quantity must be an integer`, () => {
    for (const q of ['2.5', '2.0', '"2"', 'null', '18446744073709551616', 'true', '[2]', '{}']) refuse(item('"a"', q));
    refuse('{"items":[{"drink":"a"}]}');
  });

  test(`${name}: quantity must be written as an integer (serde_json keeps 2.0 and 1e2 floats)`, () => {
    for (const q of ['1.0', '2.00', '1e2', '1E2', '1e+2', '100e-2', '0.5e1', '-0', '-0.0', '1.0000000000000001', '1e400', '-5']) {
      refuse(item('"a"', q));
    }
    refuse('{"items":[{"drink":"a","quantity":1},{"drink":"b","quantity":3.0}]}');
    refuse('{"items":[{"drink":"a","quantity":01}]}');
  });

  test(`${name}: drink must be a non-empty string`, () => {
    assert.match(refuse(item('""', 1)), /drink is empty/);
    for (const d of ['5', 'null', 'true', '["a"]', '{"a":1}']) refuse(item(d, 1));
    refuse('{"items":[{"quantity":1}]}');
  });

  test(`${name}: items must be a non-empty array`, () => {
    assert.match(refuse('{"items":[]}'), /no items/);
    for (const r of ['{"order_id":1}', '{"items":null}', '{"items":{"drink":"a","quantity":1}}', '{"items":["latte"]}', '{}', '{"items":"latte"}', '{"items":[null]}', '{"items":[1]}']) {
      refuse(r);
    }
  });

  test(`${name}: one bad item refuses the whole order`, () => {
    refuse('{"items":[{"drink":"latte","quantity":1},{"drink":"","quantity":1}]}');
    refuse('{"items":[{"drink":"latte","quantity":1},{"drink":"mocha","quantity":0}]}');
  });

  test(`${name}: not an object, or not JSON`, () => {
    assert.match(refuse('[[{"drink":"a","quantity":1}]]'), /not a JSON object/);
    for (const r of ['', ' ', 'not json', '{', '{"items":[{"drink":"a","quantity":1}]', '{"items":[{"drink":"a","quantity":1}]} trailing', '{"items":[{"drink":"a","quantity":1}]}}', 'null', '"x"']) {
      refuse(r);
    }
    refuse(concat('{"items":[{"drink":"', [0xff], '","quantity":1}]}'));
  });

  test(`${name}: JSON whitespace around the order, and nothing else`, () => {
    ok(' \t\r\n{ "items" : [ { "drink" : "a" , "quantity" : 1 } ] } \n', [['a', 1]]);
    refuse('\f{"items":[{"drink":"a","quantity":1}]}'); // Rust's first check passes, serde_json refuses
    refuse(concat([0xef, 0xbb, 0xbf], '{"items":[{"drink":"a","quantity":1}]}')); // a BOM
    refuse('{"items":[{"drink":"a","quantity":1}]}\f');
    refuse('{"items":[{"drink":"a","quantity":1},]}');
    refuse('{"items":[{"drink":"a","quantity":1,}]}');
    refuse('{"items":[{"drink":"a\tb","quantity":1}]}'); // a raw control character
    refuse('{"x":"a\nb","items":[{"drink":"a","quantity":1}]}');
  });

  test(`${name}: a field given twice is refused (serde), unknown ones may repeat`, () => {
    refuse('{"items":[{"drink":"a","quantity":1}],"items":[{"drink":"b","quantity":1}]}');
    refuse('{"items":[{"drink":"a","drink":"b","quantity":1}]}');
    refuse('{"items":[{"drink":"a","quantity":1,"quantity":2}]}');
    refuse('{"items": [{"drink": "a", "quantity": 1, "quantity": 2}]}');
    refuse('{"items": [{"drink": "a", "quantity": 1}], "items": [{"drink": "a", "quantity": 1}]}');
    refuse('{"items":[{"drink":"a","dr\\u0069nk":"b","quantity":1}]}');
    refuse('{"\\u0069tems":[],"items":[{"drink":"b","quantity":1}]}');
    ok('{"x":1,"x":2,"items":[{"drink":"a","quantity":1,"y":{"z":1,"z":2}}]}', [['a', 1]]);
    ok('{"drink":"x","note":"quantity","items":[{"drink":"drink","quantity":1}],"y":{"items":1}}', [['drink', 1]]);
    ok('{"\\u0069tems":[{"dr\\u0069nk":"a","quantity":1}]}', [['a', 1]]);
  });

  test(`${name}: an item written as an array is refused (the reference reads items from objects only)`, () => {
    for (const r of ['{"items":[["latte",2],{"drink":"latte","quantity":1}]}', '{"items":[{"drink":"latte","quantity":1},["latte",2]]}', '{"items":[["latte"]]}', '{"items":[[]]}', '{"items":[["latte",2,3]]}', '{"items":[["latte","2"]]}', '{"items":[[2,"latte"]]}', '{"items":[["latte",2.0]]}', '{"items":[["",2]]}']) {
      refuse(r);
    }
  });

  test(`${name}: UTF-8 and escapes are checked where serde_json decodes (keys, drinks), not in skipped values`, () => {
    const order = (...parts) => concat(...parts);
    refuse(order('{"items":[{"drink":"', [0xc3], '","quantity":1}]}')); // truncated sequence
    refuse(order('{"items":[{"drink":"', [0xed, 0xa0, 0x80], '","quantity":1}]}')); // an encoded surrogate
    refuse(order('{"items":[{"drink":"', [0xc0, 0xaf], '","quantity":1}]}')); // overlong
    refuse(order('{"', [0xff], '":1,"items":[{"drink":"a","quantity":1}]}')); // key of the order
    refuse(order('{"items":[{"', [0xff], '":1,"drink":"a","quantity":1}]}')); // key of an item
    ok(order('{"note":"', [0xff, 0xfe], '","items":[{"drink":"a","quantity":1}]}'), [['a', 1]]);
    ok(order('{"x":{"', [0xff], '":["', [0xc3], '"]},"items":[{"drink":"a","quantity":1,"n":"', [0x80], '"}]}'), [['a', 1]]);
    refuse(item('"\\ud800"', 1));
    refuse(item('"\\udc00"', 1));
    refuse(item('"a\\ud83d"', 1));
    refuse(item('"\\ud83d\\u0041"', 1));
    refuse(item('"\\ud83d\\n"', 1));
    refuse('{"\\ud800":1,"items":[{"drink":"a","quantity":1}]}');
    ok('{"x":"\\ud800","y":{"\\udc00":"\\ud83d\\n"},"items":[{"drink":"a","quantity":1}]}', [['a', 1]]);
    ok(item('"\\ud83d\\ude00 \\u00e9\\"\\\\\\/\\b\\f\\n\\r\\t"', 1), [['😀 é"\\/\b\f\n\r\t', 1]]);
    ok(item('"😀"', 2), [['😀', 2]]);
    refuse(item('"\\x41"', 1));
    refuse(item('"\\u12"', 1));
    refuse(item('"\\u12G4"', 1));
    refuse('{"x":"\\q","items":[{"drink":"a","quantity":1}]}');
    refuse('{"x":"\\u00g0","items":[{"drink":"a","quantity":1}]}');
  });

  test(`${name}: skipped values are checked for syntax, at any depth`, () => {
    const deep = (n) => `{"x":${'['.repeat(n)}${']'.repeat(n)},"items":[{"drink":"a","quantity":1}]}`;
    ok(deep(1000), [['a', 1]]);
    ok(deep(100000), [['a', 1]]);
    ok(`{"x":${'{"a":'.repeat(5000)}1${'}'.repeat(5000)},"items":[{"drink":"a","quantity":1}]}`, [['a', 1]]);
    refuse(`{"x":${'['.repeat(1000)}${']'.repeat(999)},"items":[{"drink":"a","quantity":1}]}`);
    for (const x of ['01', '1.', '.5', '+1', '-', '1e', '1e+', 'tru', 'nul', 'NaN', 'Infinity', "'a'", '[1,]', '{"a"}', '{"a":}', '{1:2}', '[1 2]', '{"a":1,}', '"\\u00"']) {
      refuse(`{"x":${x},"items":[{"drink":"a","quantity":1}]}`);
    }
    for (const x of ['-0', '1.5e-7', '-12.0E+3', '18446744073709551616', '1e400', 'true', 'false', 'null', '[]', '{}', '[{"a":[null]}]', '"\\u2028 \u2028"']) {
      ok(`{"x":${x},"items":[{"drink":"a","quantity":1}]}`, [['a', 1]]);
    }
  });

  test(`${name}: a key over 65,536 bytes is refused`, () => {
    ok(item(`"${'k'.repeat(65536)}"`, 1), [['k'.repeat(65536), 1]]);
    ok(item(`"${'é'.repeat(32768)}"`, 1), [['é'.repeat(32768), 1]]);
    assert.match(refuse(item(`"${'k'.repeat(65537)}"`, 1)), /longer than the limit/);
    assert.match(refuse(item(`"a${'é'.repeat(32768)}"`, 1)), /65537 bytes/);
    assert.match(refuse(item(`"${'😀'.repeat(16384)}x"`, 1)), /65537 bytes/);
    assert.match(refuse(item(`"${'\\u00e9'.repeat(32768)}x"`, 1)), /65537 bytes/);
    refuse(`{"items":[{"drink":"a","quantity":1},{"drink":"${'k'.repeat(70000)}","quantity":1}]}`);
  });

  // guests/drink_count/src/lib.rs
  test(`${name}: ranking ties by key`, () => {
    const e = (key, count) => ({ key, count: BigInt(count) });
    const top = impl.topN([e('mocha', 3), e('latte', 3), e('tea', 5), e('chai', 1)], 3);
    assert.deepEqual(top.map((x) => [x.key, x.count]), [['tea', 5n], ['latte', 3n], ['mocha', 3n]]);
  });

  test(`${name}: a batch sums the accepted orders and lists the refused`, () => {
    const { data, ends } = pack([
      '{"items":[{"drink":"latte","quantity":2}]}',
      '{"items":[{"drink":"latte","quantity":0}]}',
      '{"items":[{"drink":"mocha","quantity":1},{"drink":"latte","quantity":1}]}',
      'not json',
    ]);
    const result = impl.processBatch(data, ends);
    assert.deepEqual(result.deltas.map((d) => [d.key, d.amount]).sort(), [['latte', 3n], ['mocha', 1n]]);
    assert.deepEqual(result.rejected.map((r) => r.index), [1, 3]);
    assert.match(result.rejected[0].reason, /quantity 0/);
  });

  // guests/sdk/src/lib.rs
  test(`${name}: top-n: count descending, then key bytes; at most n`, () => {
    const e = (key, count) => ({ key, count: BigInt(count) });
    const keys = (entries, n) => impl.topN(entries, n).map((x) => x.key);
    assert.deepEqual(keys([e('b', 2), e('a', 2), e('C', 2), e('z', 9), e('y', 1)], 4), ['z', 'C', 'a', 'b']);
    assert.deepEqual(keys([e('a', 1)], 0), []);
    assert.deepEqual(keys([e('a', 1), e('b', 3)], 10), ['b', 'a']);
    assert.deepEqual(keys([], 3), []);
    // UTF-8 byte order, not UTF-16: U+FF5E (EF BD 9E) before U+1F600 (F0 9F 98 80).
    assert.deepEqual(keys([e('😀', 1), e('～', 1), e('é', 1), e('z', 1), e('', 1)], 5), ['', 'z', 'é', '～', '😀']);
    assert.deepEqual(keys([e('a😀', 1), e('a～', 1), e('a\uD7FF', 1)], 2), ['a\uD7FF', 'a～']);
    // u64 counts beyond 2^53
    const big = [e('a', 2n ** 64n - 1n), e('b', 2n ** 64n - 2n), e('c', 2n ** 53n + 1n), e('d', 2n ** 53n)];
    assert.deepEqual(keys([...big].reverse(), 4), ['a', 'b', 'c', 'd']);
    assert.equal(impl.topN(big, 1)[0].count, 2n ** 64n - 1n);
  });

  test(`${name}: top-n in parts gives the board of one call (a total order)`, () => {
    let seed = 7;
    const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
    const names = ['latte', 'mocha', 'tea', 'chai', 'Latte', 'café', '😀', '～', 'a', 'b'];
    const entries = [];
    for (let i = 0; i < 3000; i++) {
      entries.push({ key: `${names[i % names.length]}${Math.floor(i / names.length)}`, count: BigInt(Math.floor(random() * 20)) });
    }
    for (const n of [1, 5, 10, 100, 2999, 3000, 5000]) {
      const whole = impl.topN(entries, n);
      assert.equal(whole.length, Math.min(n, entries.length));
      let winners = [];
      for (let at = 0; at < entries.length; at += 250) winners = impl.topN([...winners, ...entries.slice(at, at + 250)], n);
      assert.deepEqual(winners.map((x) => x.key), whole.map((x) => x.key), `n = ${n}`);
      for (let i = 1; i < whole.length; i++) {
        const [a, b] = [whole[i - 1], whole[i]];
        assert.ok(a.count > b.count || (a.count === b.count && Buffer.compare(bytes(a.key), bytes(b.key)) < 0));
      }
    }
  });

  test(`${name}: process-batch agrees with process`, () => {
    const records = [
      '{"items":[{"drink":"a","quantity":1},{"drink":"b","quantity":2}]}',
      'bad',
      '',
      '{"items":[["a",5]]}',
      concat('{"n":"', [0xff], '","items":[{"drink":"b","quantity":1}]}'),
      '{"items":[{"drink":"a","quantity":2.0}]}',
      item(`"${'k'.repeat(65537)}"`, 1),
      '{"items":[{"drink":"caf\\u00e9","quantity":1},{"drink":"café","quantity":1}]}',
      '{"items":[{"drink":"a","quantity":1000000}]}',
    ];
    const { refused } = countBoth(records);
    assert.deepEqual(refused.map(([i]) => i), [1, 2, 3, 5, 6]);
    const { counts } = countBoth([]);
    assert.equal(counts.size, 0);
  });

  test(`${name}: bad bounds refuse the record, not the batch`, () => {
    const data = bytes('{"items":[{"drink":"a","quantity":1}]}');
    const result = impl.processBatch(data, Uint32Array.of(data.length, data.length + 5, 3, data.length));
    assert.deepEqual(result.deltas.map((d) => [d.key, d.amount]), [['a', 1n]]);
    assert.deepEqual(result.rejected.map((r) => r.index), [1, 2, 3]);
    assert.match(result.rejected[0].reason, /outside the batch/);
  });
}
