"""The Spark session factory: the first start of a package set on a machine resolves its JARs
into Ivy's cache alone (two JVMs resolving at once truncate each other's downloads)."""
from __future__ import annotations

import fcntl
import threading

import pytest

from engine.spark import first_resolution

PACKAGES = ["org.apache.hadoop:hadoop-aws:3.5.0"]


def _in_thread(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_a_second_first_start_waits_for_the_first_and_later_starts_take_no_lock(tmp_path):
    order: list[str] = []
    inside, release = threading.Event(), threading.Event()

    def first():
        with first_resolution(tmp_path, PACKAGES):
            order.append("first in")
            inside.set()
            release.wait(10)
            order.append("first out")

    def second():
        with first_resolution(tmp_path, PACKAGES):
            order.append("second in")

    one = _in_thread(first)
    assert inside.wait(10)
    two = _in_thread(second)
    two.join(0.5)
    assert two.is_alive() and order == ["first in"]          # waits on the lock
    release.set()
    one.join(10), two.join(10)
    assert order == ["first in", "first out", "second in"]

    # Resolved once: a later start goes ahead even while someone holds the lock.
    with open(tmp_path / ".manymodels-resolve.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        later = _in_thread(second)
        later.join(10)
        assert not later.is_alive() and order[-1] == "second in"


def test_a_failed_start_leaves_no_marker_so_the_next_start_resolves_under_the_lock_again(tmp_path):
    with pytest.raises(RuntimeError):
        with first_resolution(tmp_path, PACKAGES):
            raise RuntimeError("the JVM did not start")
    assert not list(tmp_path.glob(".manymodels-resolved-*"))
    with first_resolution(tmp_path, [*PACKAGES, "com.example:other:1"]):
        pass
    with first_resolution(tmp_path, PACKAGES):
        pass
    assert len(list(tmp_path.glob(".manymodels-resolved-*"))) == 2   # one marker per package set
