"""Worker processes that do not outlive the job that started them.

A job killed with SIGKILL runs no clean-up, so its pool workers would be reparented to PID 1
and go on computing for minutes. Each worker asks the kernel to SIGKILL it when its parent dies
(Linux `prctl(PR_SET_PDEATHSIG)`); elsewhere a daemon thread watches the parent's pid. Either
way a worker whose parent is already gone by the time it starts exits at once.

A worker forked by a forkserver has the forkserver for its parent, and the forkserver lives on
while any worker does (each worker holds its "job alive" pipe), so `die_with_job` also has a
thread wait on the job itself.
"""
from __future__ import annotations

import ctypes
import os
import select
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


def die_with_job(job_pid: int) -> None:
    """Call first thing in a worker that may not be the job's child (forked by a forkserver)."""
    parent = os.getppid()
    die_with_parent(parent)
    if parent != job_pid:
        threading.Thread(target=_wait_for, args=(job_pid,), daemon=True, name="die-with-job").start()


def _wait_for(pid: int) -> None:
    """Exit once process `pid` has ended: a pidfd wakes at once; without one (no Linux 5.3), poll."""
    try:
        handle = os.pidfd_open(pid)
    except (AttributeError, OSError):
        while alive(pid):
            time.sleep(0.5)
    else:
        select.select([handle], [], [])
    os._exit(1)


def alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (one we may not signal counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
