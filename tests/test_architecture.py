"""The boundaries the README's architecture section promises, checked on the source: tuning builds
on training (never the reverse), partitions/ and gpu/ know nothing of the engine, models depend on
nothing else in the engine, MLflow is opened only in engine/tracking/client.py, Delta is written only
through engine/lake.py, and no job branches on the backend's name."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("folder, forbidden", [
    ("engine/training", ("engine.tuning",)),
    ("partitions", ("engine",)),
    ("gpu", ("engine",)),
    ("engine/models", ("engine.training", "engine.tuning", "engine.tracking", "engine.backends", "engine.config",
                       "engine.medallion", "engine.routing", "engine.scoring", "engine.nightly", "pyspark", "mlflow")),
])
def test_packages_import_only_what_they_may(folder, forbidden):
    bad = {str(p.relative_to(ROOT)): sorted(n for n in imported(p) if n.startswith(forbidden))
           for p in modules(folder)}
    assert not {k: v for k, v in bad.items() if v}


@pytest.mark.parametrize("pattern, allowed", [
    (r"MlflowClient\(|set_tracking_uri\(|\.log_batch\(", {"engine/tracking/client.py"}),
    (r"write_deltalake\(|\.write\.format\(|\.saveAsTable\(", {"engine/lake.py"}),
    (r"backend\s*==|==\s*[\"'](spark|ray|local)[\"']|spark is None|spark is not None", {"engine/storage.py"}),
])
def test_one_module_owns_each_outside_system(pattern, allowed):
    found = {str(p.relative_to(ROOT)) for p in modules("engine") if re.search(pattern, p.read_text())}
    assert found <= allowed, f"{pattern!r} outside {allowed}: {sorted(found - allowed)}"
