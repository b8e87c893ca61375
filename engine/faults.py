"""Crash points for fault-injection tests: the process kills itself with SIGKILL where named.

`MANYMODELS_CRASH_AT=<point>` makes `crash_point(<point>)` end the process at once, exactly
as `kill -9` would (no cleanup, no atexit, no flush), so tests can show that a rerun after a
crash at that point completes the job with every row written once. A point passed a count
(`crash_point("child-run", 3)`) also answers to `<point>:<count>`: the third time it is reached.
Unset, it costs nothing.
"""
from __future__ import annotations

import os
import signal
from typing import Optional

ENV = "MANYMODELS_CRASH_AT"


def crash_point(name: str, count: Optional[int] = None) -> None:
    wanted = os.environ.get(ENV)
    if wanted and (wanted == name or (count is not None and wanted == f"{name}:{count}")):
        os.kill(os.getpid(), signal.SIGKILL)
