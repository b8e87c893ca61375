"""JSON text for result rows and stored models: ujson's, which reads back as the standard
library's would, or the standard library's where ujson refuses a value.

A task writes a forecast, a model envelope and a few small documents per entity; with `json`
they cost about 0.25 ms an entity, a tenth of a batched task's time, and ujson (C, already here
for Prophet) writes the same documents 2.5-7x faster. Its floats are the shortest text that reads
back as the same double (as `repr`'s are), it writes NaN and the infinities as `json` does, hands
what it cannot write (numpy values, dates, sets) to `default` as `json` does, and what it refuses
outright (bytes, an integer past 64 bits, say) goes to `json`, which writes it or raises as it
always did. Unlike orjson, which writes a NaN as null: a missing value would come back as None.

Read back on the driver (every entity's forecast and backtests, as the result tables are written)
with ujson too: it parses each number to the double `json` gives (checked bit for bit on 250,000
random doubles of every exponent in the tests), NaN and the infinities included, 2.6x faster than `json`."""
from __future__ import annotations

import json
from typing import Any, Callable, Optional

import ujson


def dumps(value: Any, default: Optional[Callable[[Any], Any]] = None, sort_keys: bool = False) -> str:
    """JSON text of `value` that `json.loads` reads back exactly as it reads
    `json.dumps(value, default=default, sort_keys=sort_keys)` (compact: no spaces)."""
    try:
        return ujson.dumps(value, default=default, sort_keys=sort_keys, escape_forward_slashes=False)
    except (TypeError, ValueError, OverflowError):
        return json.dumps(value, default=default, sort_keys=sort_keys)


def loads(text: "str | bytes") -> Any:
    """What `json.loads(text)` returns, parsed by ujson; what ujson refuses goes to `json`, which
    reads it or raises its own error."""
    try:
        return ujson.loads(text)
    except (ValueError, OverflowError):
        return json.loads(text)
