"""The drink count's logic in plain Python: the rules of the Rust reference
(guests/drinks/src/lib.rs, with the SDK's process_one, sum_batch and rank_by_count) and
nothing of the component, so it runs and is tested in CPython as is (test_app.py).

An order ``{"items": [{"drink": "latte", "quantity": 2}, ...]}`` becomes one delta per
distinct drink, summed, in first-seen order; one bad item refuses the whole order.

The Rust reference parses with serde_json, which differs from Python's json module in
ways this module follows (each is tested against the Rust guest in test_app.py):
- NaN, Infinity and -Infinity are not JSON;
- a duplicate ``items``, ``drink`` or ``quantity`` field refuses the order (Python keeps
  the last one);
- invalid UTF-8 and unpaired surrogate escapes refuse the order in the drink and in the
  keys of the order and its items, but not inside ignored values (serde skips those
  unchecked), nor does nesting depth there (serde skips it without recursing);
- an item must be an object: ``["latte", 2]`` is refused (the Rust reference makes serde
  read items from objects only);
- integers of any length are fine in ignored values (Python's int() has a digit limit);
- the ``{`` check skips Rust's ASCII whitespace (space, tab, LF, FF, CR).
The common record (valid UTF-8, no backslash, shallow) takes a fast path: one plain json
parse, then a textual check that no field can have been duplicated. Anything else is
parsed again the exact way, keeping every (key, value) pair.
"""

import heapq
import json
import re
from itertools import accumulate

MAX_QUANTITY = 1_000_000
MAX_KEY_BYTES = 64 * 1024
U64_MAX = 2**64 - 1

_RUST_ASCII_WHITESPACE = " \t\n\x0c\r"
_MISSING = object()


class Refused(Exception):
    """A record the guest refuses; str(refused) is the reason."""


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def _bounded_int(digits):
    # An integer too long for int() (Python's digit limit) is beyond every range checked
    # here: any value above them stands in for it.
    return int(digits) if len(digits) < 40 else U64_MAX + 1


class _Pairs(list):
    """An object as parsed the exact way: its (key, value) pairs, duplicates and all."""


_fast_decode = json.JSONDecoder(parse_constant=_no_constant).decode
_exact_decode = json.JSONDecoder(
    object_pairs_hook=_Pairs, parse_constant=_no_constant, parse_int=_bounded_int
).decode


# json's C parser recurses once per nesting level, and in the component a few thousand
# levels exhaust the wasm call stack (a trap, which costs the host a whole batch). serde
# skips ignored values without recursing, so Rust accepts any depth there: records nested
# deeper than this are parsed by _decode_deep instead, which keeps its own stack.
MAX_C_DEPTH = 200
# A string, or an unterminated one to the end (the parser stops there): linear over any text.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}.__getitem__


def _deep(text):
    """Whether text may nest deeper than MAX_C_DEPTH (never says no when it does)."""
    if text.count("[") + text.count("{") <= MAX_C_DEPTH:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP, brackets)), default=0) > MAX_C_DEPTH


_WHITESPACE = json.decoder.WHITESPACE.match
_NUMBER = json.scanner.NUMBER_RE.match
_scanstring = json.decoder.scanstring
_LITERALS = (("true", True), ("false", False), ("null", None))


# What a container nested deeper than this holds is never looked at (the order, its items,
# an item's fields): _decode_deep checks it and drops it, so no deep structure is built,
# which CPython would free recursively.
_KEPT_DEPTH = 3


def _decode_deep(text):
    """What _exact_decode returns, without recursion, for records nested too deep for it;
    except that containers below _KEPT_DEPTH come back empty."""
    ws = _WHITESPACE
    open_ = []  # the containers being filled, innermost last: lists, or _Pairs
    keys = []  # for each open container, the key awaiting its value (None for a list)
    pos = ws(text, 0).end()
    while True:
        # A value starts at pos.
        c = text[pos : pos + 1]
        if c == "{" or c == "[":
            pos = ws(text, pos + 1).end()
            if text[pos : pos + 1] == ("}" if c == "{" else "]"):
                value = _Pairs() if c == "{" else []
                pos += 1
            else:
                open_.append(_Pairs() if c == "{" else [])
                if c == "{":
                    key, pos = _deep_key(text, pos)
                    keys.append(key)
                else:
                    keys.append(None)
                continue
        elif c == '"':
            value, pos = _scanstring(text, pos + 1, True)
        else:
            number = _NUMBER(text, pos)
            if number:
                integer, frac, exp = number.groups()
                value = float(number.group()) if frac or exp else _bounded_int(integer)
                pos = number.end()
            else:
                for name, value in _LITERALS:
                    if text.startswith(name, pos):
                        pos += len(name)
                        break
                else:
                    raise ValueError(f"expected a value at char {pos}")
        # The value is complete: add it to its container, closing containers as they end.
        while True:
            pos = ws(text, pos).end()
            if not open_:
                if pos != len(text):
                    raise ValueError(f"trailing characters at char {pos}")
                return value
            container = open_[-1]
            is_object = type(container) is _Pairs
            if len(open_) <= _KEPT_DEPTH:
                container.append((keys[-1], value) if is_object else value)
            c = text[pos : pos + 1]
            if c == ",":
                pos = ws(text, pos + 1).end()
                if is_object:
                    keys[-1], pos = _deep_key(text, pos)
                break
            if c != ("}" if is_object else "]"):
                raise ValueError(f"expected ',' or a closing bracket at char {pos}")
            pos += 1
            value = open_.pop()
            keys.pop()


def _deep_key(text, pos):
    """An object key at pos, and where its value starts."""
    if text[pos : pos + 1] != '"':
        raise ValueError(f"expected a key at char {pos}")
    key, pos = _scanstring(text, pos + 1, True)
    pos = _WHITESPACE(text, pos).end()
    if text[pos : pos + 1] != ":":
        raise ValueError(f"expected ':' at char {pos}")
    return key, _WHITESPACE(text, pos + 1).end()


def _not_utf8(text):
    """Whether text holds a surrogate: an invalid byte (surrogateescape) or a lone escape."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _fields(pairs, known, what):
    """The known fields of an object parsed the exact way, refusing what serde refuses."""
    fields = {}
    for key, value in pairs:
        if _not_utf8(key):
            raise Refused(f"order is not valid: {what} has a key that is not valid UTF-8")
        if key in known:
            if key in fields:
                raise Refused(f"order is not valid: duplicate field `{key}` in {what}")
            fields[key] = value
    return fields


def _exact(text, deep):
    """The order parsed the exact way, with the order and its object items as dicts of
    the fields that count."""
    order = _fields(_decode_deep(text) if deep else _exact_decode(text), ("items",), "the order")
    items = order.get("items")
    if type(items) is list:
        for i, item in enumerate(items):
            if type(item) is _Pairs:
                items[i] = _fields(item, ("drink", "quantity"), f"item {i}")
    return order


def _deltas(order, exact):
    """(deltas, how many items are objects) of a parsed order. `exact`: drinks may hold
    surrogates (the order was parsed the exact way), which refuse the order."""
    items = order.get("items", _MISSING)
    if items is _MISSING:
        raise Refused("order is not valid: missing field `items`")
    if type(items) is not list:
        raise Refused(f"order is not valid: items is {_kind(items)}, not an array")
    if not items:
        raise Refused("order has no items")
    deltas = {}
    objects = 0
    for i, item in enumerate(items):
        if type(item) is dict:
            objects += 1
            drink = item.get("drink", _MISSING)
            quantity = item.get("quantity", _MISSING)
        else:
            raise Refused(f"order is not valid: item {i} is {_kind(item)}, not an object")
        if type(drink) is not str:
            what = "missing" if drink is _MISSING else f"{_kind(drink)}, not a string"
            raise Refused(f"order is not valid: item {i}: drink is {what}")
        if quantity is _MISSING:
            raise Refused(f"order is not valid: item {i}: quantity is missing")
        if not drink:
            raise Refused(f"item {i}: drink is empty")
        if exact and _not_utf8(drink):
            raise Refused(f"order is not valid: item {i}: drink is not valid UTF-8")
        # bool is an int in Python and 2.0 a float: serde refuses both as a quantity.
        if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
            raise Refused(f"item {i}: quantity {_shown(quantity)} is not an integer in 1..={MAX_QUANTITY}")
        deltas[drink] = deltas.get(drink, 0) + quantity
    return deltas, objects


def _kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "an array"}.get(type(value), "an object")


def _shown(quantity):
    if type(quantity) is float:
        return repr(quantity)
    if isinstance(quantity, (int, str)) or quantity is None:
        return json.dumps(quantity)
    return _kind(quantity)


def _count_text(text, utf8):
    """One record's deltas {drink: amount}, or Refused. `utf8`: the record was valid
    UTF-8 (else its invalid bytes are surrogates in text, by surrogateescape)."""
    if text[:1] != "{" and text.lstrip(_RUST_ASCII_WHITESPACE)[:1] != "{":
        raise Refused("order is not a JSON object")
    deep = len(text) > MAX_C_DEPTH and _deep(text)
    # Surrogates come from invalid bytes or escapes: without them, the plain parse is exact
    # but for duplicate fields, which the counts below rule out.
    if utf8 and "\\" not in text and not deep:
        try:
            order = _fast_decode(text)
        except json.JSONDecodeError as e:
            raise Refused(f"order is not valid: {e}") from None
        except ValueError:
            order = None  # an integer too long for int(): the exact parse reads it
        if order is not None:
            deltas, objects = _deltas(order, False)
            # No escapes, so every field name is spelt literally: these counts show that
            # no `items`, `drink` or `quantity` is duplicated (each object item has both).
            if text.count('"items"') == 1 and text.count('"drink"') == objects == text.count('"quantity"'):
                return _checked(deltas, text)
    try:
        order = _exact(text, deep)
    except (ValueError, RecursionError) as e:
        raise Refused(f"order is not valid: {e}") from None
    return _checked(_deltas(order, True)[0], text)


def _checked(deltas, text):
    """The deltas, unless a key is longer than the host accepts (a key is at most as long
    as its record, and a character at most 4 bytes: short records need no check)."""
    if len(text) > MAX_KEY_BYTES // 4:
        for key in deltas:
            size = len(key.encode("utf-8"))
            if size > MAX_KEY_BYTES:
                raise Refused(f"key of {size} bytes is longer than the limit of {MAX_KEY_BYTES}")
    return deltas


def _decode(record):
    """(text, whether the record was valid UTF-8); invalid bytes become surrogates."""
    try:
        return str(record, "utf-8"), True
    except UnicodeDecodeError:
        return str(record, "utf-8", "surrogateescape"), False


def count(record):
    """`process`: one record (bytes-like) to its deltas {drink: amount} in first-seen
    order (no amount exceeds a u64: an order's sum is far below it). Raises Refused."""
    return _count_text(*_decode(record))


def sum_batch(data, ends):
    """`process-batch`: record i is data[ends[i-1]:ends[i]]. Returns (totals, rejected):
    totals {key: amount} summed over the accepted records, saturating at the largest u64;
    rejected [(index, reason)] by increasing index. Agrees with `count` record by record."""
    totals = {}
    rejected = []
    size = len(data)
    # One decode for the whole batch when it is ASCII (the usual case): then byte offsets
    # are character offsets, and each record is a slice of one string.
    text = str(data, "ascii") if data.isascii() else None
    view = memoryview(data)
    get = totals.get
    start = 0
    for index, end in enumerate(ends):
        if start <= end <= size:
            try:
                if text is not None:
                    deltas = _count_text(text[start:end], True)
                else:
                    deltas = _count_text(*_decode(view[start:end]))
            except Refused as refused:
                rejected.append((index, str(refused)))
            else:
                for key, amount in deltas.items():
                    totals[key] = get(key, 0) + amount
        else:
            rejected.append((index, f"record bounds {start}..{end} are outside the batch of {size} bytes"))
        start = end
    for key, amount in totals.items():
        if amount > U64_MAX:
            totals[key] = U64_MAX
    return totals, rejected


def top_n(entries, n):
    """`top-n`: entries (objects with .key and .count) best first, at most n: count
    descending, then key ascending by UTF-8 bytes. Python compares str by code point,
    which is the same order as UTF-8 bytes, so the key needs no encoding."""
    if n <= 0:
        return []
    order = lambda e: (-e.count, e.key)  # noqa: E731
    if len(entries) > n:
        return heapq.nsmallest(n, entries, key=order)
    return sorted(entries, key=order)
