"""``HOST:PORT`` listen and peer addresses, as one small frozen value type.

Skydive writes addresses the Go way (``net.SplitHostPort``), and users write them in several
short forms; parsing them once here means the rest of the code gets a host and an int port and
never splits strings again.  Accepted forms:

=================  ======================================
``HOST:PORT``      ``analyzer.example.com:8082``
``[IPV6]:PORT``    ``[::1]:8082``
``:PORT``          all interfaces, host ``0.0.0.0``
``PORT``           loopback, host ``127.0.0.1`` (also a bare YAML integer)
=================  ======================================

Port 0 is allowed: it asks the OS for a free port (tests rely on it).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

__all__ = ["Address"]

_LOOPBACK = "127.0.0.1"
_ANY = "0.0.0.0"
_HOST_RE = re.compile(r"[A-Za-z0-9_.-]+")
_V6_RE = re.compile(r"\[([^\]]+)\]:([^:]*)")


@dataclass(frozen=True, slots=True)
class Address:
    """A host and a port; ``str()`` gives ``host:port`` (``[v6]:port`` for IPv6)."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range 0..65535")

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, value: object) -> Address:
        """Parse one of the accepted forms; raise ``ValueError`` with a one-line reason."""
        if isinstance(value, Address):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(_LOOPBACK, _port(value, str(value)))
        if not isinstance(value, str):
            raise ValueError(f"expected an address HOST:PORT, got {value!r}")
        text = value.strip()
        if text.isdigit():
            return cls(_LOOPBACK, _port(int(text), value))
        match = _V6_RE.fullmatch(text)
        if match:
            host, port = match.groups()
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"invalid address {value!r} (bad IPv6 address)") from None
        else:
            host, sep, port = text.rpartition(":")
            if not sep or not (host == "" or _HOST_RE.fullmatch(host)):
                raise ValueError(f"invalid address {value!r} (expected HOST:PORT)")
            host = host or _ANY
        if not port.isdigit():
            raise ValueError(f"invalid address {value!r} (expected HOST:PORT)")
        return cls(host, _port(int(port), value))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Validate with :meth:`parse`; serialise (``mode="json"``) as ``str()``."""
        return core_schema.no_info_plain_validator_function(
            cls.parse,
            serialization=core_schema.plain_serializer_function_ser_schema(
                str, when_used="json-unless-none"
            ),
        )


def _port(port: int, original: object) -> int:
    if not 0 <= port <= 65535:
        raise ValueError(f"invalid address {original!r} (port must be 0..65535)")
    return port
