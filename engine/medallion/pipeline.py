"""sources -> bronze -> silver -> gold, on any backend (engine.backends).

Bronze is append-only and idempotent: a batch (content hash) is inserted once by a MERGE on
``(_batch_id, _row)``. With ``as_of`` (a replayed night), each file is cut to what had been
received by then and not by the previous recorded night (``bronze/_slices``), so a night
appends only its new slice and rerunning it appends nothing. A batch that cannot be parsed
still lands in bronze, is recorded in ``bronze/_rejected_batches`` with the reason, and is left
out of silver. Silver and gold are rebuilt from bronze only when bronze changed since gold was
last written, each in one Delta commit, so a failure leaves the previous versions intact and
readers never see half a table. When only target rows of a few entities came (`_update`), only
those entities' rows of silver and gold are rebuilt and replaced, in one commit per table.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from engine.config import Config
from engine.errors import ConfigError
from engine.faults import crash_point
from engine.frequency import Frequency
from engine.lake import (BRONZE_META, GOLD_HOLIDAYS, GOLD_SERIES, PART, PART_KEY, REJECTED, SILVER_SERIES, SLICES,
                         DeltaRsLake, bronze_table,
                         observed_before)
from engine.medallion.cleaning import (ID_TOO_LONG, NO_VALUE, OFF_GRID, TRAILING, GoldPreparer, SilverCleaner,
                                       edge_rows, longest_season)
from engine.medallion.schemas import (SILVER_FLAGS, TS, edge_schema, gold_schema, parsed_calendar_schema,
                                      parsed_exogenous_schema, parsed_target_schema, rejected_schema, silver_schema)
from engine.memory import give_back
from engine.normalize import entity_ids
from engine.sources import CALENDAR, EXOGENOUS, TARGET, BatchRejected, Dataset, RawBatch, Source
from engine.sources.base import bronze_column

UNREADABLE = "bronze/_unreadable"     # raw bytes of files that could not be read, by batch id
# Which cleaning settings built each gold version (Config.layers_fingerprint).
LAYERS = "_manymodels/layers"
LAYERS_SCHEMA = pa.schema([("gold_version", pa.int64()), ("fingerprint", pa.string()), ("recorded_at", TS)])


@dataclass
class IngestReport:
    batches: int = 0
    new_batches: int = 0
    rejected: list[dict] = field(default_factory=list)   # {"file", "dataset", "reason", "new"}
    bronze_inserted: dict[str, int] = field(default_factory=dict)
    silver: dict[str, int] = field(default_factory=dict)
    gold: dict[str, int] = field(default_factory=dict)
    gold_version: Optional[int] = None
    data_end: Optional[pd.Timestamp] = None      # last observed target timestamp (before as_of)
    rebuilt: bool = False
    updated_entities: int = 0       # silver/gold rebuilt for this many entities only (0: whole, or not)
    seconds: dict[str, float] = field(default_factory=dict)
    max_id_length: int = 0
    # Entities silver kept that gold will not train on as received (cleaning.edge_rows): ids too
    # long, no row on the grid, no valid value, trailing missing/invalid values.
    edges: pd.DataFrame = field(default_factory=lambda: edge_schema().empty_table().to_pandas())

    @property
    def new_rejections(self) -> list[dict]:
        return [r for r in self.rejected if r["new"]]

    def edge_counts(self) -> dict[str, int]:
        return {p: int((self.edges["problem"] == p).sum()) for p in (ID_TOO_LONG, OFF_GRID, NO_VALUE, TRAILING)}

    def edge_lines(self, limit: int = 20) -> list[str]:
        """What a person should hear about those entities, one line each (at most `limit` per kind)."""
        lines = []
        for problem, rows in self.edges.groupby("problem", sort=False):
            for row in rows.head(limit).itertuples():
                lines.append(_edge_line(row, self.max_id_length))
            if len(rows) > limit:
                lines.append(f"{problem}: ... and {len(rows) - limit} more entities (see silver/series)")
        return lines


PARSE_ROWS = 500_000    # a bronze batch is parsed in row ranges of this many rows (one task each)
_PART_SEQ = 1 << 32     # `_seq` of a range's rows: range index x this + position in the range's output


@dataclass(frozen=True)
class BatchParser:
    """Wraps a source parser for one bronze batch, or one range of its rows (`_part`): strips
    ingest metadata, parses, stamps `_batch_id`, `_ingested_at` and the row order `_seq` used to
    pick the latest value. Ranges keep a batch of millions of rows from being one task whose
    output is one Arrow buffer of hundreds of MB (two of those ran local mode's JVM out of direct
    memory); a target dataset's parser is row-local, so the ranges parse as the whole batch would,
    and `_seq` orders them as the whole batch's rows."""

    parse: Callable[[pd.DataFrame], pd.DataFrame]
    columns: tuple[str, ...]
    freq: Optional[Frequency] = None     # puts the same period's stamps on one grid point (month end/start)
    # Each batch's own columns (with a value somewhere in the batch), when parsed in ranges.
    batch_columns: Optional[Mapping[str, tuple[str, ...]]] = None

    def __call__(self, bronze_rows: pd.DataFrame) -> pd.DataFrame:
        order = bronze_rows["_row"]
        rows = bronze_rows if order.is_monotonic_increasing else bronze_rows.sort_values("_row")
        batch = rows["_batch_id"].iloc[0]
        raw_columns = [c for c in rows.columns if c not in (*BRONZE_META, PART, PART_KEY)]
        if self.batch_columns is None:
            # Columns another file added to the bronze table are all-null here: not part of this batch.
            keep = [c for c in raw_columns if rows[c].notna().any()]
        else:      # a range: a column of the batch may be empty in this range and still belongs to it
            keep = [c for c in raw_columns if c in self.batch_columns[batch]]
        raw = rows[keep]        # the one copy (a batch can be millions of rows)
        raw.index = pd.RangeIndex(len(raw))
        parsed = self.parse(raw)
        if "entity_id" in parsed:     # one spelling of an id everywhere (training and serving read it so too)
            parsed["entity_id"] = entity_ids(parsed["entity_id"]).astype(object)
        if self.freq is not None:
            parsed["ds"] = self.freq.normalize(parsed["ds"])
        parsed["_batch_id"] = batch
        parsed["_ingested_at"] = rows["_ingested_at"].iloc[0]
        part = int(rows[PART].iloc[0]) if PART in rows else 0
        parsed["_seq"] = part * _PART_SEQ + np.arange(len(parsed), dtype="int64")
        return parsed[list(self.columns)]


def ingest(config: Config, backend, progress: Callable[[str], None] = print, rebuild: bool = False,
           as_of: Optional[pd.Timestamp] = None) -> IngestReport:
    """Run sources -> bronze -> silver -> gold on `backend` (engine.backends.backend_for).

    `as_of` (UTC) ingests only what had been received by then: observations before it."""
    source, report = Source(config.source), IngestReport()
    target, exog_sets, calendars = _split_datasets(source.datasets, config)
    target_exog = tuple(c for c in config.source.exogenous if c in target.provides)
    schemas = {TARGET: parsed_target_schema(target_exog), CALENDAR: parsed_calendar_schema()}
    exog_columns = {d.name: tuple(c for c in d.provides if c in config.source.exogenous) for d in exog_sets}
    freq = config.series.frequency
    parsers = {d.name: BatchParser(d.parse, tuple(_schema_for(d, schemas, exog_columns).names),
                                   freq if d.role in (TARGET, EXOGENOUS) else None)
               for d in source.datasets}

    started = time.perf_counter()
    driver_lake = DeltaRsLake(config.lake)      # small driver-side checks, without Spark
    since = _previous_night(driver_lake, config.source.kind, as_of) if as_of is not None else None
    # Silver and gold as they stand were built with this config's cleaning settings...
    layers_current = not rebuild and _layers_current(driver_lake, config)
    # ...and from all of bronze: new target rows then change only their entities.
    dataset_names = [d.name for d in source.datasets]
    gold_was_current = layers_current and _gold_is_current(driver_lake, dataset_names)
    changed: set[str] = set()       # entities of the target batches this run inserts
    ingested_at = pd.Timestamp(datetime.now(timezone.utc)).as_unit("us")
    rejected_ids = _rejected_ids(backend)

    def write(batch: RawBatch, rows: pd.DataFrame, reason: Optional[str], entities) -> None:
        if batch.unreadable and batch.batch_id not in rejected_ids:
            kept = driver_lake.store.put_object(f"{UNREADABLE}/{batch.batch_id}/{Path(batch.file).name}",
                                                batch.content)
            reason = f"{reason}; its bytes are kept at {kept}"
        if len(rows):
            table = bronze_table(batch.dataset)
            # A batch is written in one commit: one bronze already holds is there whole, and its
            # MERGE (a join of all its rows, millions for a big file) would insert nothing.
            inserted = (0 if backend.holds_batch(table, batch.batch_id)
                        else backend.insert_new(table, rows, keys=["_batch_id", "_row"]))
            report.bronze_inserted[batch.dataset] = report.bronze_inserted.get(batch.dataset, 0) + inserted
            report.new_batches += int(inserted > 0)
            if inserted and entities is not None and not reason:
                changed.update(entities)
        if reason:
            new = batch.batch_id not in rejected_ids
            report.rejected.append({"file": batch.file, "dataset": batch.dataset, "reason": reason, "new": new})
            if new:
                backend.insert_new(REJECTED, _rejection_row(batch, reason, ingested_at), keys=["_batch_id"])
                rejected_ids.add(batch.batch_id)

    # One batch in memory at a time: each is checked on the driver, then written. A series.freq
    # that fits none of the target files is a config mistake, said before anything is written, so
    # batches are held only until a target batch fits (the first one, unless the data is wrong).
    held, fitted, misfits, sliced_rows = [], False, [], 0
    for batch in source.read():
        if as_of is not None:
            batch = _sliced(batch, source, since, as_of)
            if batch is None:
                continue
            sliced_rows += len(batch.frame)
        report.batches += 1
        # A file of millions of rows: what reading it freed (Arrow's buffers) goes back before
        # its checks, and all of it after its write (not per small file: a collection costs ms).
        large = len(batch.frame) > PARSE_ROWS
        if large:
            give_back()
        rows = _with_metadata(batch, config.source.kind, ingested_at)
        reason, misfit, entities = _validate(batch, parsers[batch.dataset], rows,
                                             freq if batch.dataset == target.name else None)
        fitted |= batch.dataset == target.name and reason is None
        if misfit:
            misfits.append((batch.file, reason))
        held.append((batch, rows, reason, entities))
        if fitted:
            for item in held:
                write(*item)
            held = []
        # Let go of this file before the next one is read (the loop variables would keep it alive).
        batch = rows = entities = None
        if large:
            give_back()
    if as_of is not None:
        progress(f"as of {as_of.isoformat()}: slice from "
                 f"{since.isoformat() if since is not None else 'the start'}, {sliced_rows} raw row(s)")
    if misfits and not fitted:
        file, reason = misfits[0]
        more = f" (and {len(misfits) - 1} more file(s) alike)" if len(misfits) > 1 else ""
        raise ConfigError(f"series.freq does not fit the data: in {file}{more} {reason}")
    for item in held:
        write(*item)
    if as_of is not None:
        backend.insert_new(SLICES, _slice_row(config.source.kind, as_of, ingested_at), keys=["source", "as_of"])
    crash_point("after-write:bronze")
    report.seconds["bronze"] = time.perf_counter() - started
    progress(f"bronze: {report.batches} batch(es), {report.new_batches} new, "
             f"{sum(report.bronze_inserted.values())} row(s) inserted, {len(report.rejected)} rejected")

    if not rebuild and not layers_current and driver_lake.exists(GOLD_SERIES):
        progress("silver/gold: built with other cleaning settings (source columns or regressors, series.freq or "
                 "season_lengths, quality) or by an earlier version: rebuilding them from bronze")
    if layers_current and _gold_is_current(driver_lake, dataset_names):      # again: after bronze's writes
        version = backend.lake.version(GOLD_SERIES)
        gold = backend.read(GOLD_SERIES, version)
        silver = backend.read(SILVER_SERIES)
        if _columns_current(gold.columns, silver.columns, config):
            report.gold_version, report.gold = version, backend.summarize(gold, ["is_imputed"])
            report.data_end = backend.last_observed(gold, as_of)
            progress(f"silver/gold: bronze unchanged, gold stays at version {version}")
            _audit_edges(backend, silver, report, config, as_of, progress)
            return report

    excluded = sorted(rejected_ids)
    target_rows = (backend.read_bronze(target.name, excluded)
                   if backend.lake.exists(bronze_table(target.name)) else None)
    if target_rows is None or backend.is_empty(target_rows):
        progress("silver/gold: no accepted batch of target rows yet; nothing to build")
        return report
    only_new_targets = {d for d, n in report.bronze_inserted.items() if n} == {target.name}
    update = _update(backend, driver_lake, config, changed if gold_was_current and only_new_targets else set(),
                     progress)
    only = update.entities if update else None
    started = time.perf_counter()
    shared = _latest_exogenous(backend, exog_sets, parsers, excluded, config.source.exogenous)
    holidays = _holidays(backend, calendars, parsers, excluded)
    if holidays is not None and not update:        # an update has no new calendar rows
        backend.overwrite(GOLD_HOLIDAYS, backend.from_pandas(holidays), parsed_calendar_schema())
    parser = replace(parsers[target.name], batch_columns=backend.bronze_columns(target_rows))
    parsed = backend.apply_by(backend.bronze_ranges(target_rows, PARSE_ROWS), PART_KEY, parser, schemas[TARGET])
    if update:
        parsed = backend.keep_entities(parsed, only)
    with_exog = backend.add_exogenous(parsed, shared, holidays if "is_holiday" in config.source.exogenous else None)
    cleaner = SilverCleaner(config.series.frequency, tuple(config.source.exogenous), config.quality)
    backend.overwrite(SILVER_SERIES, backend.apply_by(with_exog, "entity_id", cleaner,
                                                    silver_schema(config.source.exogenous)),
                      silver_schema(config.source.exogenous), entities=only)
    silver = backend.read(SILVER_SERIES)
    report.silver = backend.summarize(silver, SILVER_FLAGS)
    report.seconds["silver"] = time.perf_counter() - started
    progress(f"silver: {report.silver['rows']} row(s), {report.silver['entities']} entities, flags "
             + ", ".join(f"{f[5:]}={report.silver[f]}" for f in SILVER_FLAGS))
    _audit_edges(backend, silver, report, config, as_of, progress)

    started = time.perf_counter()
    preparer = GoldPreparer(tuple(config.source.exogenous), longest_season(config.series.season_lengths),
                            config.quality)
    gold = backend.persist(backend.apply_by(silver if not update else backend.read(SILVER_SERIES, entities=only),
                                            "entity_id", preparer, gold_schema(config.source.exogenous),
                                            rows=None if update else report.silver["rows"]))
    try:
        lengths = backend.lengths(gold)
        config.check_against_data(update.lengths(lengths) if update else lengths)
        report.gold_version = backend.overwrite(GOLD_SERIES, gold, gold_schema(config.source.exogenous),
                                                clustered_by="entity_id", entities=only)
        _record_layers(driver_lake, config, report.gold_version)
        whole = backend.read(GOLD_SERIES) if update else gold
        report.gold = backend.summarize(whole, ["is_imputed"])
        report.data_end = backend.last_observed(whole, as_of)
    finally:
        backend.release(gold)
    report.rebuilt, report.updated_entities = True, len(only) if update else 0
    report.seconds["gold"] = time.perf_counter() - started
    progress(f"gold: {report.gold['rows']} row(s), {report.gold['entities']} entities, "
             f"{report.gold['is_imputed']} imputed, version {report.gold_version}")
    return report


# An update names its entities in one Delta predicate: beyond this many, or half of gold's
# entities (a night that brings every meter's new day), silver and gold are rebuilt whole.
UPDATE_ENTITIES = 10_000


@dataclass(frozen=True)
class _Update:
    """Silver and gold rebuilt for `entities` only (those the new target batches hold), their
    rows replaced in one commit per table; every other entity's rows are kept as they are."""

    entities: list[str]
    before: Mapping[str, int]       # gold's series lengths before the update

    def lengths(self, updated: Mapping[str, int]) -> dict[str, int]:
        """Gold's series lengths after the update (an updated entity may have left gold)."""
        updated_ids = set(self.entities)
        kept = {e: n for e, n in self.before.items() if e not in updated_ids}
        return {**kept, **updated}


def _update(backend, lake: DeltaRsLake, config: Config, changed: set[str], progress) -> Optional[_Update]:
    """The update of the `changed` entities, or None where silver and gold are rebuilt whole: no
    entities given (other bronze changed too, or gold was not current), too many of them, or
    tables of another layout (a config that changed the exogenous columns, an older version's lake)."""
    if not changed or len(changed) > UPDATE_ENTITIES or not backend.lake.exists(SILVER_SERIES):
        return None
    if any("\\" in e for e in changed):       # Spark SQL reads a backslash in a literal as an escape
        return None
    gold = backend.read(GOLD_SERIES)
    if not _columns_current(gold.columns, lake.columns(SILVER_SERIES), config):      # silver's schema only
        return None
    before = backend.lengths(gold)
    if 2 * len(changed) > len(before):
        return None
    progress(f"silver/gold: new rows for {len(changed)} of {len(before)} entities: rebuilding theirs only")
    return _Update(sorted(changed), before)


def _layers_current(lake: DeltaRsLake, config: Config) -> bool:
    """Gold's current version was built with this config's `layers_fingerprint` (a gold written
    since the last record, e.g. by a run that crashed before recording, counts as not current)."""
    if not lake.exists(LAYERS) or not lake.exists(GOLD_SERIES):
        return False
    latest = lake.read(LAYERS).sort_values("gold_version").iloc[-1]
    return (int(latest["gold_version"]) == lake.version(GOLD_SERIES)
            and latest["fingerprint"] == config.layers_fingerprint())


def _record_layers(lake: DeltaRsLake, config: Config, gold_version: int) -> None:
    row = pd.DataFrame({"gold_version": [gold_version], "fingerprint": [config.layers_fingerprint()],
                        "recorded_at": pd.Series([pd.Timestamp.now(tz="UTC")], dtype="datetime64[us, UTC]")})
    lake.append(LAYERS, row, LAYERS_SCHEMA)


def _columns_current(gold_columns, silver_columns, config: Config) -> bool:
    """Gold and silver have this config's columns: a config that changed the exogenous columns, or
    a lake written by an older version (other silver columns), needs a rebuild even with the same input."""
    return (list(gold_columns) == gold_schema(config.source.exogenous).names
            and list(silver_columns) == silver_schema(config.source.exogenous).names)


def _audit_edges(backend, silver, report: IngestReport, config: Config, as_of: Optional[pd.Timestamp],
                 progress) -> None:
    """Name the entities of silver that gold will not train on as received (before `as_of`:
    later rows of a replayed night are not measured yet, so blank by design)."""
    report.max_id_length = config.quality.max_id_length
    report.edges = edge_rows(backend.edge_stats(observed_before(silver, as_of)), config.series.frequency)
    for line in report.edge_lines():
        progress(line)


def _edge_line(row, max_id_length: int) -> str:
    if row.problem == ID_TOO_LONG:
        return (f"id too long: {row.entity_id[:40]!r}... is {len(row.entity_id)} characters (quality.max_id_length "
                f"{max_id_length}): its {row.rows} row(s) stay in bronze and silver (flag_bad_id) and are left out "
                "of gold; shorten the id at the source (or raise quality.max_id_length) and rerun")
    if row.problem == OFF_GRID:
        return (f"no row on the grid: entity {row.entity_id!r} has {row.rows} row(s), none on a series.freq step: "
                "they stay in silver (flag_off_grid) and the entity is not in gold; send its rows on the grid "
                "(or set series.freq to fit them) and rerun")
    if row.problem == NO_VALUE:
        return (f"no valid value: entity {row.entity_id!r} has {row.rows} row(s), all missing or invalid: it "
                "stays in gold and is recorded as failed (EmptySeries) by training")
    return (f"trailing missing values: entity {row.entity_id!r} ends with {row.rows} missing or invalid value(s): "
            f"its forecast origin is its last valid value {row.last_valid.isoformat()}, not its last row "
            f"{row.last_received.isoformat()}")


def _gold_is_current(lake: DeltaRsLake, datasets: list[str]) -> bool:
    """Gold was written after every bronze commit (a job killed between bronze and gold left
    bronze newer, so the rerun rebuilds instead of trusting an outdated gold)."""
    gold = lake.committed_at(GOLD_SERIES)
    if gold is None:
        return False
    bronze = [lake.committed_at(t) for t in [*map(bronze_table, datasets), REJECTED]]
    return all(b is None or b < gold for b in bronze)


def _sliced(batch: RawBatch, source: Source, since: Optional[pd.Timestamp],
            as_of: pd.Timestamp) -> Optional[RawBatch]:
    """The batch cut to [previous recorded night, as_of), None when nothing is left; reference
    datasets (and unreadable files) stay whole."""
    window = source.dataset(batch.dataset).window
    if window is None or batch.unreadable:
        return batch
    rows = window(batch.frame, since, as_of)
    return RawBatch(batch.dataset, f"{batch.file}@as-of={as_of.isoformat()}", rows) if len(rows) else None


def _previous_night(lake: DeltaRsLake, kind: str, as_of: pd.Timestamp) -> Optional[pd.Timestamp]:
    if not lake.exists(SLICES):
        return None
    slices = lake.read(SLICES)
    earlier = slices.loc[(slices["source"] == kind) & (slices["as_of"] < as_of), "as_of"]
    return earlier.max() if len(earlier) else None


def _slice_row(kind: str, as_of: pd.Timestamp, at: pd.Timestamp) -> pd.DataFrame:
    return pd.DataFrame({"source": [kind], "as_of": pd.Series([as_of], dtype="datetime64[us, UTC]"),
                         "recorded_at": pd.Series([at], dtype="datetime64[us, UTC]")})


def _split_datasets(datasets: list[Dataset], config: Config) -> tuple[Dataset, list[Dataset], list[Dataset]]:
    targets = [d for d in datasets if d.role == TARGET]
    assert len(targets) == 1, "a source has exactly one target dataset"
    available = sorted({c for d in datasets for c in d.provides})
    unknown = [c for c in config.source.exogenous if c not in available]
    if unknown:
        raise ConfigError(f"config key 'source.exogenous' lists {unknown}, which source.kind "
                          f"{config.source.kind!r} does not provide; available: {', '.join(available) or 'none'}")
    return (targets[0], [d for d in datasets if d.role == EXOGENOUS], [d for d in datasets if d.role == CALENDAR])


def _schema_for(dataset: Dataset, schemas: dict, exog_columns: dict):
    if dataset.role == EXOGENOUS:
        return parsed_exogenous_schema(exog_columns[dataset.name])
    return schemas[dataset.role]


def _with_metadata(batch: RawBatch, source: str, ingested_at: pd.Timestamp) -> pd.DataFrame:
    rows = batch.frame.copy(deep=False)     # the batch's columns, not copied: only new ones are added
    rows.columns = [bronze_column(c) for c in rows.columns]
    rows["_source"], rows["_file"], rows["_batch_id"] = source, batch.file, batch.batch_id
    rows["_ingested_at"] = pd.Series(ingested_at, index=rows.index, dtype="datetime64[us, UTC]")
    rows["_row"] = np.arange(len(rows), dtype="int64")
    return rows


def _validate(batch: RawBatch, parser: BatchParser, rows: pd.DataFrame,
              freq: Optional[Frequency]) -> tuple[Optional[str], bool, Optional[np.ndarray]]:
    """(the reason a batch cannot be used or None, whether the reason is that its timestamps do
    not fit `freq`, a target batch's entity ids). Parsed on the driver before anything is written."""
    if batch.unreadable:
        return batch.unreadable, False, None
    if batch.frame.empty:
        return "the file is empty (no header or no data rows)", False, None
    try:
        if freq is None:
            parser(rows)
            return None, False, None
        stamps = _target_stamps(parser, rows)
    except BatchRejected as exc:
        return str(exc), False, None
    misfit = freq.mismatch(stamps["ds"], stamps["entity_id"])
    return misfit, misfit is not None, stamps["entity_id"].unique()


def _target_stamps(parser: BatchParser, rows: pd.DataFrame) -> pd.DataFrame:
    """`entity_id, ds` of a target batch, parsed in ranges of PARSE_ROWS rows as silver parses
    it, so the driver never holds a parsed copy of a file of millions of rows next to the raw one.
    The first row of every range is parsed together too: a check across the batch (timestamps
    with and without an offset) then sees every range, as each range is consistent or is itself
    rejected. A rejected batch is parsed whole again: its verdict and row numbers are the batch's."""
    if len(rows) > PARSE_ROWS:
        batch = rows["_batch_id"].iloc[0]
        ranged = replace(parser, batch_columns={batch: tuple(c for c in rows.columns if rows[c].notna().any())})
        try:
            ranged(rows.iloc[::PARSE_ROWS])
            return pd.concat([ranged(rows.iloc[start:start + PARSE_ROWS])[["entity_id", "ds"]]
                              for start in range(0, len(rows), PARSE_ROWS)], ignore_index=True)
        except BatchRejected:
            pass
    return parser(rows)[["entity_id", "ds"]]


def _rejection_row(batch: RawBatch, reason: str, at: pd.Timestamp) -> pd.DataFrame:
    return pd.DataFrame({"_batch_id": [batch.batch_id], "dataset": [batch.dataset], "file": [batch.file],
                         "rows": [len(batch.frame)], "reason": [reason],
                         "rejected_at": pd.Series([at], dtype="datetime64[us, UTC]")})[rejected_schema().names]


def _rejected_ids(backend) -> set[str]:
    if not backend.lake.exists(REJECTED):
        return set()
    return set(backend.to_pandas(backend.read(REJECTED))["_batch_id"])


def _parsed_small(backend, dataset: Dataset, parsers: dict, excluded: list[str]) -> Optional[pd.DataFrame]:
    """Parsed rows of a small by-time dataset (exogenous, calendar), latest received last."""
    if not backend.lake.exists(bronze_table(dataset.name)):
        return None
    raw = backend.to_pandas(backend.read_bronze(dataset.name, excluded))
    if raw.empty:
        return None
    return pd.concat([parsers[dataset.name](g) for _, g in raw.groupby("_batch_id")], ignore_index=True)


def _latest_exogenous(backend, datasets: list[Dataset], parsers: dict, excluded: list[str],
                      wanted: list[str]) -> pd.DataFrame:
    """One row per `ds` with the shared exogenous columns, the latest received value winning."""
    shared = pd.DataFrame({"ds": pd.Series([], dtype="datetime64[us, UTC]")})
    for dataset in datasets:
        columns = [c for c in dataset.provides if c in wanted]
        parsed = _parsed_small(backend, dataset, parsers, excluded) if columns else None
        if parsed is None:
            continue
        latest = (parsed.sort_values(["_ingested_at", "_seq"], kind="stable")
                  .drop_duplicates("ds", keep="last")[["ds", *columns]])
        shared = latest if len(shared.columns) == 1 else shared.merge(latest, on="ds", how="outer")
    return shared


def _holidays(backend, datasets: list[Dataset], parsers: dict, excluded: list[str]) -> Optional[pd.DataFrame]:
    parts = [p for d in datasets if (p := _parsed_small(backend, d, parsers, excluded)) is not None]
    if not parts:
        return None
    return pd.concat(parts).drop_duplicates(["date", "holiday"]).sort_values("date").reset_index(drop=True)
