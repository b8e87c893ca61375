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
