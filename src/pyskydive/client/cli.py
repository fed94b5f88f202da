"""``skydive client ...``: the command-line client of the analyzer's API.

::

    skydive client [--analyzer HOST:PORT] [--username U --password P] [--format table|json]
                   [--tls] [--insecure] [--cacert FILE] [--timeout S] COMMAND ...

    status
    query GREMLIN            (also: topology query [GREMLIN | --gremlin GREMLIN] [--format dot])
    topology get
    capture  create (--gremlin Q | -p PROBE_PATH | --node TID) [--bpf F] [--type T] [--name N]
    capture  delete ID|PROBE_PATH|GREMLIN...  (a path or query: every capture on that query)
    alert    create --expression E [--action URL] [--trigger graph|duration:10s]
    node     create --node-type T --name N [--metadata k=v,...]
    edge     create --parent ID --child ID --relation-type R [--metadata k=v,...]
    noderule create --action create|update [--metadata k=v,...] [--query Q] [--node-name ...]
    edgerule create --src Q --dst Q [--relation-type R] [--metadata k=v,...]
    RESOURCE list | get ID | delete ID...   (RESOURCE: any of the six above)

The global options are accepted before the command and after it.  The analyzer is found from
``--analyzer``, else the first entry of ``SKYDIVE_ANALYZERS`` (comma or space separated), else
the first of ``--conf``'s ``analyzers``, else 127.0.0.1:8082; credentials from
``--username``/``--password``, else ``SKYDIVE_USERNAME``/``SKYDIVE_PASSWORD``.

Output is a table by default, the analyzer's JSON with ``--format json``.  Errors are one line
on stderr (``skydive: error: ...``): exit status 1 when the analyzer cannot be reached or
refuses the request, 2 on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import ssl
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from pyskydive.client.api import Client, ClientError
from pyskydive.client.defs import gremlin_string, parse_metadata, probe_path_to_gremlin
from pyskydive.client.table import (
    RESOURCE_COLUMNS,
    format_query_result,
    format_status,
    render,
)
from pyskydive.config import Address, ConfigError, load_config_with_warnings
from pyskydive.errors import SkydiveError
from pyskydive.gremlin.probepath import capture_query

__all__ = ["DEFAULT_ANALYZER", "UsageError", "add_client_parser", "resolve_analyzer", "run"]

DEFAULT_ANALYZER = Address("127.0.0.1", 8082)
FORMATS = ("table", "json", "dot")


class UsageError(SkydiveError):
    """A bad command line the parser could not catch (exit status 2)."""


# -- settings -----------------------------------------------------------------------------


def resolve_analyzer(
    option: str | None, env: Mapping[str, str], conf: str | None
) -> tuple[Address, str]:
    """The analyzer address and where it came from, in order: ``--analyzer``,
    ``SKYDIVE_ANALYZERS`` (first entry), ``--conf``'s ``analyzers`` (first), the default."""
    if option:
        try:
            return Address.parse(option), "--analyzer"
        except ValueError as exc:
            raise UsageError(f"--analyzer: {exc}") from exc
    entries = [e for e in re.split(r"[,\s]+", env.get("SKYDIVE_ANALYZERS", "")) if e]
    if entries:
        try:
            return Address.parse(entries[0]), "SKYDIVE_ANALYZERS"
        except ValueError as exc:
            raise UsageError(f"SKYDIVE_ANALYZERS: {exc}") from exc
    if conf:
        # The file alone: the client's own variables (SKYDIVE_USERNAME, ...) are no keys.
        config, _ = load_config_with_warnings(conf, env={})
        if config.analyzers:
            return config.analyzers[0], conf
    return DEFAULT_ANALYZER, "default"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the client needs from the command line and the environment."""

    analyzer: Address
    username: str | None
    password: str | None
    tls: bool
    verify: bool | ssl.SSLContext
    timeout: float
    format: str

    @property
    def base_url(self) -> str:
        host = self.analyzer.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{self.analyzer.port}"


def settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    analyzer, _ = resolve_analyzer(
        getattr(args, "analyzer", None), env, getattr(args, "conf", None)
    )
    username = getattr(args, "username", None) or env.get("SKYDIVE_USERNAME") or None
    password = getattr(args, "password", None) or env.get("SKYDIVE_PASSWORD") or None
    if password is not None and username is None:
        raise UsageError("--password needs --username (or SKYDIVE_USERNAME)")
    insecure = bool(getattr(args, "insecure", False))
    cacert: str | None = getattr(args, "cacert", None)
    verify: bool | ssl.SSLContext = True
    if insecure:
        verify = False
    elif cacert:
        try:
            verify = ssl.create_default_context(cafile=cacert)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--cacert: cannot load {cacert}: {exc}") from exc
    timeout = float(getattr(args, "timeout", 30.0))
    if timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    return Settings(
        analyzer=analyzer,
        username=username,
        password=password,
        tls=bool(getattr(args, "tls", False)) or insecure or bool(cacert),
        verify=verify,
        timeout=timeout,
        format=getattr(args, "format", "table"),
    )


# -- command handlers ---------------------------------------------------------------------


@dataclass
class Context:
    """What a command handler gets: the parsed arguments, a client, the output format."""

    args: argparse.Namespace
    client: Client
    format: str
    out: TextIO
    err: TextIO

    def json(self, value: Any) -> None:
        self.print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())

    def print(self, text: str) -> None:
        self.out.write(text + "\n")


Handler = Callable[[Context], int]


def _no_dot(ctx: Context) -> None:
    if ctx.format == "dot":
        raise UsageError("--format dot only applies to 'topology query'")


def _status(ctx: Context) -> int:
    _no_dot(ctx)
    body = ctx.client.status()
    if ctx.format == "json":
        ctx.json(body)
    else:
        ctx.print(format_status(body))
    return 0


def _query(ctx: Context) -> int:
    gremlin = getattr(ctx.args, "gremlin_option", None) or ctx.args.gremlin or "G"
    if ctx.format == "dot":
        ctx.out.write(ctx.client.query_dot(gremlin).rstrip("\n") + "\n")
        return 0
    result = ctx.client.query(gremlin)
    if ctx.format == "json":
        ctx.json(result)
    else:
        ctx.print(format_query_result(result))
    return 0


def _topology_get(ctx: Context) -> int:
    _no_dot(ctx)
    body = ctx.client.topology()
    if ctx.format == "json":
        ctx.json(body)
    else:
        ctx.print(format_query_result(body))
    return 0


def _show(ctx: Context, resource: str, objs: list[dict[str, Any]], raw: Any) -> None:
    if ctx.format == "json":
        ctx.json(raw)
    else:
        ctx.print(render(RESOURCE_COLUMNS[resource], objs))


def _list(resource: str) -> Handler:
    def handler(ctx: Context) -> int:
        _no_dot(ctx)
        objs = ctx.client.list(resource)
        _show(ctx, resource, list(objs.values()), objs)
        return 0

    return handler


def _get(resource: str) -> Handler:
    def handler(ctx: Context) -> int:
        _no_dot(ctx)
        obj = ctx.client.get(resource, ctx.args.ident)
        _show(ctx, resource, [obj], obj)
        return 0

    return handler


def _delete(resource: str) -> Handler:
    def handler(ctx: Context) -> int:
        _no_dot(ctx)
        status = 0
        for ident in ctx.args.idents:
            try:
                ctx.client.delete(resource, ident)
            except ClientError as exc:
                ctx.err.write(f"skydive: error: {exc}\n")
                status = 1
        return status

    return handler


def _capture_selector(ident: str) -> str | None:
    """The Gremlin of a ``capture delete`` argument written as a probe path or a query, or
    None for a capture ID (an argument without ``/``, ``[``, ``*`` or ``(`` that does not
    start with ``G.``)."""
    text = ident.strip()
    if text[:2] not in ("G.", "g.") and not any(c in text for c in "/[*("):
        return None
    try:
        return capture_query(text)
    except ValueError as exc:
        raise UsageError(f"capture delete: {exc}") from exc


def _capture_delete(ctx: Context) -> int:
    """``capture delete ID|PROBE_PATH|GREMLIN...``: a path or query deletes every capture
    whose GremlinQuery is the same query (a stored probe path is compared translated)."""
    _no_dot(ctx)
    selectors = [(ident, _capture_selector(ident)) for ident in ctx.args.idents]
    captures: dict[str, dict[str, Any]] = {}
    if any(query is not None for _, query in selectors):
        captures = ctx.client.list("capture")
    status = 0
    for ident, query in selectors:
        if query is None:
            targets = [ident]
        else:
            targets = [uid for uid, c in captures.items() if _stored_query(c) == query]
            if not targets:
                ctx.err.write(f"skydive: error: no capture on {ident!r} ({query})\n")
                status = 1
        for target in targets:
            try:
                ctx.client.delete("capture", target)
            except ClientError as exc:
                ctx.err.write(f"skydive: error: {exc}\n")
                status = 1
    return status


def _stored_query(capture: dict[str, Any]) -> str | None:
    try:
        return capture_query(str(capture.get("GremlinQuery") or ""))
    except ValueError:  # a stored probe path that no longer translates: matches nothing
        return None


def _create(resource: str, build: Callable[[argparse.Namespace], dict[str, Any]]) -> Handler:
    def handler(ctx: Context) -> int:
        _no_dot(ctx)
        body = build(ctx.args)
        created = ctx.client.create(resource, body)
        _show(ctx, resource, [created], created)
        return 0

    return handler


def _metadata(args: argparse.Namespace, **fixed: str | None) -> dict[str, Any]:
    try:
        metadata = parse_metadata(args.metadata or "")
    except ValueError as exc:
        raise UsageError(f"--metadata: {exc}") from exc
    metadata.update({key: value for key, value in fixed.items() if value})
    return metadata


def _strip(body: dict[str, Any]) -> dict[str, Any]:
    """Leave out the optional fields that were not given (the analyzer has the defaults)."""
    return {k: v for k, v in body.items() if v is not None and v != "" and v is not False}


def _element(args: argparse.Namespace, metadata: dict[str, Any]) -> dict[str, Any]:
    host = args.host or socket.gethostname()
    now = int(time.time() * 1000)
    return {
        "ID": str(uuid.uuid4()),
        "Metadata": metadata,
        "Host": host,
        "Origin": f"client.{host}",
        "CreatedAt": now,
        "UpdatedAt": now,
        "Revision": 1,
    }


def _build_node(args: argparse.Namespace) -> dict[str, Any]:
    metadata = _metadata(args, Name=args.name, Type=args.node_type)
    for key in ("Name", "Type"):
        if not metadata.get(key):
            flag = "--name" if key == "Name" else "--node-type"
            raise UsageError(f"node create: a node needs a {key} ({flag} or --metadata {key}=...)")
    return _element(args, metadata)


def _build_edge(args: argparse.Namespace) -> dict[str, Any]:
    metadata = _metadata(args, RelationType=args.relation_type)
    if not metadata.get("RelationType"):
        raise UsageError("edge create: an edge needs a RelationType (--relation-type)")
    return {**_element(args, metadata), "Parent": args.parent, "Child": args.child}


def _build_noderule(args: argparse.Namespace) -> dict[str, Any]:
    metadata = _metadata(args, Name=args.node_name, Type=args.node_type)
    if args.action == "create" and not (metadata.get("Name") and metadata.get("Type")):
        raise UsageError(
            "noderule create: a 'create' rule needs --node-name and --node-type "
            "(or Name and Type in --metadata)"
        )
    if args.action == "update" and not args.query:
        raise UsageError("noderule create: an 'update' rule needs --query")
    body = _strip({"Name": args.name, "Description": args.description, "Query": args.query})
    return {**body, "Action": args.action, "Metadata": metadata}


def _build_edgerule(args: argparse.Namespace) -> dict[str, Any]:
    metadata = _metadata(args, RelationType=args.relation_type)
    if not metadata.get("RelationType"):
        raise UsageError("edgerule create: the link needs a RelationType (--relation-type)")
    body = _strip({"Name": args.name, "Description": args.description})
    return {**body, "Src": args.src, "Dst": args.dst, "Metadata": metadata}


def _build_alert(args: argparse.Namespace) -> dict[str, Any]:
    return _strip(
        {
            "Name": args.name,
            "Description": args.description,
            "Expression": args.expression,
            "Action": args.action,
            "Trigger": args.trigger,
        }
    )


def _build_capture(args: argparse.Namespace) -> dict[str, Any]:
    if args.probe_path:
        try:
            query = probe_path_to_gremlin(args.probe_path)
        except ValueError as exc:
            raise UsageError(f"-p/--probe-path: {exc}") from exc
    elif args.node:  # as Skydive's --node: the node of that TID
        try:
            query = f"G.V().Has('TID', {gremlin_string(args.node)})"
        except ValueError as exc:
            raise UsageError(f"--node: {exc}") from exc
    else:
        query = args.gremlin
    return _strip(
        {
            "GremlinQuery": query,
            "BPFFilter": args.bpf,
            "Name": args.name,
            "Description": args.description,
            "Type": args.type,
            "Port": args.port,
            "SamplingRate": args.sampling_rate,
            "PollingInterval": args.polling_interval,
            "HeaderSize": args.header_size,
            "RawPacketLimit": args.rawpacket_limit,
            "ExtraTCPMetric": args.extra_tcp_metric,
            "IPDefrag": args.ip_defrag,
            "ReassembleTCP": args.reassemble_tcp,
            "LayerKeyMode": args.layer_key_mode,
            "Target": args.target,
            "TargetType": args.target_type,
        }
    )


# -- the parser ---------------------------------------------------------------------------


def _common(hidden: bool = False) -> argparse.ArgumentParser:
    """Options valid before and after the command (SUPPRESS: a later copy of an option
    does not reset an earlier one to its default).  ``hidden``: the copy on each command,
    left out of its help to keep its usage short (``skydive client -h`` lists them)."""
    p = argparse.ArgumentParser(add_help=False)
    s = argparse.SUPPRESS

    def add(*flags: str, help: str, **kw: Any) -> None:
        p.add_argument(*flags, default=s, help=s if hidden else help, **kw)

    add("--analyzer", metavar="HOST:PORT", help="analyzer address (default: see below)")
    add("--username", help="username (default: $SKYDIVE_USERNAME)")
    add("--password", help="password (default: $SKYDIVE_PASSWORD)")
    add("--format", choices=FORMATS, help="output: table (default), json, dot")
    add("--tls", action="store_true", help="talk HTTPS to the analyzer")
    add("--insecure", action="store_true", help="HTTPS without certificate verification")
    add("--cacert", metavar="FILE", help="CA certificate to verify the analyzer with")
    add("--timeout", metavar="SECONDS", type=float, help="request timeout (default 30)")
    return p


def _hidden_conf() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "-c", "--conf", metavar="FILE", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    return p


if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _leaf(
    sub: SubParsers,
    name: str,
    help_text: str,
    handler: Handler,
    parents: list[argparse.ArgumentParser],
    aliases: tuple[str, ...] = (),
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, parents=parents, aliases=list(aliases)
    )
    parser.set_defaults(client_handler=handler)
    return parser


def _group(sub: SubParsers, name: str, help_text: str, aliases: tuple[str, ...] = ()) -> SubParsers:
    parser = sub.add_parser(name, help=help_text, aliases=list(aliases))
    return parser.add_subparsers(dest=f"{name}_action", metavar="ACTION", required=True)


def _crud(
    sub: SubParsers,
    resource: str,
    parents: list[argparse.ArgumentParser],
    aliases: tuple[str, ...] = (),
    get: bool = True,
    delete: Handler | None = None,
) -> SubParsers:
    """``RESOURCE list|get|delete``; returns the actions, for the resource's ``create``."""
    actions = _group(sub, resource, f"manage {resource}s", aliases)
    _leaf(actions, "list", f"list the {resource}s", _list(resource), parents)
    if get:
        g = _leaf(actions, "get", f"show one {resource}", _get(resource), parents)
        g.add_argument("ident", metavar="ID")
    d = _leaf(actions, "delete", f"delete {resource}s", delete or _delete(resource), parents)
    d.add_argument("idents", metavar="ID" if delete is None else "ID|PATH|QUERY", nargs="+")
    return actions


def add_client_parser(sub: SubParsers, conf: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register ``skydive client`` on the top-level sub-commands; ``conf`` is the
    ``--conf`` parent parser of the top level (so ``--conf`` works after ``client`` too)."""
    parents = [_hidden_conf(), _common(hidden=True)]
    client = sub.add_parser(
        "client",
        parents=[conf, _common()],
        help="command-line client of the analyzer's API",
        description="Query and configure a Skydive analyzer through its REST API.",
        epilog="The analyzer is --analyzer, else the first of $SKYDIVE_ANALYZERS, else the "
        "first of the --conf file's 'analyzers', else 127.0.0.1:8082. The options above are "
        "also accepted after the command.",
    )
    cmds = client.add_subparsers(dest="client_command", metavar="COMMAND", required=True)

    _leaf(cmds, "status", "the analyzer's status", _status, parents)

    q = _leaf(cmds, "query", "run a Gremlin query", _query, parents)
    q.add_argument("gremlin", nargs="?", metavar="GREMLIN", help="default: G")
    q.add_argument("--gremlin", dest="gremlin_option", metavar="GREMLIN", default=None)
    topology = _group(cmds, "topology", "query the topology")
    tq = _leaf(topology, "query", "run a Gremlin query", _query, parents)
    tq.add_argument("gremlin", nargs="?", metavar="GREMLIN", help="default: G")
    tq.add_argument("--gremlin", dest="gremlin_option", metavar="GREMLIN", default=None)
    _leaf(topology, "get", "the whole topology (GET /api/topology)", _topology_get, parents)

    actions = _crud(cmds, "capture", parents, delete=_capture_delete)
    c = _leaf(actions, "create", "start capturing", _create("capture", _build_capture), parents)
    what = c.add_mutually_exclusive_group(required=True)
    what.add_argument("--gremlin", metavar="QUERY", help="Gremlin query of the nodes")
    what.add_argument(
        "-p", "--probe-path", "--probepath", dest="probe_path", metavar="PROBE_PATH",
        help="seed probe path, e.g. 'host1[Type=host]/br1[Type=ovsbridge]' ('*': any host)",
    )  # fmt: skip
    what.add_argument("--node", metavar="TID", help="the node of this TID")
    c.add_argument("--bpf", metavar="FILTER", help="BPF filter")
    c.add_argument("--type", help="capture type (afpacket, pcap, sflow, ...)")
    c.add_argument("--name")
    c.add_argument("--description")
    c.add_argument("--port", type=int)
    c.add_argument("--samplingrate", "--sampling-rate", dest="sampling_rate", type=int)
    c.add_argument("--pollinginterval", "--polling-interval", dest="polling_interval", type=int)
    c.add_argument("--header-size", dest="header_size", type=int)
    c.add_argument("--rawpacket-limit", dest="rawpacket_limit", type=int)
    c.add_argument("--extra-tcp-metric", action="store_true")
    c.add_argument("--ip-defrag", action="store_true")
    c.add_argument("--reassemble-tcp", "--reassamble-tcp", action="store_true")
    c.add_argument("--layer-key-mode", choices=("L2", "L3"))
    c.add_argument("--target")
    c.add_argument("--target-type")

    actions = _crud(cmds, "alert", parents)
    a = _leaf(actions, "create", "create an alert", _create("alert", _build_alert), parents)
    a.add_argument("--expression", required=True, help="Gremlin or JavaScript expression")
    a.add_argument("--action", help="http(s):// webhook or file:// script")
    a.add_argument("--trigger", help="graph (default) or duration:10s")
    a.add_argument("--name")
    a.add_argument("--description")

    actions = _crud(cmds, "node", parents)
    n = _leaf(actions, "create", "create a node", _create("node", _build_node), parents)
    n.add_argument("--node-type", metavar="TYPE")
    n.add_argument("--name")
    n.add_argument("--metadata", metavar="k=v,...")
    n.add_argument("--host", help="default: this host's name")

    actions = _crud(cmds, "edge", parents)
    e = _leaf(actions, "create", "create an edge", _create("edge", _build_edge), parents)
    e.add_argument("--parent", required=True, metavar="ID")
    e.add_argument("--child", required=True, metavar="ID")
    e.add_argument("--relation-type", "--edge-type", dest="relation_type", metavar="TYPE")
    e.add_argument("--metadata", metavar="k=v,...")
    e.add_argument("--host", help="default: this host's name")

    actions = _crud(cmds, "noderule", parents, aliases=("node-rule",))
    nr = _leaf(
        actions, "create", "create a node rule", _create("noderule", _build_noderule), parents
    )
    nr.add_argument("--action", required=True, choices=("create", "update"))
    nr.add_argument("--metadata", metavar="k=v,...")
    nr.add_argument("--query", metavar="GREMLIN", help="the nodes an 'update' rule applies to")
    nr.add_argument("--node-name", metavar="NAME", help="Name of the node a 'create' rule adds")
    nr.add_argument("--node-type", metavar="TYPE", help="Type of the node a 'create' rule adds")
    nr.add_argument("--name")
    nr.add_argument("--description")

    actions = _crud(cmds, "edgerule", parents, aliases=("edge-rule",))
    er = _leaf(
        actions, "create", "create an edge rule", _create("edgerule", _build_edgerule), parents
    )
    er.add_argument("--src", required=True, metavar="GREMLIN")
    er.add_argument("--dst", required=True, metavar="GREMLIN")
    er.add_argument("--relation-type", "--relationtype", dest="relation_type", metavar="TYPE")
    er.add_argument("--metadata", metavar="k=v,...")
    er.add_argument("--name")
    er.add_argument("--description")
    return client


# -- entry point --------------------------------------------------------------------------


def run(
    args: argparse.Namespace,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the parsed ``skydive client`` command; return the exit status."""
    env = os.environ if env is None else env
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        conf = settings(args, env)
        with Client(
            conf.base_url,
            username=conf.username,
            password=conf.password,
            timeout=conf.timeout,
            verify=conf.verify,
        ) as client:
            handler: Handler = args.client_handler
            return handler(Context(args, client, conf.format, out, err))
    except ConfigError as exc:
        where = f"{args.conf}: " if getattr(args, "conf", None) and exc.key else ""
        err.write(f"skydive: error: configuration error: {where}{exc}\n")
        return 2
    except UsageError as exc:
        err.write(f"skydive: error: {exc}\n")
        return 2
    except ClientError as exc:
        err.write(f"skydive: error: {exc}\n")
        return 1
