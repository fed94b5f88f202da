"""Config loading: defaults, the documented default file, errors naming keys, env overrides."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from pyskydive.config import (
    Address,
    Config,
    ConfigError,
    check_config,
    dump_config,
    load_config,
    load_config_with_warnings,
)
from pyskydive.config.env import env_name
from pyskydive.config.keys import LeafKind, leaf_keys

DEFAULT_FILE = Path(__file__).parents[3] / "etc" / "skydive.yml.default"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "skydive.yml"
    path.write_text(text)
    return str(path)


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), env=env or {})


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, env)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- defaults and the documented default file ------------------------------------------------


def test_defaults() -> None:
    cfg = load_config(None, env={})
    assert cfg == Config()
    assert cfg.host_id == socket.gethostname()
    assert cfg.analyzers == [Address("127.0.0.1", 8082)]
    assert cfg.analyzer.listen == Address("127.0.0.1", 8082)
    assert cfg.agent.listen == Address("127.0.0.1", 8081)
    assert cfg.agent.topology.probes == ["netlink", "netns", "ethtool"]
    assert cfg.agent.topology.netns.run_path == "/var/run/netns"
    assert cfg.agent.topology.netlink.metrics_update == 30
    assert cfg.agent.metadata == {}
    assert cfg.logging.level == "INFO"


def test_empty_file_and_empty_sections_are_defaults(tmp_path: Path) -> None:
    assert load_text(tmp_path, "") == Config()
    assert load_text(tmp_path, "# only a comment\n") == Config()
    assert load_text(tmp_path, "analyzer:\nagent:\n  topology:\n") == Config()


def test_config_is_frozen() -> None:
    cfg = Config()
    with pytest.raises(pydantic.ValidationError):
        cfg.host_id = "other"


def test_default_file_loads_to_defaults() -> None:
    assert load_config(str(DEFAULT_FILE), env={}) == Config()


def test_default_file_documents_every_key() -> None:
    text = DEFAULT_FILE.read_text()
    data = yaml.safe_load(text)
    lines = text.splitlines()
    for leaf in leaf_keys():
        if leaf.path == ("host_id",):
            # its default is the hostname, so it is shown commented out
            assert any(line.startswith("# host_id: ") for line in lines)
            continue
        if leaf.path == ("analyzer", "data_dir"):
            # its default depends on the user (root or not), so it is shown commented out
            assert any(line.startswith("  # data_dir: ") for line in lines)
            continue
        node: Any = data
        for part in leaf.path:
            assert isinstance(node, dict) and part in node, f"{leaf.dotted} missing"
            node = node[part]
        # the key's line is preceded by a comment explaining it
        name = leaf.path[-1]
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{name}:"))
        assert lines[index - 1].strip().startswith("#"), f"{leaf.dotted} undocumented"


def test_dump_config_is_plain_json() -> None:
    dumped = dump_config(Config(agent={"metadata": {"rack": "r1"}}))  # type: ignore[arg-type]
    assert json.loads(json.dumps(dumped)) == dumped
    assert dumped["analyzers"] == ["127.0.0.1:8082"]
    assert dumped["agent"]["listen"] == "127.0.0.1:8081"
    assert dumped["agent"]["metadata"] == {"rack": "r1"}


# --- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "host", "port", "shown"),
    [
        ("analyzer.example.com:8082", "analyzer.example.com", 8082, "analyzer.example.com:8082"),
        ("10.0.0.1:0", "10.0.0.1", 0, "10.0.0.1:0"),
        (":8082", "0.0.0.0", 8082, "0.0.0.0:8082"),
        ("8082", "127.0.0.1", 8082, "127.0.0.1:8082"),
        (8082, "127.0.0.1", 8082, "127.0.0.1:8082"),
        ("[::1]:8082", "::1", 8082, "[::1]:8082"),
        ("[fe80::1%eth0]:65535", "fe80::1%eth0", 65535, "[fe80::1%eth0]:65535"),
    ],
)
def test_address_forms(written: object, host: str, port: int, shown: str) -> None:
    address = Address.parse(written)
    assert (address.host, address.port, str(address)) == (host, port, shown)


def test_values_in_file(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        """
host_id: 1234
analyzers: "10.0.0.1:8082, [::1]:8082 :9"
agent:
  listen: ":8081"
  topology:
    probes: [ovsdb, docker]
    netlink: {metrics_update: 5m}
  metadata: {rack: r1, site: {name: paris, floors: [1, 2]}}
logging: {level: warn}
""",
    )
    assert cfg.host_id == "1234"
    assert cfg.analyzers == [
        Address("10.0.0.1", 8082),
        Address("::1", 8082),
        Address("0.0.0.0", 9),
    ]
    assert cfg.agent.listen == Address("0.0.0.0", 8081)
    assert cfg.agent.topology.probes == ["ovsdb", "docker"]
    assert cfg.agent.topology.netlink.metrics_update == 300
    assert cfg.agent.metadata == {"rack": "r1", "site": {"name": "paris", "floors": [1, 2]}}
    assert cfg.logging.level == "WARNING"


# --- errors naming the key -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hots_id: x", "hots_id: unknown key (did you mean 'host_id'?)"),
        ("zzz: 1", "zzz: unknown key"),
        ("agent: {lisen: ':1'}", "agent.lisen: unknown key (did you mean 'listen'?)"),
        ("agent: {topology: {qqq: 1}}", "agent.topology.qqq: unknown key"),
        (
            "agent:\n  topology:\n    netns:\n      run_pth: /x\n",
            "agent.topology.netns.run_pth: unknown key (did you mean 'run_path'?)",
        ),
    ],
)
def test_unknown_key(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "agent: {listen: 'localhost:70000'}",
            "agent.listen: invalid address 'localhost:70000' (port must be 0..65535)",
        ),
        (
            "analyzer: {listen: 'foo:bar'}",
            "analyzer.listen: invalid address 'foo:bar' (expected HOST:PORT)",
        ),
        (
            "analyzers: ['a:1', 'b:', 'c:3']",
            "analyzers[1]: invalid address 'b:' (expected HOST:PORT)",
        ),
        (
            "agent: {topology: {netlink: {metrics_update: 0}}}",
            "agent.topology.netlink.metrics_update: "
            "expected an integer number of seconds >= 1, got 0",
        ),
        (
            "agent: {topology: {netlink: {metrics_update: abc}}}",
            "agent.topology.netlink.metrics_update: "
            "expected an integer number of seconds >= 1, got 'abc'",
        ),
        ("host_id: ''", "host_id: must not be empty"),
        ("agent: [1]", "agent: expected a mapping of keys, got [1]"),
        ("agent: {metadata: [1]}", "agent.metadata: expected a mapping, got [1]"),
        (
            "agent: {topology: {probes: [netns, netns]}}",
            "agent.topology.probes: probe 'netns' listed twice",
        ),
    ],
)
def test_bad_value(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text) == expected


def test_unknown_probe_suggests_nearest(tmp_path: Path) -> None:
    message = error_of(tmp_path, "agent: {topology: {probes: [netlinc]}}")
    assert message.startswith("agent.topology.probes[0]: unknown probe 'netlinc'")
    assert "(did you mean 'netlink'?)" in message


def test_bad_logging_level(tmp_path: Path) -> None:
    message = error_of(tmp_path, "logging: {level: LOUD}")
    assert message.startswith("logging.level: expected a logging level (")
    assert message.endswith("got 'LOUD'")


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("agent:\n  listen: x\n   foo: 1\n", "line 3, column 7", "mapping values are not allowed"),
        ("agent:\n  listen: ':1'\n  listen: ':2'\n", "line 3, column 3", "duplicate key 'listen'"),
        ("agent: {\n", "line 2, column 1", "expected the node content"),
    ],
)
def test_yaml_syntax_error(tmp_path: Path, text: str, where: str, problem: str) -> None:
    path = write(tmp_path, text)
    message = error_of(tmp_path, text)
    assert message.startswith(f"{path} {where}: ")
    assert problem in message


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    message = error_of(tmp_path, "- a\n- b\n")
    assert "expected a mapping of keys at top level, got a list" in message


@pytest.mark.parametrize("name", ["missing.yml", ""])
def test_unreadable_file(tmp_path: Path, name: str) -> None:
    path = str(tmp_path / name)  # "" -> the directory itself
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith(f"cannot read config file {path}: ")
    assert "\n" not in str(info.value)


# --- environment overrides -------------------------------------------------------------------


def test_env_names_come_from_the_model() -> None:
    names = {env_name(leaf.path) for leaf in leaf_keys() if leaf.kind is not LeafKind.MAPPING}
    assert names == {
        "SKYDIVE_HOST_ID",
        "SKYDIVE_ANALYZERS",
        "SKYDIVE_ANALYZER_LISTEN",
        "SKYDIVE_ANALYZER_DATA_DIR",
        "SKYDIVE_AGENT_LISTEN",
        "SKYDIVE_AGENT_TOPOLOGY_PROBES",
        "SKYDIVE_AGENT_TOPOLOGY_NETNS_RUN_PATH",
        "SKYDIVE_AGENT_TOPOLOGY_NETLINK_METRICS_UPDATE",
        "SKYDIVE_LOGGING_LEVEL",
        "SKYDIVE_OVS_OVSDB",
        # authentication and TLS
        "SKYDIVE_ANALYZER_AUTH_API_BACKEND",
        "SKYDIVE_ANALYZER_AUTH_CLUSTER_BACKEND",
        "SKYDIVE_AGENT_AUTH_API_BACKEND",
        "SKYDIVE_AGENT_AUTH_CLUSTER_USERNAME",
        "SKYDIVE_AGENT_AUTH_CLUSTER_PASSWORD",
        "SKYDIVE_TLS_SERVER_CERT",
        "SKYDIVE_TLS_SERVER_KEY",
        "SKYDIVE_TLS_CLIENT_CERT",
        "SKYDIVE_TLS_CLIENT_KEY",
        "SKYDIVE_TLS_CA_CERT",
        # flows (issue 5)
        "SKYDIVE_AGENT_FLOW_SFLOW_BIND_ADDRESS",
        "SKYDIVE_AGENT_FLOW_SFLOW_PORT_MIN",
        "SKYDIVE_AGENT_FLOW_SFLOW_PORT_MAX",
        "SKYDIVE_AGENT_FLOW_PCAPSOCKET_BIND_ADDRESS",
        "SKYDIVE_AGENT_FLOW_PCAPSOCKET_MIN_PORT",
        "SKYDIVE_AGENT_FLOW_PCAPSOCKET_MAX_PORT",
        "SKYDIVE_FLOW_UPDATE",
        "SKYDIVE_FLOW_EXPIRE",
        "SKYDIVE_FLOW_MAX_ENTRIES",
        "SKYDIVE_FLOW_DEFAULT_LAYER_KEY_MODE",
        "SKYDIVE_FLOW_PROTOCOL",
        # storage (issue 6)
        "SKYDIVE_ANALYZER_TOPOLOGY_BACKEND",
        "SKYDIVE_ANALYZER_TOPOLOGY_MAX_BUFFER_SIZE",
        "SKYDIVE_ANALYZER_FLOW_BACKEND",
        "SKYDIVE_ANALYZER_FLOW_MAX_BUFFER_SIZE",
    }


@pytest.mark.parametrize(
    ("attribute", "text", "value"),
    [
        ("host_id", "0042", "0042"),
        (
            "analyzers",
            "10.0.0.1:8082,10.0.0.2:8082",
            [Address("10.0.0.1", 8082), Address("10.0.0.2", 8082)],
        ),
        ("analyzers", "[::1]:1 :2", [Address("::1", 1), Address("0.0.0.0", 2)]),
        ("analyzers", "9000", [Address("127.0.0.1", 9000)]),
        ("analyzer.listen", ":9082", Address("0.0.0.0", 9082)),
        ("agent.listen", "[::1]:0", Address("::1", 0)),
        ("agent.listen", "9081", Address("127.0.0.1", 9081)),
        ("agent.topology.probes", "netns, ovsdb", ["netns", "ovsdb"]),
        ("agent.topology.probes", "docker ethtool", ["docker", "ethtool"]),
        ("agent.topology.netns.run_path", "/run/netns", "/run/netns"),
        ("agent.topology.netlink.metrics_update", "5", 5),
        ("agent.topology.netlink.metrics_update", "2m", 120),
        ("logging.level", "debug", "DEBUG"),
    ],
)
def test_env_override(attribute: str, text: str, value: object) -> None:
    # SKYDIVE_ + dotted key upper-cased, dots as underscores (names pinned in the test above)
    name = "SKYDIVE_" + attribute.replace(".", "_").upper()
    node: Any = load_config(None, env={name: text})
    for part in attribute.split("."):
        node = getattr(node, part)
    assert node == value


def test_env_metadata_entries_keep_case_and_parse_scalars() -> None:
    cfg = load_config(
        None,
        env={
            "SKYDIVE_AGENT_METADATA_rack": "r1",
            "SKYDIVE_AGENT_METADATA_Units": "4",
            "SKYDIVE_AGENT_METADATA_ratio": "0.5",
            "SKYDIVE_AGENT_METADATA_enabled": "true",
        },
    )
    assert cfg.agent.metadata == {"rack": "r1", "Units": 4, "ratio": 0.5, "enabled": True}


def test_env_wins_over_file(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        "agent: {listen: ':1', metadata: {rack: r1, row: a}}\nlogging: {level: ERROR}\n",
        env={"SKYDIVE_AGENT_LISTEN": ":2", "SKYDIVE_AGENT_METADATA_rack": "r2"},
    )
    assert cfg.agent.listen == Address("0.0.0.0", 2)
    assert cfg.agent.metadata == {"rack": "r2", "row": "a"}
    assert cfg.logging.level == "ERROR"


def test_env_ignores_other_variables_and_warns_about_unknown_skydive_ones() -> None:
    cfg, warnings = load_config_with_warnings(
        None,
        env={"PATH": "/bin", "SKYDIVE_AGENT_LISTN": ":1", "SKYDIVE_AGENT_METADATA": "x"},
    )
    assert cfg == Config()
    assert warnings == [
        "SKYDIVE_AGENT_LISTN: ignored, no such configuration key"
        " (did you mean SKYDIVE_AGENT_LISTEN?)",
        "SKYDIVE_AGENT_METADATA: ignored, no such configuration key"
        " (did you mean SKYDIVE_AGENT_METADATA_<NAME>?)",
    ]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "SKYDIVE_AGENT_LISTEN",
            "x",
            "SKYDIVE_AGENT_LISTEN (agent.listen): invalid address 'x' (expected HOST:PORT)",
        ),
        (
            "SKYDIVE_ANALYZERS",
            "a:1,b:x",
            "SKYDIVE_ANALYZERS (analyzers[1]): invalid address 'b:x' (expected HOST:PORT)",
        ),
        (
            "SKYDIVE_AGENT_TOPOLOGY_NETLINK_METRICS_UPDATE",
            "soon",
            "SKYDIVE_AGENT_TOPOLOGY_NETLINK_METRICS_UPDATE (agent.topology.netlink.metrics_update):"
            " expected an integer number of seconds >= 1, got 'soon'",
        ),
        ("SKYDIVE_HOST_ID", "", "SKYDIVE_HOST_ID (host_id): must not be empty"),
    ],
)
def test_bad_env_value_names_the_variable(name: str, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={name: text})
    assert str(info.value) == expected


def test_check_config_reads_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "logging: {level: ERROR}\n")
    monkeypatch.setenv("SKYDIVE_LOGGING_LEVEL", "critical")
    assert check_config(path).logging.level == "CRITICAL"
    monkeypatch.setenv("SKYDIVE_LOGGING_LEVEL", "LOUD")
    with pytest.raises(ConfigError, match=r"^SKYDIVE_LOGGING_LEVEL \(logging\.level\): "):
        check_config(path)


def test_ovs_ovsdb(tmp_path: Path) -> None:
    assert load_text(tmp_path, "").ovs.ovsdb == "unix:///var/run/openvswitch/db.sock"
    env = {"SKYDIVE_OVS_OVSDB": "tcp:127.0.0.1:6640"}
    assert load_text(tmp_path, "", env).ovs.ovsdb == "tcp:127.0.0.1:6640"
    assert load_text(tmp_path, "ovs: {ovsdb: 'unix:/run/db.sock'}").ovs.ovsdb == "unix:/run/db.sock"
    assert "ovs.ovsdb" in error_of(tmp_path, "ovs: {ovsdb: 'ssl:1.2.3.4:6640'}")
