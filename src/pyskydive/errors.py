"""The one exception tree of pyskydive.

::

    SkydiveError
     ├── ConfigError          bad config file, key or value (carries the key)
     ├── ProbeError           a probe could not start or lost its source
     ├── ProtocolError        malformed bytes or messages (carries offset/reason)
     │    └── MessageError    a WebSocket/API message that cannot be applied
     ├── QueryError           bad Gremlin query (carries the position)
     └── StorageError         a storage backend failed

A user sees ``str(error)``: one line, never a traceback.
"""

from __future__ import annotations


class SkydiveError(Exception):
    """Root of every error pyskydive raises on purpose."""


class ConfigError(SkydiveError):
    """Invalid configuration; ``key`` names the offending key (dotted)."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}" if key else reason)


class ProbeError(SkydiveError):
    """A probe failed to start or lost its source."""


class ProtocolError(SkydiveError):
    """Malformed input bytes or message."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        self.reason = reason
        self.offset = offset
        super().__init__(reason if offset is None else f"at offset {offset}: {reason}")


class MessageError(ProtocolError):
    """A wire message (WebSocket or API body) that cannot be applied."""


class QueryError(SkydiveError):
    """A Gremlin query that cannot be parsed or evaluated."""


class StorageError(SkydiveError):
    """A storage backend failed."""
