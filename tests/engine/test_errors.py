"""Exit codes live in one place (engine.errors.Exit): error classes carry theirs, and the README's
table lists each."""
from __future__ import annotations

import re
from pathlib import Path

from engine.errors import Exit, ManymodelsError, TrackingUnavailable, WorkersLost
from engine.nightly.lease import LakeBusy
from engine.storage import StorageError, StorageUnavailable
from engine.training.job import TrainingFailed

README = Path(__file__).resolve().parents[2] / "README.md"


def test_each_error_class_carries_its_exit_code():
    assert ManymodelsError.exit_code == StorageError.exit_code == Exit.USER_ERROR == 2
    assert StorageUnavailable.exit_code == TrackingUnavailable.exit_code == WorkersLost.exit_code == Exit.FAILED
    assert TrainingFailed.exit_code == Exit.TRAINING_FAILED and LakeBusy.exit_code == Exit.BUSY


def test_the_readme_lists_every_exit_code():
    rows = dict(re.findall(r"^\| (\d+) \| ([a-z ]+):?", README.read_text(), re.M))
    assert {int(code): meaning.strip() for code, meaning in rows.items()} == {
        code.value: code.name.lower().replace("_", " ") for code in Exit}
