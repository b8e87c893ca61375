"""The README and docs/ link only to files that exist, and name only commands the CLI has."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "results" / "README.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files_that_exist(page):
    missing = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        path = target.split("#")[0]
        if path and not re.match(r"[a-z]+:", path) and not (page.parent / path).exists():
            missing.append(target)
    assert not missing, f"{page.name} links to missing files: {missing}"


def test_the_readme_names_every_command():
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    text = (ROOT / "README.md").read_text()
    assert {c for c in commands if f"manymodels {c}" not in text} == set()


def test_the_frequency_table_matches_the_code():
    from engine.frequency import frequency_table
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert frequency_table() in text, "docs/configuration.md's frequency table is stale: paste frequency_table()"
