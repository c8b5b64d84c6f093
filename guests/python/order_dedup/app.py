"""The order dedup in Python (world `processor-guest` of wit/processor), built by
scripts/build-python-guest.sh with componentize-py: the same guest as guests/order_dedup
(Rust), passing the same conformance cases (guests/order_dedup/examples). Each order is
forwarded once per `order_id` within a day of stream time to the output `deduped`; state
`seen/<order_id>` holds the first record's timestamp (8 bytes big-endian), forgotten by a
stream-time timer a day later."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import output, state, timers
from wit_world.imports.types import Description, TimeKind

RETENTION_MS = 24 * 3_600_000


class Refused(Exception):
    pass


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def _unique(pairs):
    # serde refuses a field given twice; Python's json would keep the last.
    keys = [k for k, _ in pairs]
    if "order_id" in keys and keys.count("order_id") > 1:
        raise ValueError("duplicate field `order_id`")
    return dict(pairs)


def order_id(value):
    """The order id of a record's value, as the Rust guest reads it (serde: a JSON object
    with a string `order_id`, or a one-element array holding it), or Refused."""
    if value is None:
        raise Refused("record has no value")
    try:
        text = bytes(value).decode("utf-8")
        order = json.loads(text, object_pairs_hook=_unique, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise Refused(f"not an order: {e}")
    if isinstance(order, dict):
        oid = order.get("order_id")
    elif isinstance(order, list) and len(order) == 1:
        oid = order[0]
    else:
        raise Refused("not an order: expected an object with order_id")
    if not isinstance(oid, str):
        raise Refused("not an order: order_id is not a string")
    if oid == "":
        raise Refused("order_id is empty")
    return oid


def _call(f, *args):
    try:
        return f(*args)
    except Err as e:
        raise Err(str(e.value))


class Processor(exports.Processor):
    def describe(self) -> Description:
        return Description(outputs=["deduped"], tables=[], state_version=1)

    def process(self, input) -> None:
        try:
            oid = order_id(input.value)
        except Refused as refused:
            raise Err(str(refused))
        key = b"seen/" + oid.encode("utf-8")
        if state.get(key) is not None:
            return
        _call(state.put, key, input.timestamp.to_bytes(8, "big", signed=True))
        _call(timers.set_timer, key, min(input.timestamp + RETENTION_MS, 2**63 - 1), TimeKind.STREAM_TIME)
        _call(output.emit, "deduped", oid.encode("utf-8"), input.value, [])

    def on_timer(self, key: bytes, at: int, kind) -> None:
        state.delete(key)
