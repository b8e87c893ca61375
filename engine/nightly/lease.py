"""One writer per lake: a lease in a small Delta table under the lake root, on any store.

No lock service and no shared disk are needed: the lease table holds one row (holder, expiry)
and every change to it is a Delta commit made with no retries, so the store's atomic
put-if-absent of the next log entry (a rename on a local disk, a conditional put on S3 and
Azure) lets exactly one of two claimants write version N+1; the other re-reads and finds the
lake taken. The holder renews the lease in a background thread; a holder that dies stops
renewing and its lease expires after `ttl` seconds (at once when it ran on this host and its
process is gone), so a killed job never blocks the next one for long.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Optional

import pandas as pd
import pyarrow as pa

from engine.errors import Exit, ManymodelsError
from engine.lake import DeltaRsLake
from engine.processes import alive

LEASE = "_manymodels/lease"
SCHEMA = pa.schema([("holder_id", pa.string()), ("holder", pa.string()), ("acquired_at", pa.timestamp("us", "UTC")),
                    ("expires_at", pa.timestamp("us", "UTC")), ("released", pa.bool_())])


class LakeBusy(ManymodelsError):
    """Another job holds the lake's lease."""

    exit_code = Exit.BUSY


class LeaseLost(ManymodelsError):
    """This job's lease expired and another job took the lake (this job stopped writing)."""


class LakeLease:
    """`with LakeLease(lake, command): ...` holds the lake for the block or raises LakeBusy."""

    def __init__(self, lake, command: str, timeout: float = 0.0, ttl: float = 120.0, host: Optional[str] = None):
        self.lake = DeltaRsLake(lake)
        self.timeout, self.ttl = timeout, ttl
        self.holder_id = uuid.uuid4().hex
        self.holder = {"command": command, "pid": os.getpid(), "host": host or socket.gethostname()}
        self._version: Optional[int] = None
        self._stop = threading.Event()
        self._renewer: Optional[threading.Thread] = None
        self.lost = False

    # --- the protocol ---------------------------------------------------------------------------

    def _current(self):
        """(version, row) of the lease table; (None, None) before its first commit."""
        if not self.lake.exists(LEASE):
            return None, None
        table = self.lake.table(LEASE)
        rows = table.to_pandas()
        return table.version(), (rows.iloc[0] if len(rows) else None)

    def _commit(self, version: Optional[int], released: bool, acquired_at: datetime) -> bool:
        """Write the lease row as version `version + 1`; False when another job committed it first."""
        now = datetime.now(timezone.utc)
        row = pa.Table.from_pylist([{"holder_id": self.holder_id, "holder": json.dumps(self.holder),
                                     "acquired_at": acquired_at, "expires_at": now + timedelta(seconds=self.ttl),
                                     "released": released}], schema=SCHEMA)
        if not self.lake.overwrite_at(LEASE, row, version):
            return False
        self._version = (version + 1) if version is not None else 0
        return True

    def _free(self, row) -> bool:
        if row is None or bool(row["released"]):
            return True
        if pd.Timestamp(row["expires_at"]) <= pd.Timestamp.now(tz="UTC"):
            return True
        holder = json.loads(row["holder"])
        # A holder on this host whose process is gone was killed: its lease is void now.
        return holder.get("host") == self.holder["host"] and not alive(int(holder.get("pid", -1)))

    def __enter__(self) -> "LakeLease":
        deadline = time.monotonic() + self.timeout
        while True:
            version, row = self._current()
            if self._free(row):
                self._acquired_at = datetime.now(timezone.utc)    # what the row says, renewals included
                if self._commit(version, released=False, acquired_at=self._acquired_at):
                    break
                continue                       # another job won this version: look again
            if time.monotonic() >= deadline:
                raise LakeBusy(f"another job ({describe(row)}) is writing to the lake {self.lake.root}; this run "
                               "made no change. Wait for it to finish (or raise nightly.lock_timeout to wait), "
                               "then rerun")
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        self._renewer = threading.Thread(target=self._renew, name="manymodels-lease", daemon=True)
        self._renewer.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self._commit(self._version, released=False, acquired_at=self._acquired_at):
                    self.lost = True          # someone took over: our lease had expired
                    return
            except Exception:  # noqa: BLE001 - a store hiccup: try again at the next beat, before expiry
                continue

    def ensure_held(self) -> None:
        """Raise LeaseLost when another job has taken the lake (so this one stops writing)."""
        if self.lost:
            raise LeaseLost(f"this job's lease on {self.lake.root} expired (renewals failed for "
                            f"{self.ttl:.0f}s) and another job took the lake; this job stopped. Rerun it once the "
                            "other finishes: finished stages are kept")

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self.lost:
            return
        try:
            released = self._commit(self._version, released=True, acquired_at=self._acquired_at)
        except ManymodelsError:
            return        # the store is gone: the lease expires by itself after ttl
        if released:
            try:
                # Each renewal replaced the row's file: drop those older than a day (readers of
                # older versions are long gone), so the table stays a handful of small files.
                self.lake.table(LEASE).vacuum(retention_hours=24, enforce_retention_duration=False, dry_run=False)
            except Exception:  # noqa: BLE001 - housekeeping only: the next release tries again
                pass


def describe(row) -> str:
    """Who holds (or last held) the lease, for messages."""
    if row is None:
        return "holder unknown"
    holder = json.loads(row["holder"])
    since = pd.Timestamp(row["acquired_at"]).isoformat(timespec="seconds")
    until = pd.Timestamp(row["expires_at"]).isoformat(timespec="seconds")
    return (f"{holder.get('command')}, pid {holder.get('pid')} on {holder.get('host')}, since {since}, "
            f"lease until {until}")


def holder_of(lake) -> Optional[str]:
    """The current holder's description, None when the lake is free."""
    probe = LakeLease(lake, "probe", host="")
    _, row = probe._current()
    if row is None or bool(row["released"]) or pd.Timestamp(row["expires_at"]) <= pd.Timestamp.now(tz="UTC"):
        return None
    return describe(row)


