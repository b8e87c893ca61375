"""The medallion on the JVM-free path: real Delta tables (delta-rs) in tmp_path."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.errors import ConfigError
from engine.lake import GOLD_SERIES, REJECTED, SILVER_SERIES, DeltaRsLake, bronze_table
from engine.backends.local import LocalBackend
from engine.medallion.cleaning import fill_gaps
from engine.medallion.pipeline import ingest
from tests.conftest import csv_config, make_config, messy_rows


@pytest.fixture
def messy(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    pd.DataFrame(messy_rows()).to_csv(folder / "day1.csv", index=False)
    return csv_config(tmp_path, folder), folder


def run(config):
    frames = LocalBackend(config.lake)
    return ingest(config, frames, progress=lambda _: None), frames.lake


def test_silver_is_a_regular_grid_with_flags(messy):
    config, _ = messy
    report, lake = run(config)
    silver = lake.read(SILVER_SERIES).sort_values(["entity_id", "ds"]).set_index(["entity_id", "ds"])
    a = silver.loc["A"]
    def t(hhmm):
        return pd.Timestamp(f"2024-01-01 {hhmm}", tz="UTC")
    on_grid = a[~a["flag_off_grid"]]
    assert len(on_grid) == 48 and (on_grid.index.to_series().diff().dropna() == pd.Timedelta("1h")).all()
    assert a.loc[t("12:00"), "flag_gap"] and np.isnan(a.loc[t("12:00"), "y"])
    assert a.loc[t("05:00"), "flag_negative"] and a.loc[t("05:00"), "y"] == -3.0
    assert a.loc[t("07:00"), "flag_invalid"] and not a.loc[t("07:00"), "flag_gap"]
    assert a.loc[pd.Timestamp("2024-01-02 06:00", tz="UTC"), "flag_outlier"]   # the 5000 spike
    # -3 and 999 are far off the daily curve too; the smooth rest is not flagged.
    assert set(a.index[a["flag_outlier"]]) == {t("05:00"), t("20:00"), pd.Timestamp("2024-01-02 06:00", tz="UTC")}
    assert a.loc[t("20:00"), "flag_duplicate"] and a.loc[t("20:00"), "y"] == 999.0
    assert not a.loc[t("21:00"), "flag_duplicate"]
    assert a.loc[t("10:30"), "flag_off_grid"]
    b = silver.loc["B"]
    assert len(b) == 48 and not b[["flag_gap", "flag_invalid", "flag_duplicate", "flag_negative",
                                   "flag_outlier", "flag_off_grid"]].any().any()
    assert report.silver["flag_gap"] == 1 and report.silver["flag_invalid"] == 1
    assert report.silver["flag_duplicate"] == 1 and report.silver["flag_off_grid"] == 1


def test_gold_fills_gaps_marks_them_and_drops_off_grid_rows(messy):
    config, _ = messy
    report, lake = run(config)
    gold = lake.read(GOLD_SERIES).sort_values(["entity_id", "ds"])
    a = gold[gold["entity_id"] == "A"]
    assert len(a) == 48 and not a["y"].isna().any()
    assert set(a.loc[a["is_imputed"], "ds"].dt.hour) == {7, 12}   # invalid and missing hours
    assert report.gold_version == lake.version(GOLD_SERIES) == 0
    assert list(gold.columns) == ["entity_id", "ds", "y", "temp", "is_imputed"]


def test_reingest_is_idempotent_and_a_new_batch_appends(messy, tmp_path):
    config, folder = messy
    first, lake = run(config)
    versions = {t: lake.version(t) for t in (bronze_table("csv"), SILVER_SERIES, GOLD_SERIES)}
    bronze_rows = len(lake.read(bronze_table("csv")))

    again, _ = run(config)
    assert again.new_batches == 0 and again.bronze_inserted == {"csv": 0} and not again.rebuilt
    assert {t: lake.version(t) for t in versions} == versions
    assert len(lake.read(bronze_table("csv"))) == bronze_rows
    assert again.gold == first.gold
    backend, batch = LocalBackend(config.lake), lake.read(bronze_table("csv"))["_batch_id"].iloc[0]
    assert backend.holds_batch(bronze_table("csv"), batch) and not backend.holds_batch(bronze_table("csv"), "0" * 32)

    later = pd.DataFrame([{"meter": "C", "time": f"2024-01-01 {h:02d}:00", "kw": str(50 + h), "temp": "21"}
                          for h in range(24)])
    later.to_csv(folder / "day2.csv", index=False)
    third, _ = run(config)
    assert third.new_batches == 1 and third.bronze_inserted == {"csv": 24 + 0}
    assert lake.version(GOLD_SERIES) == versions[GOLD_SERIES] + 1
    assert third.gold["entities"] == 3
    bronze = lake.read(bronze_table("csv"))
    assert len(bronze) == bronze_rows + 24
    assert set(bronze["_file"].map(lambda f: f.rsplit("/", 1)[-1])) == {"day1.csv", "day2.csv"}
    assert {"_source", "_batch_id", "_ingested_at", "_row"} <= set(bronze.columns)


def test_changed_cleaning_settings_rebuild_silver_and_gold_from_the_same_bronze(messy, tmp_path):
    """Bronze unchanged but quality rules changed: gold is rebuilt (and said so), not kept as the
    old rules made it; the same settings again keep it."""
    import dataclasses
    config, _ = messy
    first, lake = run(config)
    version = lake.version(GOLD_SERIES)
    stricter = dataclasses.replace(config, quality=dataclasses.replace(config.quality, outlier_z=0.5))
    said = []
    again = ingest(stricter, LocalBackend(stricter.lake), progress=said.append)
    assert again.rebuilt and again.new_batches == 0 and lake.version(GOLD_SERIES) == version + 1
    assert any(line.startswith("silver/gold: built with other cleaning settings") for line in said)
    silver = lake.read(SILVER_SERIES)
    assert silver["flag_outlier"].sum() > first.silver["flag_outlier"]
    same, _ = run(stricter)
    assert not same.rebuilt and lake.version(GOLD_SERIES) == version + 1


def test_gold_time_travel(messy):
    config, folder = messy
    run(config)
    pd.DataFrame([{"meter": "A", "time": "2024-01-01 00:00", "kw": "777", "temp": "20"}]).to_csv(
        folder / "fix.csv", index=False)
    report, lake = run(config)
    assert report.gold_version == 1
    old, new = lake.read(GOLD_SERIES, version=0), lake.read(GOLD_SERIES, version=1)
    def first(g):
        return g[(g.entity_id == "A")].sort_values("ds")["y"].iloc[0]
    assert first(new) == 777.0 and first(old) != 777.0  # the later batch wins; version 0 still readable


@pytest.mark.parametrize("content, reason", [
    ("meter,time,temp\nA,2024-01-01 00:00,20\n", "missing column(s) 'kw' (mapped by source.columns.target)"),
    ("meter,time,kw,temp\nA,2024-01-01 00:00,1,20\nA,yesterday,2,20\n", "unparseable timestamps in rows 2"),
    ("meter,time,kw,temp\nA,2024-01-01T00:00+01:00,1,20\nA,2024-01-01 01:00,2,20\n",
     "mixes timestamps with and without a time-zone offset (rows 2 have none)"),
    ("", "the file is empty"),
])
def test_bad_batches_are_rejected_kept_in_bronze_and_leave_gold_intact(messy, content, reason):
    config, folder = messy
    _, lake = run(config)
    gold_before = lake.read(GOLD_SERIES)
    (folder / "zz_bad.csv").write_text(content)
    report, _ = run(config)
    assert [r["reason"] for r in report.rejected if r["new"]] and reason in report.rejected[0]["reason"]
    rejected = lake.read(REJECTED)
    assert len(rejected) == 1 and rejected["file"].iloc[0].endswith("zz_bad.csv")
    bronze = lake.read(bronze_table("csv"))
    data_rows = max(content.count("\n") - 1, 0)  # an empty file has no rows to keep
    assert bronze["_file"].str.endswith("zz_bad.csv").sum() == data_rows
    pd.testing.assert_frame_equal(lake.read(GOLD_SERIES).sort_values(["entity_id", "ds"]).reset_index(drop=True),
                                  gold_before.sort_values(["entity_id", "ds"]).reset_index(drop=True))
    again, _ = run(config)   # the same bad file again: reported, not re-recorded
    assert again.rejected and not again.new_rejections and len(lake.read(REJECTED)) == 1


_NAIVE = "A,2024-01-01 00:00,1,20\nA,2024-01-01 01:00,2,20\n"


@pytest.mark.parametrize("content, reason", [
    ("meter,time,kw,temp\n" + _NAIVE + "A,2024-01-01T02:00+00:00,3,20\nA,2024-01-01T03:00+00:00,4,20\n",
     "mixes timestamps with and without a time-zone offset (rows 1, 2 have none)"),
    ("meter,time,kw,temp\n" + _NAIVE + "A,2024-01-01 02:00,3,20\nA,soon,4,20\n", "unparseable timestamps in rows 4"),
    ("meter,time,kw,temp\n" + "".join(f"A,2024-01-{d:02d} 00:00,1,20\n" for d in range(1, 9)),
     "which does not fit series.freq"),
])
def test_a_large_batch_checked_in_row_ranges_on_the_driver_is_judged_as_a_whole(messy, tmp_path, monkeypatch,
                                                                                 content, reason):
    """The driver checks a target batch of more than PARSE_ROWS rows range by range (2 here): a
    mix of conventions across ranges, or a bad row in a later range, is rejected with the whole
    batch's message and row numbers, as a batch checked whole is."""
    from engine.medallion import pipeline

    _, folder = messy
    (folder / "zz_bad.csv").write_text(content)
    reasons = {}
    for rows in (2, 10 ** 9):
        monkeypatch.setattr(pipeline, "PARSE_ROWS", rows)
        report, _ = run(csv_config(tmp_path / f"ranges-{rows}", folder))
        reasons[rows] = [r["reason"] for r in report.rejected]
    assert reasons[2] == reasons[10 ** 9] and len(reasons[2]) == 1 and reason in reasons[2][0]


def test_offsets_are_converted_to_utc(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rows = [{"meter": "A", "time": (pd.Timestamp("2024-03-30 22:00", tz="Europe/Berlin")
                                    + pd.Timedelta(hours=h)).isoformat(), "kw": "1", "temp": "0"}
            for h in range(30)]
    pd.DataFrame(rows).to_csv(folder / "dst.csv", index=False)
    config = csv_config(tmp_path, folder)
    report, lake = run(config)
    gold = lake.read(GOLD_SERIES)
    assert len(gold) == 30 and not gold["is_imputed"].any()  # DST change: still 30 distinct UTC hours
    assert gold["ds"].min() == pd.Timestamp("2024-03-30 21:00", tz="UTC")


def test_unknown_exogenous_column_names_the_key(tmp_path):
    config = make_config(tmp_path / "lake", source={"kind": "synthetic", "exogenous": ["humidity"]})
    with pytest.raises(ConfigError, match="source.exogenous.*humidity.*available: temperature"):
        run(config)


def test_season_longer_than_every_series_leaves_gold_unwritten(tmp_path):
    config = make_config(tmp_path / "lake", series={"freq": "h", "season_lengths": [24, 8766]})
    with pytest.raises(ConfigError, match="series.season_lengths"):
        run(config)
    assert not DeltaRsLake(config.lake).exists(GOLD_SERIES)


def test_synthetic_source_is_seeded_and_realistic(tmp_path):
    report, lake = run(make_config(tmp_path / "lake"))
    gold = lake.read(GOLD_SERIES)
    assert report.gold["entities"] == 4 and gold.groupby("entity_id").size().eq(24 * 28).all()
    again, _ = run(make_config(tmp_path / "lake"))
    assert again.new_batches == 0  # same seed, same content hash
    daily = gold.assign(h=gold.ds.dt.hour).groupby(["entity_id", "h"])["y"].mean().groupby("entity_id").agg(
        lambda s: s.max() / s.min())
    assert (daily > 1.1).all()  # a daily shape, not white noise


def test_fill_gaps_short_linear_long_seasonal_too_long_left_alone():
    season = 4
    y = np.array([1, 2, 3, 4] * 6, dtype=float)
    short = y.copy()
    short[5] = np.nan
    assert fill_gaps(short, season, 10)[5] == pytest.approx(2.0)
    long = y.copy()
    long[8:13] = np.nan
    np.testing.assert_allclose(fill_gaps(long, season, 10), y)
    too_long = y.copy()
    too_long[4:20] = np.nan
    assert np.isnan(fill_gaps(too_long, season, 10)[4:20]).all()


def test_files_are_read_and_written_one_at_a_time_and_a_misfit_before_a_fitting_one_is_kept(tmp_path, monkeypatch):
    """A folder of large files never sits in memory at once: each file is read, checked and written
    to bronze before the next is read. A file that does not fit series.freq and comes first is held
    only until a fitting one shows the config is right, then kept in bronze as a rejected batch."""
    from engine.sources import files

    folder = tmp_path / "in"
    folder.mkdir()
    rows = pd.DataFrame(messy_rows())
    for name, meter in (("b.csv", "A"), ("c.csv", "B")):
        rows[rows["meter"] == meter].to_csv(folder / name, index=False)
    daily = pd.DataFrame({"meter": "D", "time": pd.date_range("2024-01-01", periods=10, freq="D").strftime("%Y-%m-%d"),
                          "kw": "1", "temp": "20"})
    daily.to_csv(folder / "a-daily.csv", index=False)          # first in name order, another frequency
    config = csv_config(tmp_path, folder)
    events, read, insert = [], files._frame, LocalBackend.insert_new
    monkeypatch.setattr(files, "_frame", lambda path, kind: events.append(f"read {path.name}") or read(path, kind))
    monkeypatch.setattr(LocalBackend, "insert_new", lambda self, table, frame, keys: events.append(
        f"write {frame['_file'].iloc[0].rsplit('/', 1)[1]}" if table.startswith("bronze/csv") else "reject")
        or insert(self, table, frame, keys))
    report, lake = run(config)
    assert events == ["read a-daily.csv", "read b.csv", "write a-daily.csv", "reject", "write b.csv",
                      "read c.csv", "write c.csv"]
    [rejected] = report.rejected
    assert rejected["file"].endswith("a-daily.csv") and "typically 1 day apart" in rejected["reason"]
    assert set(lake.read(GOLD_SERIES)["entity_id"]) == {"A", "B"}
    assert len(lake.read(bronze_table("csv"))) == len(rows) + len(daily)      # raw rows of every file kept


@pytest.mark.parametrize("kind", ["local", pytest.param("spark", marks=pytest.mark.spark)])
def test_a_batch_parsed_in_row_ranges_gives_the_silver_of_the_whole_batch(tmp_path, monkeypatch, kind, request):
    """A big batch is parsed in row ranges (one task each). With ranges of 7 rows: a duplicate whose
    later value sits in a later range still wins, a column with no value in a whole range but with
    values elsewhere in the file is still the file's, and a column only another file has is not
    this file's: silver equals the one parsed from whole batches."""
    from engine.backends.spark import SparkBackend
    from engine.lake import PART
    from engine.medallion import pipeline

    folder = tmp_path / "in"
    folder.mkdir()
    pd.DataFrame(messy_rows()).to_parquet(folder / "day1.parquet", index=False)
    hours = pd.date_range("2024-01-02", periods=30, freq="h").strftime("%Y-%m-%d %H:%M")
    later = pd.DataFrame({"meter": "C", "time": hours, "kw": [f"{50 + i % 7}" for i in range(30)],
                          "temp": [None] * 10 + ["21"] * 20, "note": "x"})     # no temperature in its first ranges
    later.to_parquet(folder / "day2.parquet", index=False)

    def silver(ranges: int, lake: str):
        monkeypatch.setattr(pipeline, "PARSE_ROWS", ranges)
        config = csv_config(tmp_path / lake, folder, kind="parquet")
        backend = LocalBackend(config.lake) if kind == "local" else SparkBackend(request.getfixturevalue("spark"),
                                                                                 config.lake)
        ingest(config, backend, progress=lambda _: None)
        bronze = backend.to_pandas(backend.bronze_ranges(backend.read_bronze("parquet", []), ranges))
        rows = DeltaRsLake(config.lake).read(SILVER_SERIES)
        return rows.sort_values(["entity_id", "ds"], ignore_index=True), bronze[PART].nunique()

    whole, one_range = silver(10 ** 9, "whole")
    ranged, ranges = silver(7, "ranged")
    assert one_range == 1 and ranges == -(-len(messy_rows()) // 7)
    pd.testing.assert_frame_equal(ranged, whole)
    a = whole[(whole["entity_id"] == "A") & (whole["ds"] == pd.Timestamp("2024-01-01 20:00", tz="UTC"))]
    assert a["y"].tolist() == [999.0] and a["flag_duplicate"].tolist() == [True]
    c = whole[whole["entity_id"] == "C"]
    assert len(c) == 30 and c["temp"].isna().sum() == 10 and (c["temp"].dropna() == 21).all()


@pytest.mark.parametrize("kind", ["local", pytest.param("spark", marks=pytest.mark.spark)])
def test_entities_gold_will_not_train_on_as_received_are_named_from_silver_aggregates(tmp_path, kind, request):
    """Every entity with a word to say, from per-entity aggregates of silver on either backend: one
    whose every row is off the hourly grid (that entity used to stop the ingest), one with no valid
    value, one ending in invalid values (3 rows after its last valid hour), and an id too long."""
    from engine.backends.spark import SparkBackend

    folder = tmp_path / "in"
    folder.mkdir()
    hours = [f"2024-01-01 {h:02d}:00" for h in range(10)]
    extra = ([{"meter": "C", "time": t, "kw": "5", "temp": "20"} for t in ("2024-01-01 00:30", "2024-01-01 01:30")]
             + [{"meter": "D", "time": t, "kw": "", "temp": "20"} for t in hours]
             + [{"meter": "E", "time": t, "kw": "n/a" if i >= 7 else "5", "temp": "20"} for i, t in enumerate(hours)]
             + [{"meter": "F" * 300, "time": t, "kw": "5", "temp": "20"} for t in hours[:4]])
    pd.DataFrame(messy_rows() + extra).to_csv(folder / "day1.csv", index=False)
    config = csv_config(tmp_path, folder)
    backend = LocalBackend(config.lake) if kind == "local" else SparkBackend(request.getfixturevalue("spark"),
                                                                             config.lake)
    said = []
    report = ingest(config, backend, progress=said.append)
    edges = report.edges.set_index("entity_id")
    assert edges["problem"].to_dict() == {"C": "off_grid", "D": "no_value", "E": "trailing", "F" * 300: "id_too_long"}
    assert edges["rows"].to_dict() == {"C": 2, "D": 10, "E": 3, "F" * 300: 4}
    stamp = pd.Timestamp("2024-01-01 06:00", tz="UTC")
    assert edges.loc["E", "last_valid"] == stamp and edges.loc["E", "last_received"] == stamp + pd.Timedelta(hours=3)
    assert pd.isna(edges.loc["D", "last_valid"]) and edges.loc["F" * 300, "last_valid"] == stamp - pd.Timedelta(hours=3)
    assert report.edge_counts() == {"id_too_long": 1, "off_grid": 1, "no_value": 1, "trailing": 1}
    assert any(line.startswith("no row on the grid: entity 'C' has 2 row(s)") for line in said)
    assert set(DeltaRsLake(config.lake).read(GOLD_SERIES)["entity_id"]) == {"A", "B", "D", "E"}


@pytest.mark.parametrize("kind", ["local", pytest.param("spark", marks=pytest.mark.spark)])
def test_new_rows_for_a_few_entities_rebuild_only_theirs_as_a_whole_rebuild_would(tmp_path, kind, request):
    """A file with one meter's next day and a corrected earlier hour: silver and gold are rebuilt
    for that meter only (one commit each), the other meters' rows are left as they were, and both
    tables equal what a whole rebuild from the same bronze makes. A file touching every meter
    rebuilds whole."""
    from engine.backends.spark import SparkBackend

    folder = tmp_path / "in"
    folder.mkdir()
    clean = [{"meter": m, "time": (pd.Timestamp("2024-01-01") + pd.Timedelta(hours=h)).strftime("%Y-%m-%d %H:%M"),
              "kw": f"{20 + h % 24}", "temp": "20"} for m in ("C", "D") for h in range(48)]
    pd.DataFrame(messy_rows() + clean).to_csv(folder / "day1.csv", index=False)
    config = csv_config(tmp_path, folder)
    backend = LocalBackend(config.lake) if kind == "local" else SparkBackend(request.getfixturevalue("spark"),
                                                                             config.lake)
    lake = DeltaRsLake(config.lake)
    ingest(config, backend, progress=lambda _: None)
    before = {t: lake.read(t).sort_values(["entity_id", "ds"], ignore_index=True) for t in (SILVER_SERIES, GOLD_SERIES)}
    versions = {t: lake.version(t) for t in before}

    later = [{"meter": "B", "time": f"2024-01-03 {h:02d}:00", "kw": str(100 + h), "temp": "21"} for h in range(24)]
    later.append({"meter": "B", "time": "2024-01-01 10:00", "kw": "777", "temp": "20"})     # a corrected hour
    pd.DataFrame(later).to_csv(folder / "day2.csv", index=False)
    said = []
    report = ingest(config, backend, progress=said.append)
    assert report.rebuilt and report.updated_entities == 1
    assert "silver/gold: new rows for 1 of 4 entities: rebuilding theirs only" in said
    assert {t: lake.version(t) for t in before} == {t: v + 1 for t, v in versions.items()}
    after = {t: lake.read(t).sort_values(["entity_id", "ds"], ignore_index=True) for t in before}
    for table, rows in after.items():
        others = rows[rows["entity_id"] != "B"].reset_index(drop=True)
        pd.testing.assert_frame_equal(others, before[table][before[table]["entity_id"] != "B"].reset_index(drop=True))
    b = after[GOLD_SERIES][after[GOLD_SERIES]["entity_id"] == "B"].set_index("ds")["y"]
    assert len(b) == 72 and b[pd.Timestamp("2024-01-01 10:00", tz="UTC")] == 777.0
    assert report.gold == {"rows": len(after[GOLD_SERIES]), "entities": 4,
                           "is_imputed": int(after[GOLD_SERIES]["is_imputed"].sum())}

    whole = ingest(config, backend, progress=lambda _: None, rebuild=True)
    assert whole.rebuilt and whole.updated_entities == 0 and whole.gold == report.gold
    for table, rows in after.items():
        pd.testing.assert_frame_equal(rows, lake.read(table).sort_values(["entity_id", "ds"], ignore_index=True))

    everyone = [{"meter": m, "time": "2024-01-04 00:00", "kw": "5", "temp": "20"} for m in ("A", "B", "C", "D")]
    pd.DataFrame(everyone).to_csv(folder / "day3.csv", index=False)
    report = ingest(config, backend, progress=lambda _: None)
    assert report.rebuilt and report.updated_entities == 0 and report.gold["entities"] == 4
    # An id with a backslash (an escape in Spark SQL's literals) is rebuilt whole, not named in a predicate.
    pd.DataFrame([{"meter": "C\\D", "time": "2024-01-04 00:00", "kw": "5", "temp": "20"}]).to_csv(
        folder / "day4.csv", index=False)
    report = ingest(config, backend, progress=lambda _: None)
    assert report.rebuilt and report.updated_entities == 0 and report.gold["entities"] == 5

