"""TLS contexts from the ``tls`` config section (HTTPS/WSS for the API, wss:// for agents).

Built once at process start, so a missing or bad PEM file is a one-line :class:`ConfigError`
naming the key instead of a failure deep inside the server or on the first connection.
"""

from __future__ import annotations

import os
import ssl

from pyskydive.config.model import TLSConfig
from pyskydive.errors import ConfigError

__all__ = ["client_context", "server_context"]


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str, prefix: str) -> None:
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        missing = cert if not os.path.exists(cert) else key
        raise ConfigError(f"tls.{prefix}_cert", f"cannot read {missing}: no such file") from exc
    except OSError as exc:  # ssl.SSLError is an OSError
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise ConfigError(
            f"tls.{prefix}_cert", f"cannot load certificate {cert} with key {key}: {reason}"
        ) from exc


def _load_ca(ctx: ssl.SSLContext, ca: str) -> None:
    try:
        ctx.load_verify_locations(cafile=ca)
    except OSError as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise ConfigError("tls.ca_cert", f"cannot load CA file {ca}: {reason}") from exc


def server_context(tls: TLSConfig) -> ssl.SSLContext | None:
    """The context the analyzer and agent serve HTTPS/WSS with; None when TLS is off.

    With ``ca_cert`` set, a client certificate is asked for and, when presented, verified.
    """
    if not (tls.server_cert and tls.server_key):
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, tls.server_cert, tls.server_key, "server")
    if tls.ca_cert:
        _load_ca(ctx, tls.ca_cert)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(tls: TLSConfig) -> ssl.SSLContext | None:
    """The context the agent dials its analyzers with (wss://); None when TLS is off."""
    if not (tls.server_cert and tls.server_key):
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.ca_cert:
        _load_ca(ctx, tls.ca_cert)
    if tls.client_cert and tls.client_key:
        _load_chain(ctx, tls.client_cert, tls.client_key, "client")
    return ctx
