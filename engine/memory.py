"""Give freed memory back to the operating system between large steps of the driver.

A bronze batch of millions of rows is hundreds of MB of pandas and Arrow buffers. Freed, they
stay with their allocators (Arrow's memory pool, glibc's heap) and still count in the process's
resident memory while Spark's JVM, on the same machine in local mode, grows in the next stage.
"""
from __future__ import annotations

import ctypes
import gc
import sys

import pyarrow as pa


def give_back() -> None:
    """Collect, then return every allocator's unused pages (Arrow's pool; glibc's heap on Linux)."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):     # another C library (musl): nothing to trim
            pass
