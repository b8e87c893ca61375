"""One writer per lake: an exclusive lock file under the lake root.

The lock is an OS file lock (flock), so the kernel drops it when its holder dies, even from
`kill -9`: a crashed job never blocks the next one. A side file names the holder for the
message the waiting job prints. It protects a lake on a local or shared POSIX file system;
a lake on object storage needs the scheduler to run one job at a time.
"""
from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from engine.errors import ManymodelsError


class LakeBusy(ManymodelsError):
    """Another job holds the lake's lock."""


class LakeLock:
    def __init__(self, root: str | Path, command: str, timeout: float = 0.0):
        folder = Path(root) / "_manymodels"
        self.path, self.holder = folder / "lake.lock", folder / "lake.lock.json"
        self.command, self.timeout = command, timeout
        self._lock = None

    def __enter__(self) -> "LakeLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path), timeout=self.timeout)
        try:
            self._lock.acquire()
        except Timeout:
            raise LakeBusy(f"another job ({self._describe_holder()}) is writing to the lake "
                           f"{self.path.parent.parent}; this run made no change. Wait for it to finish (or raise "
                           "nightly.lock_timeout to wait), then rerun") from None
        self.holder.write_text(json.dumps({"command": self.command, "pid": os.getpid(), "host": socket.gethostname(),
                                           "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def _describe_holder(self) -> str:
        try:
            info = json.loads(self.holder.read_text())
        except (OSError, ValueError):
            return "holder unknown"
        return f"{info.get('command')}, pid {info.get('pid')} on {info.get('host')}, since {info.get('since')}"
