"""The key tree of the config, read off the model's fields.

Environment override names, "did you mean" hints and the drift test of the documented
default file all walk this tree instead of keeping their own list of keys.
"""

from __future__ import annotations

import enum
import functools
import typing
from dataclasses import dataclass

from pydantic import BaseModel

from pyskydive.config.model import Config

__all__ = ["Leaf", "LeafKind", "leaf_keys", "section_at"]


class LeafKind(enum.Enum):
    """How an environment variable's text becomes the value of a leaf."""

    STRING = "string"  #: kept as written (a host id of digits stays a string)
    SCALAR = "scalar"  #: parsed as a YAML scalar first ("30" -> 30), lists split later
    MAPPING = "mapping"  #: free-form dict; each entry is its own variable (``..._<NAME>``)


@dataclass(frozen=True, slots=True)
class Leaf:
    """One settable key: its path of field names and how env text is read for it."""

    path: tuple[str, ...]
    kind: LeafKind

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def _section_type(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


@functools.cache
def leaf_keys(model: type[BaseModel] = Config) -> tuple[Leaf, ...]:
    """Every leaf key under ``model``, in field order."""
    leaves: list[Leaf] = []
    for name, field in model.model_fields.items():
        section = _section_type(field.annotation)
        if section is not None:
            leaves.extend(Leaf((name, *leaf.path), leaf.kind) for leaf in leaf_keys(section))
        elif typing.get_origin(field.annotation) is dict:
            leaves.append(Leaf((name,), LeafKind.MAPPING))
        elif field.annotation is str:
            leaves.append(Leaf((name,), LeafKind.STRING))
        else:
            leaves.append(Leaf((name,), LeafKind.SCALAR))
    return tuple(leaves)


def section_at(
    path: tuple[str | int, ...], model: type[BaseModel] = Config
) -> type[BaseModel] | None:
    """The section model reached by following ``path`` from ``model``, if it is a section."""
    for part in path:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        section = _section_type(field.annotation) if field is not None else None
        if section is None:
            return None
        model = section
    return model
