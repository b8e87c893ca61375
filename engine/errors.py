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
