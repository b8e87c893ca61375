"""Worker processes that do not outlive the job that started them.

A job killed with SIGKILL runs no clean-up, so its pool workers would be reparented to PID 1
and go on computing for minutes. Each worker asks the kernel to SIGKILL it when its parent dies
(Linux `prctl(PR_SET_PDEATHSIG)`); elsewhere a daemon thread watches the parent's pid. Either
way a worker whose parent is already gone by the time it starts exits at once.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Call first thing in a child process; `parent_pid` is the pid of the process that started it."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    else:
        threading.Thread(target=_watch, args=(parent_pid,), daemon=True, name="die-with-parent").start()
    if os.getppid() != parent_pid:      # the parent died before the request took effect
        os._exit(1)


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)
