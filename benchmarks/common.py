"""Shared by the benchmark scripts: machine metadata, medians, one results row per run."""
from __future__ import annotations

import csv
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Iterable, Optional

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, str]:
    try:
        here = Path(__file__).parent
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=here).stdout.strip()
        # Code that differs from the commit is not that commit's figure: say so in the row (results
        # tables written earlier in the same run are not code).
        changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ".", ":(exclude)benchmarks/results"],
                                 cwd=here.parent)
        if commit and changed.returncode:
            commit += "+changes"
    except OSError:
        commit = ""
    return {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
            "cpus": str(os.cpu_count()), "python": platform.python_version(), "commit": commit}


def record(name: str, rows: Iterable[dict], folder: Optional[Path] = None) -> Path:
    """Append rows (with machine metadata) to benchmarks/results/<name>.csv (or `folder`)."""
    folder = folder or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.csv"
    rows = [{**machine(), **row} for row in rows]
    fields = list(dict.fromkeys(k for row in rows for k in row))
    if path.exists():
        with path.open() as handle:
            existing = next(csv.reader(handle), [])
        fields = existing + [f for f in fields if f not in existing]
        old = list(csv.DictReader(path.open()))
    else:
        old = []
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(old + rows)
    return path


def med(values: Iterable[float]) -> float:
    return float(median(list(values)))


def say(text: str) -> None:
    print(text, flush=True)
    sys.stdout.flush()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server a benchmark or test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
