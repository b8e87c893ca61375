"""The routing bundle and router: shards, lazy loading, bounded cache, request validation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.models import make_model
from engine.routing.bundle import Bundle, write_bundle
from engine.routing.router import RequestError, Router
from tests.conftest import HOURLY_SPEC, hourly

HORIZON = 24


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Five entities: ARIMA with temperature for 'a', seasonal naive (no regressors) for the rest."""
    histories, rows = {}, []
    for i, entity in enumerate("abcde"):
        history = hourly(24 * 14, seed=i)
        model = make_model("arima" if entity == "a" else "seasonal_naive", HOURLY_SPEC).fit(history)
        histories[entity] = (history, model)
        rows.append({"entity_id": entity, "champion": model.name, "status": "ok",
                     "forecast_origin": history["ds"].iloc[-1], "model": model.to_bytes()})
    rows.append({"entity_id": "no-model", "champion": None, "status": "failed", "forecast_origin": None,
                 "model": None})
    folder = tmp_path_factory.mktemp("bundle")
    meta = write_bundle(pd.DataFrame(rows), folder, run_id="run1", freq="h", levels=(80, 95), horizon=HORIZON,
                        max_steps=0, shard_size=2)
    return folder, meta, histories


def request(entity: str, origin: pd.Timestamp, steps, temperature: float | None = 60.0) -> pd.DataFrame:
    ds = [origin + pd.Timedelta(hours=int(s)) for s in steps]
    frame = pd.DataFrame({"entity_id": entity, "ds": ds})
    if temperature is not None:
        frame["temperature"] = temperature
    return frame


def test_bundle_shards_entities_and_indexes_them(fitted):
    folder, meta, _ = fitted
    assert (meta.entities, meta.shards, meta.exogenous, meta.max_steps) == (5, 3, ("temperature",), 4 * HORIZON)
    assert sorted(p.name for p in (folder / "shards").iterdir()) == ["00000.arrow", "00001.arrow", "00002.arrow"]
    bundle = Bundle(folder)
    assert bundle.entities() == list("abcde") and "no-model" not in bundle
    assert bundle.index["a"].exogenous == ("temperature",) and bundle.index["b"].exogenous == ()


def test_router_answers_what_the_model_forecasts_in_request_order(fitted):
    folder, _, histories = fitted
    router = Router(folder)
    history, model = histories["a"]
    origin = history["ds"].iloc[-1]
    future = pd.DataFrame({"ds": origin + pd.Timedelta(hours=1) * np.arange(1, HORIZON + 1),
                           "temperature": np.linspace(50, 70, HORIZON)})
    expected = model.forecast(future).to_frame(future["ds"])
    # Ask for every other step, in reverse order, mixed with another entity.
    steps = np.arange(HORIZON, 0, -2)
    wanted = pd.DataFrame({"entity_id": "a", "ds": future["ds"].iloc[steps - 1].to_numpy(),
                           "temperature": future["temperature"].iloc[steps - 1].to_numpy()})
    mixed = pd.concat([wanted.iloc[:3], request("b", histories["b"][0]["ds"].iloc[-1], [1, 2], None),
                       wanted.iloc[3:]], ignore_index=True)
    out = router.predict(mixed)
    assert list(out["entity_id"]) == list(mixed["entity_id"]) and (out["ds"] == mixed["ds"]).all()
    got = out[out["entity_id"] == "a"].reset_index(drop=True)
    np.testing.assert_allclose(got["yhat"], expected["yhat"].iloc[steps - 1], rtol=1e-9)
    np.testing.assert_allclose(got["yhat_upper"], expected["yhat_upper_95"].iloc[steps - 1], rtol=1e-9)
    assert set(out["model"]) == {"arima", "seasonal_naive"} and set(out["run_id"]) == {"run1"}
    assert (out["forecast_origin"][out["entity_id"] == "a"] == origin).all()


def test_shards_load_lazily_and_the_model_cache_is_bounded(fitted):
    folder, _, histories = fitted
    router = Router(folder, cache_size=2)
    assert router.bundle.loaded_shards() == 0 and len(router.cache) == 0
    for entity in "bcd":
        router.predict(request(entity, histories[entity][0]["ds"].iloc[-1], [1]))
    assert router.bundle.loaded_shards() == 2   # b is in shard 0, c and d in shard 1
    assert len(router.cache) == 2


def test_a_model_without_regressors_answers_from_the_path_kept_beside_it(fitted):
    folder, meta, histories = fitted
    router = Router(folder, cache_size=1)
    history, model = histories["b"]
    origin = history["ds"].iloc[-1]
    future = pd.DataFrame({"ds": origin + pd.Timedelta(hours=1) * np.arange(1, meta.max_steps + 1)})
    expected = model.forecast(future).to_frame(future["ds"])
    for steps in ([1, 5, meta.max_steps], [2, 3]):       # the second request reads the kept path
        out = router.predict(request("b", origin, steps, None))
        np.testing.assert_allclose(out["yhat"], expected["yhat"].iloc[np.array(steps) - 1], rtol=1e-12)
        np.testing.assert_allclose(out["yhat_lower_80"], expected["yhat_lower_80"].iloc[np.array(steps) - 1],
                                   rtol=1e-12)
        assert router.cache.paths_kept == 1
    # ARIMA with temperature forecasts per request; b's path leaves the cache with b.
    router.predict(request("a", histories["a"][0]["ds"].iloc[-1], [1]))
    assert len(router.cache) == 1 and router.cache.paths_kept == 0


def test_naive_timestamps_and_iso_strings_are_read_as_utc(fitted):
    folder, _, histories = fitted
    origin = histories["b"][0]["ds"].iloc[-1]
    router = Router(folder)
    aware = router.predict(request("b", origin, [1, 2]))
    naive = router.predict(request("b", origin.tz_localize(None), [1, 2]))
    text = router.predict(request("b", origin, [1, 2]).assign(ds=lambda f: f["ds"].dt.strftime("%Y-%m-%dT%H:%M")))
    assert aware.equals(naive) and aware.equals(text)


@pytest.mark.parametrize("case, message", [
    ("missing ds", "lacks column(s) ['ds']"),
    ("unknown entity", "unknown entity 'zz'"),
    ("before training end", "entity 'b': ds"),
    ("off grid", "is off the series grid"),
    ("too far", "answers up to 96 steps"),
    ("missing regressor", "entity 'a': column 'temperature' is required"),
    ("text regressor", "column 'temperature' must be numeric; row 0 holds 'hot'"),
    ("bad timestamp", "column 'ds' must hold timestamps"),
    ("no rows", "request has no rows"),
    ("empty entity", "column 'entity_id' is empty in row(s) 0"),
])
def test_bad_requests_name_the_entity_or_column(fitted, case, message):
    folder, _, histories = fitted
    origin = {e: h[0]["ds"].iloc[-1] for e, h in histories.items()}
    bad = {
        "missing ds": request("b", origin["b"], [1]).drop(columns="ds"),
        "unknown entity": request("zz", origin["b"], [1]),
        "before training end": request("b", origin["b"], [0]),
        "off grid": request("b", origin["b"] + pd.Timedelta(minutes=30), [1]),
        "too far": request("b", origin["b"], [97]),
        "missing regressor": request("a", origin["a"], [1], temperature=None),
        "text regressor": request("a", origin["a"], [1]).assign(temperature="hot"),
        "bad timestamp": request("b", origin["b"], [1]).assign(ds="tomorrow-ish"),
        "no rows": request("b", origin["b"], []),
        "empty entity": request("b", origin["b"], [1]).assign(entity_id=None),
    }[case]
    with pytest.raises(RequestError) as info:
        Router(folder).predict(bad)
    assert message in str(info.value)


@pytest.mark.parametrize("stamps, fast", [
    (["2024-03-10T07:00:00", "2024-03-10 08:00:00"], True),           # numpy's fast path: naive, T or space
    (["2024-03-10T07:00:00Z", "2024-03-10T08:00:00Z"], True),         # ... and Zulu
    (["2024-03-10T07:00:00Z", "2024-03-10T09:00:00+01:00"], False),   # an offset: pandas
    (["2024-03-10T07:00", "2024-03-10"], False),                       # shorter forms: pandas
])
def test_text_timestamps_read_like_pandas_reads_them(stamps, fast):
    from engine.routing.router import _iso_seconds, _timestamps
    assert (_iso_seconds(np.array(stamps, dtype=object)) is not None) == fast
    want = pd.to_datetime(pd.Series(stamps), utc=True, format="ISO8601").dt.as_unit("ns").astype("int64")
    np.testing.assert_array_equal(_timestamps(pd.Series(stamps, dtype=object)), want.to_numpy())


@pytest.mark.parametrize("stamps", [["2024-03-10T25:00:00"], ["2024-13-10T07:00:00"], ["2024-03-10T07:00:00", None]])
def test_text_that_is_not_a_timestamp_is_refused(stamps):
    from engine.routing.router import _timestamps
    with pytest.raises(RequestError, match="column 'ds'"):
        _timestamps(pd.Series(stamps, dtype=object))


def test_answer_frames_are_what_pandas_builds():
    from engine.routing.frames import _from_blocks, frame_of
    columns = {"entity_id": np.array(["a", "b"], dtype=object), "yhat": np.array([1.5, np.nan]),
               "status": np.array(["ok", None], dtype=object), "yhat_upper": np.array([2.0, 3.0])}
    fast = frame_of(columns)
    pd.testing.assert_frame_equal(fast, pd.DataFrame(columns))
    # The block-built path itself, which frame_of would quietly fall back from if it broke.
    pd.testing.assert_frame_equal(_from_blocks(list(columns), list(columns.values())), pd.DataFrame(columns))
    assert fast["yhat"].dtype == np.float64 and list(fast.columns) == list(columns)
    mixed = {**columns, "ds": pd.DatetimeIndex(["2024-01-01", "2024-01-02"], tz="UTC")}
    pd.testing.assert_frame_equal(frame_of(mixed), pd.DataFrame(mixed))
