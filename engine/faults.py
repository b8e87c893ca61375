"""Crash points for fault-injection tests: the process kills itself with SIGKILL where named.

`MANYMODELS_CRASH_AT=<point>` makes `crash_point(<point>)` end the process at once, exactly
as `kill -9` would (no cleanup, no atexit, no flush), so tests can show that a rerun after a
crash at that point completes the job with every row written once. Unset, it costs nothing.
"""
from __future__ import annotations

import os
import signal

ENV = "MANYMODELS_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
