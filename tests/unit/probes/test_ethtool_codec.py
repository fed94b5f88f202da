"""SIOCETHTOOL layouts on real bytes: the conversations recorded from a veth, a bridge, a tap
and lo (``tests/data/ethtool/record.py``) are replayed request by request, and the result is
checked against what the ethtool program printed for the same interfaces."""

from __future__ import annotations

import contextlib
import errno
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from pyskydive.errors import ProtocolError
from pyskydive.probes.topology import ethtool_codec as ec

DATA = Path(__file__).resolve().parents[2] / "data" / "ethtool"
FILES = sorted(DATA.glob("*.json"))


def load(kind: str) -> dict[str, Any]:
    return json.loads((DATA / f"{kind}.json").read_text())  # type: ignore[no-any-return]


def replay(data: dict[str, Any]) -> ec.Transact:
    """A transact that checks each request against the recording and returns its reply."""
    exchanges = iter(data["exchanges"])

    def transact(request: bytes) -> bytes:
        entry = next(exchanges)
        assert request.hex() == entry["request"]
        if "errno" in entry:
            raise OSError(entry["errno"], "recorded error")
        return bytes.fromhex(entry["reply"])

    return transact


def ethtool_i(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def ethtool_k(text: str) -> dict[str, bool]:
    return {
        m.group(1): m.group(2) == "on"
        for m in re.finditer(r"^\s*([\w-]+): (on|off)", text, re.MULTILINE)
    }


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_replay_gives_the_recorded_metadata(path: Path) -> None:
    data = json.loads(path.read_text())
    info = ec.query(replay(data))
    assert ec.to_metadata(info) == data["metadata"]


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_features_agree_with_the_ethtool_program(path: Path) -> None:
    data = json.loads(path.read_text())
    features = dict(ec.query(replay(data)).features)
    shown = ethtool_k(data["ethtool_k"])
    common = features.keys() & shown.keys()
    # ethtool -k prints the kernel's names of the individual features (besides a few
    # aggregates and renamed ones), so most of ours must be there, with the same value.
    assert len(common) >= len(features) * 3 // 4
    assert {k: features[k] for k in common} == {k: shown[k] for k in common}
    assert "highdma" in features
    assert "tx-checksum-ip-generic" in features


@pytest.mark.parametrize("kind", ["veth", "bridge", "tun"])
def test_driver_info_agrees_with_the_ethtool_program(kind: str) -> None:
    data = load(kind)
    md = ec.query(replay(data))
    shown = ethtool_i(data["ethtool_i"])
    assert md.driver is not None
    assert md.driver.driver == shown["driver"] == kind
    assert md.driver.version == shown["version"]
    assert md.driver.bus_info == shown["bus-info"]


def test_veth_has_speed_duplex_and_its_peer_in_the_statistics() -> None:
    md = ec.to_metadata(ec.query(replay(load("veth"))))
    assert md["Driver"] == "veth"
    assert md["Speed"] == 10000
    assert md["Duplex"] == "full"
    assert ec.peer_ifindex(md) == md["EthtoolStats"]["peer_ifindex"] > 0
    # The two-step GLINKSETTINGS: the handshake asks with 0 words, the kernel says how many.
    first, second = (bytes.fromhex(e["request"]) for e in load("veth")["exchanges"][1:3])
    assert struct.unpack_from("=I", first)[0] == ec.ETHTOOL_GLINKSETTINGS
    assert struct.unpack_from("=b", first, 15)[0] == 0
    assert struct.unpack_from("=b", second, 15)[0] > 0


def test_loopback_has_features_but_no_driver_nor_speed() -> None:
    info = ec.query(replay(load("lo")))
    md = ec.to_metadata(info)
    assert "Driver" not in md and "Speed" not in md and "EthtoolStats" not in md
    assert md["Features"]["loopback"] is True
    assert ("GDRVINFO", errno.EOPNOTSUPP) in info.refused


def _gset_reply(speed: int, duplex: int) -> bytes:
    fields = [ec.ETHTOOL_GSET, 0, 0, speed & 0xFFFF, duplex, 0, 0, 0, 1, 0, 0, 0, speed >> 16]
    return struct.pack("=IIIHBBBBBBIIHBBI8x", *fields, 0, 0, 0)


def test_legacy_gset_when_link_settings_are_not_supported() -> None:
    def transact(request: bytes) -> bytes:
        (cmd,) = struct.unpack_from("=I", request)
        if cmd == ec.ETHTOOL_GSET:
            return _gset_reply(100000, 0)  # 100 Gb/s needs speed_hi
        raise OSError(errno.EOPNOTSUPP, "not supported")

    info = ec.query(transact)
    assert info.link == ec.LinkSettings(speed=100000, duplex="half", autoneg=True)
    assert ec.to_metadata(info) == {"Speed": 100000, "Duplex": "half"}


def test_unknown_speed_and_duplex_are_left_out() -> None:
    assert ec.decode_gset(_gset_reply(0xFFFFFFFF, 0xFF)).speed is None
    assert ec.decode_gset(_gset_reply(0, 0xFF)) == ec.LinkSettings(None, None, True)


def test_a_vanished_interface_ends_the_query() -> None:
    def transact(request: bytes) -> bytes:
        raise OSError(errno.ENODEV, "No such device")

    with pytest.raises(OSError) as exc:
        ec.query(transact)
    assert exc.value.errno == errno.ENODEV


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_truncated_replies_raise_protocol_errors_only(path: Path) -> None:
    data = json.loads(path.read_text())
    for cut_at in range(len(data["exchanges"])):
        if "reply" not in data["exchanges"][cut_at]:
            continue
        for size in (0, 3, 8, 15, 20, 47):
            exchanges = [dict(e) for e in data["exchanges"]]
            exchanges[cut_at]["reply"] = exchanges[cut_at]["reply"][: size * 2]
            with contextlib.suppress(ProtocolError):
                ec.query(replay({"exchanges": exchanges}))


def test_absurd_string_counts_are_refused() -> None:
    reply = struct.pack("=IIQI", ec.ETHTOOL_GSSET_INFO, 0, 1 << ec.ETH_SS_STATS, 10**9)
    with pytest.raises(ProtocolError):
        ec.decode_sset_info(reply)
