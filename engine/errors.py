"""Exceptions that carry a user-facing message and the exit code the CLI ends with.

The CLI prints these without a stack trace: they describe a mistake the user can fix (a config
key, an input file), an outage to wait out, or a verdict on the run; anything else is a bug,
printed as one line with the trace in a file. `Exit` is the one list of exit codes: the CLI, the
nightly report and the README's table (checked by a test) read it.
"""
from enum import IntEnum


class Exit(IntEnum):
    """The CLI's exit codes."""

    OK = 0
    FAILED = 1              # an outage (store, tracking server, workers lost) or a bug: rerun once fixed
    USER_ERROR = 2          # a config, input or credentials mistake: the message says what to change
    REJECTED = 3            # input batches rejected (raw rows kept in bronze); the rest was processed
    TRAINING_FAILED = 4     # more entities failed than max_failure_rate allows: nothing was published
    BUSY = 75               # another job holds the lake's lease (EX_TEMPFAIL): retry later
    INTERRUPTED = 130       # Ctrl-C: Delta commits are atomic, rerun the same command to finish


class ManymodelsError(Exception):
    """Base class for errors whose message tells the user what to do; `exit_code` is the CLI's."""

    exit_code = Exit.USER_ERROR


class Unavailable(ManymodelsError):
    """Something the job needs did not answer or gave out (an outage, not a config mistake)."""

    exit_code = Exit.FAILED


class ConfigError(ManymodelsError, ValueError):
    """A config file has an unknown key, a wrong type or an impossible value."""


class IngestError(ManymodelsError):
    """A source batch was rejected; bronze keeps the raw rows for inspection."""


class TrackingError(ManymodelsError):
    """The MLflow tracking store refuses to be written (a read-only file, wrong permissions)."""


class TrackingUnavailable(Unavailable):
    """The MLflow tracking server did not answer in time."""


class WorkersLost(Unavailable):
    """Training workers kept dying on the same task (most likely out of memory)."""


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain (`raise ... from`, or raised while handling another):
    what actually went wrong, where the outer ones only say where."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)) is not None:
        if id(inner) in seen:
            break
        seen.add(id(inner))
        exc = inner
    return exc


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]
