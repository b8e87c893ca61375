"""Exceptions that carry a user-facing message.

The CLI prints these without a stack trace: they describe a mistake the user can fix
(a config key, an input file), not a bug in the engine.
"""


class ManymodelsError(Exception):
    """Base class for errors whose message tells the user what to do."""


class ConfigError(ManymodelsError, ValueError):
    """A config file has an unknown key, a wrong type or an impossible value."""


class IngestError(ManymodelsError):
    """A source batch was rejected; bronze keeps the raw rows for inspection."""


class TrackingError(ManymodelsError):
    """The MLflow tracking store refuses to be written (a read-only file, wrong permissions): exit 2."""


class TrackingUnavailable(ManymodelsError):
    """The MLflow tracking server did not answer in time (an outage, not a config mistake: exit 1)."""


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
