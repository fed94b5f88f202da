"""Pure flow semantics: the flow model, keys and identifiers, the flow table (DESIGN §2.5)."""

from pyskydive.flow.keys import LayerKeyMode
from pyskydive.flow.model import FinishType, Flow, FlowLayer, ICMPLayer, Metric, TCPMetric
from pyskydive.flow.table import FlowTable, TableStats, TickResult

__all__ = [
    "FinishType",
    "Flow",
    "FlowLayer",
    "FlowTable",
    "ICMPLayer",
    "LayerKeyMode",
    "Metric",
    "TCPMetric",
    "TableStats",
    "TickResult",
]
