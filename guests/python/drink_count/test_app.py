"""Tests of the Python drink count, natively in CPython: `python3 -m unittest -v` in this
directory (or `python3 -m unittest discover -s guests/python/drink_count` from the root).

- the conformance suite (guests/conformance/drink_count), as `host test` runs it;
- the Rust reference's own test cases (guests/drinks/src/lib.rs, the SDK's);
- where Python's json differs from serde_json, the serde side (see drinks.py);
- app.py against the stub bindings of scripts/build-python-guest.sh, when they exist;
- against the real components through the host's `host test`, when the host and the
  guests are built: the Python component passes the conformance suite, and it refuses and
  counts exactly what the Rust drink_count does over a few thousand tricky records.
No dependency beyond the standard library.
"""

import json
import os
import random
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
CONFORMANCE = ROOT / "guests" / "conformance" / "drink_count"
CACHE = Path(os.environ.get("STREAMHOST_CACHE", Path.home() / ".cache" / "streamhost"))
sys.path.insert(0, str(HERE))

import drinks  # noqa: E402

U64_MAX = 2**64 - 1


def ok(record):
    if isinstance(record, str):
        record = record.encode()
    try:
        return list(drinks.count(record).items())
    except drinks.Refused as refused:
        raise AssertionError(f"{record!r} refused: {refused}") from None


def err(record):
    if isinstance(record, str):
        record = record.encode()
    try:
        deltas = drinks.count(record)
    except drinks.Refused as refused:
        return str(refused)
    raise AssertionError(f"{record!r} accepted with {deltas}")


def split_records(data):
    """The host's split (offline.rs): one record per line, a final newline ends the last."""
    if not data:
        return []
    if data.endswith(b"\n"):
        data = data[:-1]
    return [line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n")]


def pack(records):
    data, ends = b"", []
    for record in records:
        data += record
        ends.append(len(data))
    return data, ends


def entries(counts):
    return [SimpleNamespace(key=k, count=c) for k, c in counts.items()]


class Conformance(unittest.TestCase):
    def test_every_case(self):
        cases = sorted(CONFORMANCE.glob("*.jsonl"))
        self.assertTrue(cases, f"no conformance cases in {CONFORMANCE}")
        for case in cases:
            with self.subTest(case=case.name):
                expected = json.loads(case.with_name(case.stem + ".expected.json").read_text())
                records = split_records(case.read_bytes())
                counts, refused = {}, []
                for index, record in enumerate(records):
                    try:
                        for key, amount in drinks.count(record).items():
                            counts[key] = min(counts.get(key, 0) + amount, U64_MAX)
                    except drinks.Refused:
                        refused.append(index)
                # process-batch over the whole file must agree with process.
                totals, rejected = drinks.sum_batch(*pack(records))
                self.assertEqual(totals, counts)
                self.assertEqual([index for index, _ in rejected], refused)
                got = {
                    "records_processed": len(records) - len(refused),
                    "records_skipped": len(refused),
                    "counts": counts,
                    "top": [{"key": e.key, "count": e.count} for e in drinks.top_n(entries(counts), 10)],
                }
                for field, want in expected.items():
                    self.assertEqual(got[field], want, field)


class RustReferenceCases(unittest.TestCase):
    """The tests of guests/drinks/src/lib.rs, guests/drink_count and the SDK, one for one."""

    def test_one_delta_per_distinct_drink_summed(self):
        got = ok(
            '{"order_id":"o1","shop_id":7,"items":[{"drink":"latte","quantity":2},'
            '{"drink":"mocha","quantity":1},{"drink":"latte","quantity":3}]}'
        )
        self.assertEqual(got, [("latte", 5), ("mocha", 1)])

    def test_unknown_fields_are_ignored(self):
        self.assertEqual(ok('{"x":[1,{}],"items":[{"drink":"tea","quantity":1,"size":"L"}]}'), [("tea", 1)])

    def test_names_are_byte_exact(self):
        got = ok(
            '{"items":[{"drink":" Latte","quantity":1},{"drink":"latte","quantity":1},'
            '{"drink":"caf\\u00e9","quantity":1}]}'
        )
        self.assertEqual(got, [(" Latte", 1), ("latte", 1), ("café", 1)])

    def test_quantity_bounds_both_sides(self):
        self.assertEqual(ok('{"items":[{"drink":"a","quantity":1}]}'), [("a", 1)])
        self.assertEqual(ok('{"items":[{"drink":"a","quantity":1000000}]}'), [("a", 1_000_000)])
        self.assertIn("quantity 0", err('{"items":[{"drink":"a","quantity":0}]}'))
        self.assertIn("quantity 1000001", err('{"items":[{"drink":"a","quantity":1000001}]}'))
        self.assertIn("quantity -1", err('{"items":[{"drink":"a","quantity":-1}]}'))

    def test_quantity_must_be_an_integer(self):
        for quantity in ["2.5", "2.0", '"2"', "null", "true", "false", "1e2", "1E0", "-0", "18446744073709551616"]:
            err('{"items":[{"drink":"a","quantity":%s}]}' % quantity)
        err('{"items":[{"drink":"a"}]}')

    def test_drink_must_be_a_non_empty_string(self):
        self.assertIn("drink is empty", err('{"items":[{"drink":"","quantity":1}]}'))
        err('{"items":[{"drink":5,"quantity":1}]}')
        err('{"items":[{"drink":null,"quantity":1}]}')
        err('{"items":[{"quantity":1}]}')

    def test_items_must_be_a_non_empty_array(self):
        self.assertIn("no items", err('{"items":[]}'))
        err('{"order_id":1}')
        err('{"items":null}')
        err('{"items":{"drink":"a","quantity":1}}')
        err('{"items":["latte"]}')

    def test_one_bad_item_rejects_the_whole_order(self):
        err('{"items":[{"drink":"latte","quantity":1},{"drink":"","quantity":1}]}')
        err('{"items":[{"drink":"latte","quantity":1},{"drink":"mocha","quantity":0}]}')

    def test_not_an_object_or_not_json(self):
        self.assertIn("not a JSON object", err('[[{"drink":"a","quantity":1}]]'))
        err("")
        err("not json")
        err('{"items":[{"drink":"a","quantity":1}]')
        err('{"items":[{"drink":"a","quantity":1}]} trailing')
        err(b'{"items":[{"drink":"\xff","quantity":1}]}')

    def test_ranking_ties_by_key(self):
        top = drinks.top_n(entries({"mocha": 3, "latte": 3, "tea": 5, "chai": 1}), 3)
        self.assertEqual([(e.key, e.count) for e in top], [("tea", 5), ("latte", 3), ("mocha", 3)])

    def test_ranks_by_count_then_key_bytes(self):
        top = drinks.top_n(entries({"b": 2, "a": 2, "C": 2, "z": 9, "y": 1}), 4)
        self.assertEqual([e.key for e in top], ["z", "C", "a", "b"])

    def test_rank_handles_n_zero_and_n_larger_than_input(self):
        self.assertEqual(drinks.top_n(entries({"a": 1}), 0), [])
        self.assertEqual(len(drinks.top_n(entries({"a": 1, "b": 3}), 10)), 2)

    def test_a_batch_sums_the_accepted_orders_and_lists_the_refused(self):
        orders = [
            b'{"items":[{"drink":"latte","quantity":2}]}',
            b'{"items":[{"drink":"latte","quantity":0}]}',
            b'{"items":[{"drink":"mocha","quantity":1},{"drink":"latte","quantity":1}]}',
            b"not json",
        ]
        totals, rejected = drinks.sum_batch(*pack(orders))
        self.assertEqual(totals, {"latte": 3, "mocha": 1})
        self.assertEqual([index for index, _ in rejected], [1, 3])
        self.assertIn("quantity 0", rejected[0][1])

    def test_sums_saturate_and_long_keys_are_refused(self):
        def big(text, utf8):
            if text == "long":
                raise drinks.Refused("key of 65537 bytes is longer than the limit of 65536")
            return {"big": U64_MAX // 2 + 1}

        with mock.patch.object(drinks, "_count_text", big):
            totals, rejected = drinks.sum_batch(*pack([b"x", b"long", b"y", b"z"]))
        self.assertEqual(totals, {"big": U64_MAX})
        self.assertEqual([index for index, _ in rejected], [1])

    def test_bad_bounds_refuse_the_record_not_the_batch(self):
        ok_order = b'{"items":[{"drink":"a","quantity":1}]}'
        totals, rejected = drinks.sum_batch(ok_order, [len(ok_order), len(ok_order) + 9, len(ok_order)])
        self.assertEqual(totals, {"a": 1})
        self.assertEqual([index for index, _ in rejected], [1, 2])
        self.assertIn("outside the batch", rejected[0][1])


class SerdeSide(unittest.TestCase):
    """Where Python's json and serde_json differ, the Rust reference decides."""

    def test_long_keys_are_refused(self):
        def order(drink):
            return '{"items":[{"drink":"%s","quantity":1}]}' % drink

        self.assertEqual(ok(order("k" * 65536)), [("k" * 65536, 1)])
        self.assertIn("longer than the limit", err(order("k" * 65537)))
        self.assertIn("65538 bytes", err(order("é" * 32769)))
        self.assertEqual(ok(order("é" * 32768)), [("é" * 32768, 1)])
        self.assertIn("longer than the limit", err(order("\\u00e9" * 32769)))

    def test_not_json_constants(self):
        err('{"items":[{"drink":"a","quantity":NaN}]}')
        err('{"x":NaN,"items":[{"drink":"a","quantity":1}]}')
        err('{"x":[-Infinity],"items":[{"drink":"a","quantity":1}]}')
        err('{"x":Infinity,"items":[{"drink":"a","quantity":1}]}')

    def test_duplicate_fields_are_refused(self):
        self.assertIn("duplicate field `quantity`", err('{"items":[{"drink":"a","quantity":1,"quantity":2}]}'))
        err('{"items":[{"drink":"a","drink":"b","quantity":1}]}')
        err('{"items":[{"drink":"a","quantity":1}],"items":[{"drink":"b","quantity":1}]}')
        err('{"items":[{"drink":"a","quantity":1}],"it\\u0065ms":[]}')
        err('{"items":[{"drink":"a","dr\\u0069nk":"b","quantity":1}]}')
        # Field names elsewhere are not duplicates.
        self.assertEqual(ok('{"x":{"items":1,"drink":2},"items":[{"drink":"drink","quantity":1}]}'), [("drink", 1)])
        self.assertEqual(ok('{"items":[{"drink":"quantity","quantity":1,"y":{"quantity":1}}]}'), [("quantity", 1)])

    def test_utf8_is_checked_where_serde_checks_it(self):
        # The drink and the keys of the order and its items: refused.
        err(b'{"items":[{"drink":"a\xff","quantity":1}]}')
        err(b'{"items":[{"drink":"a\xed\xa0\x80","quantity":1}]}')  # an encoded surrogate
        err('{"items":[{"drink":"a\\ud800","quantity":1}]}')
        err('{"items":[{"drink":"\\udc00","quantity":1}]}')
        err('{"items":[{"drink":"\\ud800\\ud800\\udc00","quantity":1}]}')
        err(b'{"\xff":1,"items":[{"drink":"a","quantity":1}]}')
        err('{"items":[{"drink":"a","quantity":1,"\\ud800":0}]}')
        # Inside ignored values: accepted, as serde skips them unchecked.
        self.assertEqual(ok(b'{"x":"\xff","items":[{"drink":"b","quantity":1}]}'), [("b", 1)])
        self.assertEqual(ok('{"x":{"\\udc00":"\\ud800"},"items":[{"drink":"b","quantity":1}]}'), [("b", 1)])
        self.assertEqual(ok(b'{"items":[{"drink":"c","quantity":1,"size":"\xfe"}]}'), [("c", 1)])
        # A pair is one character.
        self.assertEqual(ok('{"items":[{"drink":"\\ud83d\\ude00","quantity":1}]}'), [("\U0001f600", 1)])

    def test_an_item_must_be_an_object_not_an_array(self):
        err('{"items":[["latte",2],{"drink":"latte","quantity":1}]}')
        err('{"items":[{"drink":"latte","quantity":1},["latte",2]]}')
        err('{"items":[["latte"]]}')
        err('{"items":[["latte",2,3]]}')
        err('{"items":[[2,"latte"]]}')
        err('{"items":[["",2]]}')
        err('[{"items":[{"drink":"a","quantity":1}]}]')

    def test_whitespace(self):
        self.assertEqual(ok(' \t\r\n{"items":[{"drink":"a","quantity":1}]} \t\r\n'), [("a", 1)])
        err('\x0c{"items":[{"drink":"a","quantity":1}]}')  # Rust skips it, JSON does not
        err('\x0b{"items":[{"drink":"a","quantity":1}]}')
        err('{"items":[{"drink":"a","quantity":1}]}\x0c')

    def test_numbers(self):
        self.assertEqual(ok('{"n":1' + "0" * 5000 + ',"items":[{"drink":"a","quantity":1}]}'), [("a", 1)])
        err('{"items":[{"drink":"a","quantity":1' + "0" * 5000 + "}]}")
        self.assertEqual(ok('{"n":[1e400,-0,0.5e-3],"items":[{"drink":"a","quantity":1}]}'), [("a", 1)])
        err('{"n":01,"items":[{"drink":"a","quantity":1}]}')

    def test_nesting_in_ignored_values_has_no_limit(self):
        for depth in [1, 199, 200, 201, 1000, 5000, 50000]:
            with self.subTest(depth=depth):
                deep = "[" * depth + "]" * depth
                self.assertEqual(ok('{"x":%s,"items":[{"drink":"a","quantity":1}]}' % deep), [("a", 1)])
                deep = '{"k":[' * depth + "1" + "]}" * depth
                self.assertEqual(ok('{"items":[{"drink":"b","quantity":2,"y":%s}]}' % deep), [("b", 2)])
                err('{"x":%s,"items":[{"drink":"a","quantity":1}]}' % ("[" * depth + "]" * (depth - 1)))
                err('{"items":[{"drink":%s,"quantity":1}]}' % ("[" * depth + "]" * depth))

    def test_many_items(self):
        many = ",".join(['{"drink":"a","quantity":1}'] * 500 + ['{"drink":"b","quantity":2}'] * 500)
        self.assertEqual(ok('{"items":[%s]}' % many), [("a", 500), ("b", 1000)])
        err('{"items":[%s],"items":[]}' % many)

    def test_fast_and_exact_parses_agree(self):
        # Whatever path count() takes, parsing the exact way (deep or not) gives the same.
        def outcome(parse):
            try:
                return parse()
            except (drinks.Refused, ValueError):
                return "refused"

        def exact(text, deep):
            return drinks._checked(drinks._deltas(drinks._exact(text, deep), True)[0], text)

        for record in tricky_records(random.Random(7), 2000):
            text, utf8 = drinks._decode(record)
            if text.lstrip(" \t\n\r\x0c")[:1] == "{":
                got = outcome(lambda: drinks._count_text(text, utf8))
                self.assertEqual(outcome(lambda: exact(text, False)), got, record)
                self.assertEqual(outcome(lambda: exact(text, True)), got, record)

    def test_batch_agrees_with_process(self):
        records = tricky_records(random.Random(8), 2000)
        data, ends = pack(records)
        totals, rejected = drinks.sum_batch(data, ends)
        counts, refused = {}, []
        for index, record in enumerate(records):
            try:
                for key, amount in drinks.count(record).items():
                    counts[key] = counts.get(key, 0) + amount
            except drinks.Refused as refusal:
                refused.append((index, str(refusal)))
        self.assertEqual(totals, counts)
        self.assertEqual(rejected, refused)
        self.assertGreater(len(counts), 5)
        # An ASCII batch takes another path (one decode): the same outcome.
        ascii_records = [r for r in records if r.isascii()]
        totals, rejected = drinks.sum_batch(*pack(ascii_records))
        self.assertEqual(totals, drinks.sum_batch(*pack(ascii_records + [b"\xff"]))[0])

    def test_top_n_orders_by_utf8_bytes(self):
        rng = random.Random(9)
        keys = ["a", "B", "é", "z", "\U0001f600", "\uffff", "\u00ff", "ab", "", " ", "ä", "\u0800", "\U00010000"]
        counts = {k: rng.randint(1, 3) for k in keys}
        for n in range(len(keys) + 2):
            want = sorted(counts.items(), key=lambda kc: (-kc[1], kc[0].encode()))[:n]
            self.assertEqual([(e.key, e.count) for e in drinks.top_n(entries(counts), n)], want)


def tricky_records(rng, n):
    """Orders with odd values, names, nesting, encodings and syntax, valid or not."""
    values = ["1", "2", "1000000", "1000001", "0", "-1", "-0", "2.0", "1e2", '"2"', "true", "null", "[]", "{}",
              "18446744073709551616", "NaN", "01", '"latte"', '"\\ud800"', '"\\u00e9"']
    drinks_ = ['"latte"', '"mocha"', '""', '" Latte"', '"caf\\u00e9"', '"café"', '"\\ud83d\\ude00"', '"\\ud800"',
               '"a\\"b"', "5", "null", '"drink"', '"quantity"', '"items"', '"[{"']
    item_keys = ['"drink"', '"quantity"', '"size"', '"dr\\u0069nk"', '"\\udc00"', '"quantity"']
    order_keys = ['"items"', '"x"', '"it\\u0065ms"', '"\\ud800"', '"order_id"']
    whitespace = ["", "", "", " ", "\t", "\x0c", "\r", "\x0b"]

    def ignored(depth=0):
        c = rng.random()
        if c < 0.4 or depth > 3:
            return rng.choice(values)
        if c < 0.7:
            return "[" + ",".join(ignored(depth + 1) for _ in range(rng.randint(0, 3))) + "]"
        return "{" + ",".join(rng.choice(item_keys + order_keys) + ":" + ignored(depth + 1) for _ in range(rng.randint(0, 3))) + "}"

    def item():
        c = rng.random()
        if c < 0.1:
            return "[" + ",".join(rng.choice(drinks_ + values) for _ in range(rng.choice([1, 2, 2, 3]))) + "]"
        if c < 0.15:
            return rng.choice(values)
        fields = []
        if rng.random() < 0.95:
            fields.append('"drink":' + (rng.choice(drinks_) if rng.random() < 0.3 else '"latte"'))
        if rng.random() < 0.95:
            fields.append('"quantity":' + (rng.choice(values) if rng.random() < 0.3 else str(rng.randint(1, 9))))
        for _ in range(rng.choice([0, 0, 1, 2])):
            fields.append(rng.choice(item_keys) + ":" + ignored())
        rng.shuffle(fields)
        return "{" + ",".join(fields) + "}"

    records = []
    while len(records) < n:
        fields = []
        if rng.random() < 0.95:
            fields.append('"items":[' + ",".join(item() for _ in range(rng.choice([0, 1, 1, 2, 3]))) + "]")
        for _ in range(rng.choice([0, 0, 1, 2])):
            fields.append(rng.choice(order_keys) + ":" + ignored())
        rng.shuffle(fields)
        text = rng.choice(whitespace) + "{" + ",".join(fields) + "}" + rng.choice(whitespace + ["x"])
        record = text.encode("utf-8", "surrogatepass")
        c = rng.random()
        if c < 0.05:
            at = rng.randrange(len(record))
            record = record[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\\", b'"']) + record[at:]
        elif c < 0.1:
            record = record[: rng.randrange(len(record))]
        if b"\n" not in record and not record.endswith(b"\r"):
            records.append(record)
    return records


BINDINGS = CACHE / "py-bindings"


@unittest.skipUnless((BINDINGS / "wit_world").is_dir(), f"no stub bindings in {BINDINGS} (scripts/build-python-guest.sh writes them)")
class App(unittest.TestCase):
    """app.py, the glue, against componentize-py's stub bindings (real types, no component)."""

    @classmethod
    def setUpClass(cls):
        sys.path.insert(0, str(BINDINGS))
        import app
        from componentize_py_types import Err
        from wit_world.exports.counter import Entry

        cls.app, cls.Err, cls.Entry = app, Err, Entry

    def test_process(self):
        counter = self.app.Counter()
        deltas = counter.process(b'{"items":[{"drink":"latte","quantity":2},{"drink":"tea","quantity":1}]}')
        self.assertEqual([(d.key, d.amount) for d in deltas], [("latte", 2), ("tea", 1)])
        with self.assertRaises(self.Err) as refused:
            counter.process(b"not json")
        self.assertIn("not a JSON object", refused.exception.value)

    def test_process_batch_and_top_n(self):
        counter = self.app.Counter()
        result = counter.process_batch(*pack([b'{"items":[{"drink":"latte","quantity":2}]}', b"[]"]))
        self.assertEqual([(d.key, d.amount) for d in result.deltas], [("latte", 2)])
        self.assertEqual([(r.index, r.reason) for r in result.rejected], [(1, "order is not a JSON object")])
        top = counter.top_n([self.Entry("b", 1), self.Entry("a", 1), self.Entry("c", 2)], 2)
        self.assertEqual([(e.key, e.count) for e in top], [("c", 2), ("a", 1)])
        self.assertIsInstance(top[0], self.Entry)


def host_binary():
    candidates = [os.environ.get("STREAMHOST_HOST_BIN", "")]
    target = Path(os.environ.get("CARGO_TARGET_DIR", CACHE / "target"))
    candidates += [str(target / "release" / "host"), str(target / "debug" / "host")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


HOST = host_binary()
GUESTS = Path(os.environ.get("STREAMHOST_GUEST_DIR", ROOT / "build" / "guests"))
RUST_GUEST = GUESTS / "drink_count.wasm"
PYTHON_GUEST = GUESTS / "drink_count_py.wasm"


@unittest.skipUnless(HOST and PYTHON_GUEST.is_file(), "needs the host and build/guests/drink_count_py.wasm")
class Component(unittest.TestCase):
    """The built component itself, run by the host's offline driver."""

    def host_test(self, guest, input_path, *more):
        run = subprocess.run(
            [HOST, "test", "--guest", str(guest), "--input", str(input_path), *more],
            capture_output=True,
            env={**os.environ, "RUST_LOG": "error"},
            timeout=600,
        )
        return run

    def test_conformance(self):
        for case in sorted(CONFORMANCE.glob("*.jsonl")):
            with self.subTest(case=case.name):
                expect = case.with_name(case.stem + ".expected.json")
                run = self.host_test(PYTHON_GUEST, case, "--expect", str(expect))
                self.assertEqual(run.returncode, 0, run.stderr.decode())
                self.assertIn(b"as expected", run.stderr)
                self.assertNotIn(b"CONTRACT", run.stderr)

    @unittest.skipUnless(RUST_GUEST.is_file(), "needs build/guests/drink_count.wasm (the Rust reference)")
    def test_same_outcome_as_the_rust_reference(self):
        records = tricky_records(random.Random(10), 3000)
        records += [b'{"x":' + b"[" * d + b"]" * d + b',"items":[{"drink":"d%d","quantity":1}]}' % d for d in (150, 250, 3000, 20000)]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "tricky.jsonl"
            path.write_bytes(b"\n".join(records) + b"\n")
            outputs = []
            for guest in (RUST_GUEST, PYTHON_GUEST):
                run = self.host_test(guest, path)
                self.assertNotIn(b"CONTRACT", run.stderr)
                self.assertNotIn(b"trapped", run.stderr)
                # Record by record (`#N  deltas` or `#N  refused: reason`; reasons differ), then
                # the counts and the board, all printed by the same host code.
                lines = run.stdout.decode("utf-8", "replace").splitlines()
                outputs.append([line.split("refused:")[0] if line.startswith("#") else line for line in lines])
        rust, python = outputs
        self.assertEqual(len(python), len(rust))
        for rust_line, python_line in zip(rust, python):
            self.assertEqual(python_line, rust_line)
        summary = next(line for line in rust if line.endswith("refused"))
        counted, refused = int(summary.split()[0]), int(summary.split()[3])
        self.assertGreater(counted, 100)
        self.assertGreater(refused, 100)

if __name__ == "__main__":
    unittest.main()
