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
random doubles of every exponent in the tests), NaN and the infinities included, 2.6x faster than `json`.
Many documents of one shape (every entity's forecast) are read at once by Arrow's JSON reader
(`stacked`), another 2.5x, falling back to one `loads` each wherever Arrow would read them otherwise."""
from __future__ import annotations

import io
import json
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
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


def stacked(texts: Sequence[str], records: bool = False,
            strings: Sequence[str] = ()) -> Optional[tuple[pd.DataFrame, np.ndarray]]:
    """The rows of many documents stacked column by column, read by Arrow's JSON reader (C++, on
    every core; about 2.5x `loads` on each), and each document's number of rows. A document is an
    object of equal-length lists (a column each: a forecast) or, with `records`, a list of flat
    objects (a row each: an entity's backtests). The keys in `strings` are read as text whatever
    they hold (Arrow reads a text that looks like a time as a timestamp). None wherever Arrow
    would not read them as `loads` does, so the caller parses them one by one instead: another
    text that looks like a time, a key some documents lack, a null inside a list, a type that
    changes between documents. NaN and the infinities are read as `loads` reads them."""
    import pyarrow.compute as pc
    import pyarrow.json as pj
    if not texts or any("\n" in t for t in texts):     # one document a line
        return None
    if records:
        lines = "\n".join(f'{{"rows":{t}}}' for t in texts)
        declared = pa.schema([("rows", pa.list_(pa.struct([(name, pa.string()) for name in strings])))])
    else:
        lines = "\n".join(texts)
        declared = pa.schema([(name, pa.list_(pa.string())) for name in strings])
    options = pj.ParseOptions(explicit_schema=declared if strings else None, unexpected_field_behavior="infer")
    try:
        table = pj.read_json(io.BytesIO(lines.encode()), parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    if not records:      # a key declared in `strings` that no document has: no column, as `loads` gives
        table = table.drop_columns([n for n in strings if table.column(n).null_count == table.num_rows])
    if table.num_rows != len(texts) or not all(pa.types.is_list(f.type) for f in table.schema):
        return None
    if any(column.null_count for column in table.columns):          # a document without that key
        return None
    lengths = pc.list_value_length(table.column(0)).to_numpy()
    if records:
        if table.column_names != ["rows"] or not pa.types.is_struct(table.schema.field("rows").type.value_type):
            return None
        rows = pc.list_flatten(table.column("rows"))
        frame = pa.Table.from_batches([pa.RecordBatch.from_struct_array(c) for c in rows.chunks],
                                      schema=pa.schema(list(rows.type)))
    else:
        columns = {}
        for name, column in zip(table.column_names, table.columns):
            values = pc.list_flatten(column)
            if values.null_count or not np.array_equal(pc.list_value_length(column).to_numpy(), lengths):
                return None
            columns[name] = values
        frame = pa.table(columns)
    if any(pa.types.is_timestamp(f.type) for f in frame.schema):    # a text Arrow took for a time
        return None
    return frame.to_pandas(), lengths
