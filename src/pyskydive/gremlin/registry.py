"""Extension steps: how the flow module (or anyone) adds steps to the Gremlin dialect.

How-to
------
A step is a callable ``handler(value, args, ctx) -> new value``:

* ``value`` is what the previous step produced: one of the classes of
  :mod:`pyskydive.gremlin.values` (``NodeList``, ``EdgeList``, ``AllNodes``, ``GraphValue``,
  ``PathList``, ``ValueList``, ``Scalar``) or an object of the extension's own;
* ``args`` are the parsed arguments (``str``, ``int``, ``float``, ``bool``,
  :class:`~pyskydive.gremlin.ast.Keyword` such as ``DESC``, or
  :class:`~pyskydive.gremlin.ast.Call` such as ``Metadata(...)`` / ``Within(...)``; turn
  filter arguments into a predicate with :func:`pyskydive.gremlin.predicates.compile_filter`);
* ``ctx`` is a :class:`StepContext`: the graph, ``now_ms``, ``window`` (the time window
  after ``G.At(...)``, ``None`` on the live graph), the deadline (call
  ``ctx.check()`` in long loops, or iterate with ``ctx.iterate(...)``), ``ctx.error(msg)``
  to build a positioned :class:`~pyskydive.errors.QueryError`.

Return the new value. Return ``NotImplemented`` to let the built-in step of the same name run
instead: this is how flow-aware ``In``/``Out``/``Both``/``Has`` work only on flows::

    class FlowList(ItemList):            # items have get(key) and to_wire()
        kind = "flows"

    def flows_step(value, args, ctx):
        nodes = as_nodes(value, ctx)     # pyskydive.gremlin.steps.as_nodes
        return FlowList(table.flows_of(nodes, now=ctx.now_ms))

    def flow_out(value, args, ctx):
        if not isinstance(value, FlowList):
            return NotImplemented         # nodes: the built-in Out() runs
        return NodeList(...)

    registry = StepRegistry()
    registry.register("Flows", flows_step)
    registry.register("Out", flow_out)
    evaluate("G.V().Has('Name', 'eth0').Flows().Has('Network', '10.0.0.1')", graph,
             registry=registry)

Generic steps (``Has``, ``HasKey``, ``HasNot``, ``HasEither``, ``Dedup``, ``Count``,
``Limit``, ``Range``, ``Sort``, ``Values``, ``ValueMap``, ``Keys``, ``Sum``) already work on
any :class:`~pyskydive.gremlin.values.ItemList` subclass whose items implement ``get(key)``
(the :class:`~pyskydive.gremlin.values.Getter` protocol): a flow whose ``get("Network")``
returns ``[A, B]`` makes ``Has('Network', x)`` match either end. Names are case-insensitive.
Registries are plain objects passed to :func:`~pyskydive.gremlin.evaluate`; nothing registers
at import time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pyskydive.errors import QueryError
from pyskydive.graph import Graph
from pyskydive.gremlin.ast import Arg, Step

if TYPE_CHECKING:
    from pyskydive.gremlin.timeforms import TimeWindow
    from pyskydive.gremlin.timetravel import HistorySource

__all__ = ["CHECK_EVERY", "StepContext", "StepHandler", "StepRegistry"]

#: Items processed between two looks at the clock.
CHECK_EVERY = 512
#: Items filtered between two looks at the clock by :meth:`StepContext.select`.
CHUNK = 8192

T = TypeVar("T")


@dataclass(slots=True)
class StepContext:
    """What a step may use besides its input value and arguments."""

    graph: Graph
    now_ms: int
    deadline: float
    timeout: float
    step: Step | None = None
    saved: dict[str, list[Any]] = field(default_factory=dict)  # As()/Select()
    index: int = 0  # of ``step`` in the query (At/Context must be the first)
    #: Topology history for ``At``/``Context``; None: time travel is refused.
    history: HistorySource | None = None
    #: The window ``At``/``Context`` switched to; None: the live graph.
    window: TimeWindow | None = None

    def check(self) -> None:
        """Raise ``QueryError`` once the time limit is exceeded."""
        if time.monotonic() > self.deadline:
            raise QueryError(f"query exceeded its time limit of {self.timeout:g}s")

    def iterate(self, items: Iterable[Any]) -> Iterator[Any]:
        """``items``, looking at the clock every :data:`CHECK_EVERY` of them."""
        n = 0
        for item in items:
            n += 1
            if n >= CHECK_EVERY:
                n = 0
                self.check()
            yield item

    def select(self, items: Iterable[T], keep: Callable[[T], bool]) -> list[T]:
        """The items ``keep`` accepts, in order, looking at the clock between chunks."""
        out: list[T] = []
        it = iter(items)
        while True:
            chunk = list(islice(it, CHUNK))
            if not chunk:
                return out
            out.extend([x for x in chunk if keep(x)])
            self.check()

    def error(self, message: str) -> QueryError:
        """A ``QueryError`` naming the current step and its position."""
        if self.step is None:
            return QueryError(message)
        return QueryError(f"position {self.step.position}: {self.step.text}: {message}")


class StepHandler(Protocol):
    """An extension step: ``(value, args, ctx) -> new value`` or ``NotImplemented``."""

    def __call__(self, value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any: ...


class StepRegistry:
    """Named extension steps, looked up case-insensitively before the built-in ones."""

    def __init__(self) -> None:
        self._steps: dict[str, StepHandler] = {}

    def register(self, name: str, step: StepHandler) -> None:
        key = name.upper()
        if key in self._steps:
            raise ValueError(f"step {name} is already registered")
        self._steps[key] = step

    def get(self, name: str) -> StepHandler | None:
        return self._steps.get(name.upper())

    def names(self) -> list[str]:
        return sorted(self._steps)
