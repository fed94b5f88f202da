"""``ovssflow`` captures: Open vSwitch samples a bridge and sends sFlow to our own collector.

Theory of operation
-------------------
:class:`OvsSflowCapture` is an :class:`~pyskydive.probes.flow.sflow.SflowCapture` (same
collector, same flow table, same ``SFlow`` counters on the node) that, once its collector
listens, configures the bridge in OVSDB (``ovs.ovsdb``) in ONE transaction, as Skydive v0.28's
``flow/probes/ovssflow`` does::

    insert sFlow {agent: "lo", targets: "ADDR:PORT", sampling, polling, header,
                  external_ids: {skydive-probe-id: <bridge UUID, "-" → "_">,
                                 skydive-capture-id: <capture UUID>}}
    update Bridge where _uuid == <bridge UUID> set sflow = that row

``targets`` is the collector's address (loopback when it binds a wildcard address).
``agent: "lo"``: the interface whose address OVS writes in the datagrams as the agent address
(127.0.0.1); it works with the userspace (``netdev``) datapath used on these hosts. ``sampling``
is the capture's ``SamplingRate`` (1 = every packet: OVS's userspace datapath loses none),
``polling`` its ``PollingInterval`` (seconds between counter samples), ``header`` its
``HeaderSize`` or :data:`DEFAULT_HEADER` bytes. The bridge is the node's ``UUID`` metadata (set by
the OVSDB topology probe). An update that matches no bridge (it was deleted meanwhile) fails the
start; any OVSDB error is a :class:`~pyskydive.errors.ProbeError` with OVS's own message, and the
collector is closed again.

``stop()`` clears the bridge's ``sflow`` column, but only while it still points at our row (an
operator may have replaced it); the ``sFlow`` table is not a root table, so OVSDB deletes the
unreferenced row itself at commit (RFC 7047 §3.2, "isRoot"). Then the collector stops.

The capture's metadata shows the collector as ``SFlowSocket`` (Skydive v0.28 shows nothing for
this type; the address helps to tell which collector a bridge sends to).
"""

from __future__ import annotations

import logging
from typing import Any, Final

from pyskydive.errors import ProbeError
from pyskydive.probes.flow.ovsdb_client import OvsdbClient
from pyskydive.probes.flow.sflow import SflowCapture

__all__ = ["DEFAULT_HEADER", "OvsSflowCapture", "sflow_transaction", "unset_transaction"]

log = logging.getLogger(__name__)

#: Bytes of each sampled packet OVS copies when the capture sets no ``HeaderSize``.
DEFAULT_HEADER: Final = 128
#: Interface whose address OVS gives as the sFlow agent address.
AGENT_INTERFACE: Final = "lo"
_ROW_NAME: Final = "sks_sflow"


def _map(values: dict[str, str]) -> list[Any]:
    return ["map", [[k, v] for k, v in sorted(values.items())]]


def sflow_transaction(
    bridge_uuid: str,
    target: str,
    *,
    sampling: int,
    polling: int,
    header: int,
    capture_id: str,
) -> list[dict[str, Any]]:
    """The operations that create our ``sFlow`` row and point the bridge at it."""
    row = {
        "agent": AGENT_INTERFACE,
        "targets": target,
        "sampling": sampling,
        "polling": polling,
        "header": header,
        "external_ids": _map(
            {"skydive-probe-id": bridge_uuid.replace("-", "_"), "skydive-capture-id": capture_id}
        ),
    }
    return [
        {"op": "insert", "table": "sFlow", "row": row, "uuid-name": _ROW_NAME},
        {
            "op": "update",
            "table": "Bridge",
            "where": [["_uuid", "==", ["uuid", bridge_uuid]]],
            "row": {"sflow": ["named-uuid", _ROW_NAME]},
        },
    ]


def unset_transaction(bridge_uuid: str, sflow_uuid: str) -> list[dict[str, Any]]:
    """Clear the bridge's ``sflow`` if it still is ``sflow_uuid`` (the row is then collected)."""
    return [
        {
            "op": "update",
            "table": "Bridge",
            "where": [
                ["_uuid", "==", ["uuid", bridge_uuid]],
                ["sflow", "includes", ["uuid", sflow_uuid]],
            ],
            "row": {"sflow": ["set", []]},
        }
    ]


class OvsSflowCapture(SflowCapture):
    """sFlow of an OVS bridge into this capture's collector (module docstring)."""

    what = "ovssflow collector"

    _sflow_uuid: str | None = None

    @property
    def bridge_uuid(self) -> str:
        uuid = self.target.metadata.get("UUID")
        if not isinstance(uuid, str) or not uuid:
            raise ProbeError(f"ovsbridge node {self.target.name!r} has no OVS UUID")
        return uuid

    @property
    def ovs_target(self) -> str:
        """Where OVS sends: the collector's address, loopback for a wildcard bind address."""
        if self._host in ("0.0.0.0", ""):
            return f"127.0.0.1:{self._port}"
        if self._host == "::":
            return f"[::1]:{self._port}"
        return self.address

    async def start(self) -> None:
        bridge = self.bridge_uuid
        await super().start()
        try:
            self._sflow_uuid = await self._configure(bridge)
        except BaseException:
            await super().stop()
            raise
        log.info(
            "capture %s: bridge %s sends sFlow to %s", self.spec.id, self.target.name, self.address
        )

    async def _configure(self, bridge: str) -> str:
        ops = sflow_transaction(
            bridge,
            self.ovs_target,
            sampling=self.spec.sampling_rate,
            polling=self.spec.polling_interval,
            header=self.spec.header_size or DEFAULT_HEADER,
            capture_id=self.spec.id,
        )
        async with OvsdbClient(self.env.config.ovs.ovsdb) as ovsdb:
            results = await ovsdb.transact(ops)
        if len(results) < 2 or results[1].get("count") != 1:
            raise ProbeError(f"bridge {self.target.name!r} ({bridge}) is not in OVSDB")
        inserted = results[0].get("uuid")
        if not (isinstance(inserted, list) and len(inserted) == 2):
            raise ProbeError(f"OVSDB answered the sFlow insert with {results[0]!r}")
        return str(inserted[1])

    async def stop(self) -> None:
        sflow_uuid, self._sflow_uuid = self._sflow_uuid, None
        if sflow_uuid is not None:
            try:
                async with OvsdbClient(self.env.config.ovs.ovsdb) as ovsdb:
                    await ovsdb.transact(unset_transaction(self.bridge_uuid, sflow_uuid))
            except ProbeError as exc:
                log.warning(
                    "capture %s: cannot remove sFlow from bridge %s: %s",
                    self.spec.id,
                    self.target.name,
                    exc,
                )
        await super().stop()
