"""The routing bundle: every entity's champion in a few shard files plus one small index.

Layout of a bundle folder (logged as the routing model's artifact):

* ``meta.json``      - format version, run id, frequency, interval levels, step limit, the
  regressors (in the config's order: the model signature's) and the distributions the
  champions need to forecast;
* ``index.parquet``  - one row per entity: shard, row in the shard, champion, status,
  training end (the forecast origin), exogenous columns the model needs;
* ``shards/NNNNN.arrow`` - Arrow IPC files of (entity_id, model bytes), ``shard_size`` rows each.

Opening a bundle reads only meta and index; shards are memory-mapped when an entity in them
is first asked for, so memory grows with the entities used, not with the bundle.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from engine.errors import ManymodelsError
from engine.models.base import read_envelope
from engine.models.registry import serving_requirements

BUNDLE_FORMAT, BUNDLE_VERSION = "manymodels-routing", 1
SHARD_SCHEMA = pa.schema([("entity_id", pa.string()), ("model", pa.binary())])


class BundleError(ManymodelsError):
    """A folder is not a routing bundle this version can read, or a bundle is inconsistent."""


@dataclass(frozen=True)
class BundleMeta:
    run_id: str
    freq: str
    levels: tuple[int, ...]
    horizon: int
    max_steps: int
    exogenous: tuple[str, ...]
    entities: int
    shards: int
    serves_with: tuple[str, ...] = ()       # distributions the champions need (the model's requirements)

    def to_dict(self) -> dict:
        return {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "BundleMeta":
        if data.get("format") != BUNDLE_FORMAT:
            raise BundleError("not a manymodels routing bundle (meta.json has no routing format marker)")
        if data.get("version", 0) > BUNDLE_VERSION:
            raise BundleError(f"routing bundle format {data['version']} is newer than this manymodels reads; upgrade")
        return cls(**{f.name: tuple(data[f.name]) if isinstance(data[f.name], list) else data[f.name]
                      for f in fields(cls) if f.name in data})


def write_bundle(models: pd.DataFrame, folder: str | Path, *, run_id: str, freq: str, levels: tuple[int, ...],
                 horizon: int, max_steps: int, shard_size: int, exogenous_order: Sequence[str] = ()) -> BundleMeta:
    """Write the bundle for `models` (gold.models rows of one run that have a model).

    Entities are sorted by id before sharding, so the same run always gives the same files.
    The regressors any champion uses are listed in `exogenous_order` (the config's), others after.
    """
    folder = Path(folder)
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    usable = models[models["model"].notna()].sort_values("entity_id", ignore_index=True)
    if usable.empty:
        raise BundleError(f"run {run_id} has no entity with a model: nothing to route to")
    exogenous, needs = [], set()
    for blob in usable["model"]:        # one envelope at a time: each holds its fitted window
        envelope = read_envelope(blob)
        exogenous.append(",".join(envelope["exogenous"]))
        needs |= serving_requirements(envelope)
    shard = np.arange(len(usable)) // shard_size
    for number in range(int(shard.max()) + 1):
        part = usable[shard == number]
        table = pa.Table.from_pandas(part[["entity_id", "model"]], schema=SHARD_SCHEMA, preserve_index=False)
        with ipc.new_file(folder / "shards" / _shard_name(number), SHARD_SCHEMA) as writer:
            writer.write_table(table)
    index = pd.DataFrame({"entity_id": usable["entity_id"], "shard": shard.astype("int32"),
                          "row": (np.arange(len(usable)) % shard_size).astype("int32"),
                          "champion": usable["champion"], "status": usable["status"],
                          "origin": pd.to_datetime(usable["forecast_origin"], utc=True),
                          "exogenous": exogenous})
    pq.write_table(pa.Table.from_pandas(index, preserve_index=False), folder / "index.parquet")
    used = {c for cols in exogenous for c in cols.split(",") if c}
    ordered = [c for c in exogenous_order if c in used] + sorted(used - set(exogenous_order))
    meta = BundleMeta(run_id=run_id, freq=freq, levels=tuple(sorted(levels)), horizon=horizon,
                      max_steps=max_steps or 4 * horizon, exogenous=tuple(ordered), entities=len(usable),
                      shards=int(shard.max()) + 1,
                      serves_with=tuple(sorted(needs)))
    (folder / "meta.json").write_text(json.dumps(meta.to_dict(), indent=1))
    return meta


def _shard_name(number: int) -> str:
    return f"{number:05d}.arrow"


@dataclass(frozen=True)
class Entry:
    """Where an entity's model is and what it needs."""

    shard: int
    row: int
    champion: str
    status: str
    origin: pd.Timestamp
    exogenous: tuple[str, ...]


class Bundle:
    """Read side: the index in memory, shards memory-mapped on first use."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        try:
            self.meta = BundleMeta.from_dict(json.loads((self.folder / "meta.json").read_text()))
        except FileNotFoundError:
            raise BundleError(f"{self.folder} is not a routing bundle (no meta.json)") from None
        index = pq.read_table(self.folder / "index.parquet").to_pandas()
        self.index: dict[str, Entry] = {
            e: Entry(int(s), int(r), c, st, o, tuple(x for x in ex.split(",") if x))
            for e, s, r, c, st, o, ex in zip(index["entity_id"], index["shard"], index["row"], index["champion"],
                                              index["status"], index["origin"], index["exogenous"])}
        self._shards: dict[int, pa.Table] = {}

    def __contains__(self, entity: str) -> bool:
        return entity in self.index

    def entities(self) -> list[str]:
        return list(self.index)

    def model_bytes(self, entity: str) -> bytes:
        entry = self.index[entity]
        table = self._shards.get(entry.shard)
        if table is None:
            # Memory-mapped: only the pages of the models actually read become resident.
            source = pa.memory_map(str(self.folder / "shards" / _shard_name(entry.shard)))
            table = self._shards.setdefault(entry.shard, ipc.open_file(source).read_all())
        if table.column("entity_id")[entry.row].as_py() != entity:
            raise BundleError(f"routing bundle index and shard {entry.shard} disagree for entity {entity!r}")
        return table.column("model")[entry.row].as_py()

    def loaded_shards(self) -> int:
        return len(self._shards)

    def first_entity(self) -> Optional[str]:
        return next(iter(self.index), None)
