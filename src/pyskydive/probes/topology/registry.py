"""What the topology probes of one agent share: the graph, the origin and a directory of
interfaces by ``(namespace, ifindex)``, so that a veth in one namespace finds its peer in
another one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from pyskydive.graph import Graph, Node

__all__ = ["ROOT_NS", "TopologyContext", "new_id"]

#: Key of the agent's own network namespace in :attr:`TopologyContext.interfaces`.
ROOT_NS = ""


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(eq=False)
class TopologyContext:
    graph: Graph
    origin: str
    host: Node
    #: (namespace key, ifindex) -> interface node; the key is ROOT_NS or the netns path.
    interfaces: dict[tuple[str, int], Node] = field(default_factory=dict)
    #: namespace key -> path of a file that opens it (``/proc/self/ns/net`` for the root).
    namespaces: dict[str, str] = field(default_factory=dict)
    #: node ID -> the Type another probe knows better than netlink (OVS: ``internal``); the
    #: netlink probe writes this Type instead of its own on every update of that node.
    type_overrides: dict[str, str] = field(default_factory=dict)
    #: Bumped whenever an interface appears: a veth that found no peer tries again only then.
    generation: int = 0
