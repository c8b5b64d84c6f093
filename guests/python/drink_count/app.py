"""The drink count as a WebAssembly component (world `counting-guest` of wit/counter.wit),
built by scripts/build-python-guest.sh with componentize-py. The logic is drinks.py; this
module only converts to and from the generated bindings (`wit_world`, made at build time)."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.counter import BatchResult, Delta, Rejection

import drinks


class Counter(exports.Counter):
    def process(self, value: bytes) -> list[Delta]:
        try:
            deltas = drinks.count(value)
        except drinks.Refused as refused:
            raise Err(str(refused))
        return [Delta(key, amount) for key, amount in deltas.items()]

    def process_batch(self, data: bytes, ends: list[int]) -> BatchResult:
        totals, rejected = drinks.sum_batch(data, ends)
        return BatchResult(
            [Delta(key, amount) for key, amount in totals.items()],
            [Rejection(index, reason) for index, reason in rejected],
        )

    def top_n(self, counts: list, n: int) -> list:
        return drinks.top_n(counts, n)
