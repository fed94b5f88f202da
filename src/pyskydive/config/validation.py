"""Turn a pydantic ``ValidationError`` into one :class:`ConfigError` line naming the key.

This is the one place pydantic's errors are translated (STYLE.md habit 6).  The key is the
error's location written the way a user writes it (``agent.listen``, ``analyzers[1]``); when
the value came from an environment variable the variable is named too
(``SKYDIVE_AGENT_LISTEN (agent.listen)``).  Only the first error is reported: fixing it and
re-running is quicker to read than a list.
"""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from pyskydive.config.env import EnvOverrides
from pyskydive.config.fields import closest
from pyskydive.config.keys import section_at
from pyskydive.errors import ConfigError

__all__ = ["dotted_key", "to_config_error"]

_MAX_SHOWN = 60

_TYPE_REASONS = {
    "model_type": "expected a mapping of keys",
    "model_attributes_type": "expected a mapping of keys",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
}


def dotted_key(loc: tuple[str | int, ...]) -> str:
    """``("agent", "listen")`` -> ``agent.listen``; ``("analyzers", 1)`` -> ``analyzers[1]``."""
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += f".{part}" if key else part
    return key


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _reason(error: ErrorDetails) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "extra_forbidden":
        siblings = section_at(loc[:-1])
        hint = closest(str(loc[-1]), siblings.model_fields) if siblings else None
        return f"unknown key (did you mean {hint!r}?)" if hint else "unknown key"
    if kind == "value_error" and "error" in error.get("ctx", {}):
        return str(error["ctx"]["error"])  # our validators' own one-line reasons
    if kind == "string_too_short":
        return "must not be empty"
    reason = _TYPE_REASONS.get(kind)
    if reason is None:
        msg = error["msg"]
        reason = msg[:1].lower() + msg[1:]
    return f"{reason}, got {_shown(error['input'])}"


def _origin(loc: tuple[str | int, ...], env: EnvOverrides) -> str | None:
    for end in range(len(loc), 0, -1):
        path = loc[:end]
        if all(isinstance(part, str) for part in path):
            name = env.get(tuple(str(part) for part in path))
            if name is not None:
                return name
    return None


def to_config_error(exc: ValidationError, env: EnvOverrides) -> ConfigError:
    """The first error of ``exc`` as a one-line ``ConfigError``."""
    error = exc.errors(include_url=False)[0]
    key = dotted_key(error["loc"])
    origin = _origin(error["loc"], env)
    if origin is not None:
        key = f"{origin} ({key})"
    reason = " ".join(_reason(error).split())  # guarantee one line
    return ConfigError(key, reason)
