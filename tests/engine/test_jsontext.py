import datetime
import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from engine import jsontext
from engine.models.base import _json_default
from engine.training.entity import _plain


@dataclass
class Point:
    x: float


def _same(a, b) -> bool:
    """Equal, NaN equal to NaN and a float never equal to None (json.loads' values)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


VALUES = [
    {"yhat": [0.1, 1 / 3, 1e300, 5e-324, -0.0, 123456789.123], "ds": [1_600_000_000_000_000_000, 0], "n": 3},
    {"mase": float("nan"), "rmse": 1.5},                              # NaN comes back NaN, not None
    {"hi": [1.0, float("inf")], "lo": [-float("inf")]},
    {"missing": None, "note": "a string that says null"},
    {"missing": None, "yhat": np.array([1.0, np.nan]), "f32": np.float32("nan")},
    {"raw": b"bytes", "url": "s3://bucket/lake/gold"},                   # bytes: ujson refuses, json's default
    {"big": 2 ** 70},                                                  # past 64 bits
    {3: "int key", "b": 1},                                            # a key that is not a string
    {"np": np.float64(0.1), "f32": np.float32(0.1), "i": np.int64(7), "flag": np.bool_(True),
     "array": np.arange(3.0), "set": {2}, "tuple": (1, 2)},
    {"when": pd.Timestamp("2024-03-31 02:00", tz="UTC"), "day": datetime.date(2024, 3, 31), "point": Point(1.0)},
    {"z": 1, "a": {"y": [1, 2], "b": "ü, 日本"}},
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
@pytest.mark.parametrize("default", [_plain, _json_default], ids=["row", "envelope"])
@pytest.mark.parametrize("sort_keys", [True, False])
def test_text_reads_back_as_the_standard_librarys_does(value, default, sort_keys):
    try:
        expected = json.loads(json.dumps(value, default=default, sort_keys=sort_keys))
    except TypeError as error:                       # the default refuses a value: refused the same way
        with pytest.raises(TypeError, match=str(error)):
            jsontext.dumps(value, default=default, sort_keys=sort_keys)
        return
    text = jsontext.dumps(value, default=default, sort_keys=sort_keys)
    assert _same(json.loads(text), expected)
    assert _same(jsontext.loads(text), expected)
    assert _same(jsontext.loads(json.dumps(value, default=default, sort_keys=sort_keys)), expected)
    if sort_keys and all(isinstance(k, str) for k in value):
        assert list(json.loads(text)) == sorted(value)


def test_documents_are_written_compact_and_a_nan_stays_a_nan():
    text = jsontext.dumps({"b": [1.5, 2.0], "a": None, "p": "a/b"}, sort_keys=True)
    assert text == '{"a":null,"b":[1.5,2.0],"p":"a/b"}'
    assert jsontext.dumps({"b": [float("nan")]}) == '{"b":[NaN]}'
    assert jsontext.dumps({"a": np.array([1.0, np.inf])}, default=_json_default) == '{"a":[1.0,Infinity]}'


def test_read_back_doubles_are_the_standard_librarys_to_the_bit():
    rng = np.random.default_rng(0)
    every_exponent = rng.integers(0, 2 ** 64, 200_000, dtype=np.uint64).view(np.float64)
    values = [*every_exponent[np.isfinite(every_exponent)].tolist(), *rng.normal(0, 1e4, 50_000).tolist(),
              0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 1 / 3]
    for text in (jsontext.dumps(values), json.dumps(values)):
        ours, theirs = np.array(jsontext.loads(text)), np.array(json.loads(text))
        assert np.array_equal(ours.view(np.uint64), theirs.view(np.uint64))


@pytest.mark.parametrize("text", ["[NaN, Infinity, -Infinity, null, 1e400, -1e400]", "[18446744073709551616, -0]",
                                  '{"a": 1, "a": 2}', '["\\u00e9\\ud83d\\ude00", "a\\/b"]', "[1.0, 1, 1e5, 1E-5]"])
def test_read_back_values_are_the_standard_librarys(text):
    assert _same(jsontext.loads(text), json.loads(text))


def test_text_that_is_not_json_gets_the_standard_librarys_error():
    with pytest.raises(json.JSONDecodeError, match="Expecting value"):
        jsontext.loads('{"yhat": [1.0, }')


def test_documents_read_together_give_the_standard_librarys_doubles_to_the_bit():
    """Arrow's reader, on many forecasts at once: every double as `json.loads` reads it."""
    rng = np.random.default_rng(1)
    every_exponent = rng.integers(0, 2 ** 64, 120_000, dtype=np.uint64).view(np.float64)
    finite = np.concatenate([every_exponent[np.isfinite(every_exponent)], rng.normal(0, 1e4, 20_000),
                             [0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 1 / 3]])
    cuts = np.cumsum(rng.integers(1, 60, 4_000))
    texts = [jsontext.dumps({"ds": list(range(len(part))), "yhat": part.tolist()})
             for part in np.split(finite, cuts[cuts < len(finite)])]
    frame, counts = jsontext.stacked(texts)
    theirs = np.concatenate([json.loads(t)["yhat"] for t in texts])
    assert np.array_equal(frame["yhat"].to_numpy().view(np.uint64), theirs.view(np.uint64))
    assert counts.tolist() == [len(json.loads(t)["ds"]) for t in texts]
    assert frame["ds"].dtype == np.int64


def test_records_read_together_are_the_rows_of_each_document_in_turn():
    texts = ['[{"w":0,"m":1.5,"error":null,"at":"2022-01-26T00:00:00+00:00"},{"w":1,"m":2.5,"error":"x"}]', "[]",
             '[{"w":2,"m":null,"error":null,"at":"2022-01-27T00:00:00+00:00"}]']
    frame, counts = jsontext.stacked(texts, records=True, strings=["at", "error"])
    assert counts.tolist() == [2, 0, 1]
    expected = pd.DataFrame([row for t in texts for row in json.loads(t)])
    assert frame["w"].tolist() == [0, 1, 2] and frame["error"].tolist() == [None, "x", None]
    assert np.array_equal(frame["m"].to_numpy(), expected["m"].to_numpy(dtype=float), equal_nan=True)
    assert frame["at"].tolist() == expected["at"].tolist()[:1] + [None] + expected["at"].tolist()[2:]
    assert jsontext.stacked(texts, records=True, strings=["error"]) is None     # "at" would come back as a time


def test_nan_and_the_infinities_read_together_are_the_standard_librarys():
    frame, _ = jsontext.stacked(['{"yhat":[1.0,NaN,Infinity]}', '{"yhat":[-Infinity,-0.0]}'])
    assert _same(frame["yhat"].tolist(), [1.0, math.nan, math.inf, -math.inf, -0.0])
    assert math.copysign(1, frame["yhat"].iloc[4]) == -1


@pytest.mark.parametrize("texts", [
    ['{"at":["2022-01-26T00:00:00"]}', '{"at":["2022-01-27T00:00:00"]}'],   # text Arrow takes for a time
    ['{"yhat":[1.0],"reconciliation":["mint"]}', '{"yhat":[2.0]}'],   # a key one document lacks
    ['{"yhat":[1.0,null]}', '{"yhat":[2.0]}'],                   # a null inside a list
    ['{"yhat":[1.0],"n":[1]}', '{"yhat":[2.0],"n":[1,2]}'],       # lists of unequal length in one document
    ['{"yhat":[1.0]}', '{"yhat":["a"]}'],                        # a type that changes
    ['{"yhat":[1.0]}', '{"yhat":\n[2.0]}'],                      # a document over two lines
    [],
])
def test_documents_arrow_would_read_otherwise_are_left_to_loads(texts):
    assert jsontext.stacked(texts) is None


def test_a_declared_text_key_is_a_column_where_every_document_has_it_and_none_where_none_does():
    frame, _ = jsontext.stacked(['{"yhat":[1.0],"reconciliation":["mint"]}', '{"yhat":[2.0],"reconciliation":["ols"]}'],
                                strings=["reconciliation"])
    assert frame["reconciliation"].tolist() == ["mint", "ols"]
    frame, _ = jsontext.stacked(['{"yhat":[1.0]}', '{"yhat":[2.0]}'], strings=["reconciliation"])
    assert frame.columns.tolist() == ["yhat"]
