"""``skydive``: the command line (agent, analyzer, allinone, client, version, config check).

Exit status: 0 on success and on a clean shutdown (SIGINT/SIGTERM), 1 when a running service
fails, 2 on a usage or configuration error. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from pyskydive import __version__
from pyskydive.client.cli import add_client_parser
from pyskydive.client.cli import run as run_client
from pyskydive.config import Config, ConfigError, load_config_with_warnings
from pyskydive.errors import SkydiveError

__all__ = ["main"]

log = logging.getLogger("pyskydive")


def _parser() -> argparse.ArgumentParser:
    # --conf is accepted before and after the command; the sub-level copy must not reset
    # the top-level value to its default, hence SUPPRESS there.
    conf = argparse.ArgumentParser(add_help=False)
    conf.add_argument(
        "-c",
        "--conf",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="YAML configuration file (see etc/skydive.yml.default)",
    )
    parser = argparse.ArgumentParser(
        prog="skydive",
        description="Skydive: real-time network topology and protocols analyzer",
    )
    parser.add_argument(
        "-c", "--conf", metavar="FILE", default=None, help="YAML configuration file"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("agent", parents=[conf], help="run an agent (topology probes of this host)")
    sub.add_parser("analyzer", parents=[conf], help="run an analyzer (merges the agents)")
    sub.add_parser("allinone", parents=[conf], help="run an analyzer and an agent in one process")
    add_client_parser(sub, conf)
    sub.add_parser("version", parents=[conf], help="print the version")
    config = sub.add_parser("config", parents=[conf], help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = config_sub.add_parser("check", help="validate a configuration file")
    check.add_argument("file", metavar="FILE")
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Third-party chatter stays at WARNING unless we debug.
    if level != "DEBUG":
        for noisy in ("pyroute2", "uvicorn", "websockets", "asyncio", "elastic_transport"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _reset_signals_in_child() -> None:
    """Undo our signal set-up in forked children (pyroute2 forks one to open a socket in a
    network namespace, then SIGTERMs it). asyncio's signal handling writes the signal number
    to a wakeup fd that the child shares with us: without this, the child's SIGTERM would
    read, in this process, as a request to shut down."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


async def _serve(command: str, config: Config) -> None:
    os.register_at_fork(after_in_child=_reset_signals_in_child)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        if command in ("analyzer", "allinone"):
            from pyskydive.analyzer.analyzer import run_analyzer

            await stack.enter_async_context(run_analyzer(config))
        if command in ("agent", "allinone"):
            from pyskydive.agent.agent import run_agent

            await stack.enter_async_context(run_agent(config))
        await stop.wait()
        log.info("shutting down")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"skydive {__version__} (pyskydive, wire-compatible with Skydive v0.28)")
        return 0
    if args.command == "config":
        try:
            _config, warnings = load_config_with_warnings(args.file)
        except ConfigError as exc:
            print(f"skydive: {args.file}: {exc}" if exc.key else f"skydive: {exc}", file=sys.stderr)
            return 2
        for warning in warnings:
            print(f"skydive: warning: {warning}", file=sys.stderr)
        print(f"{args.file}: OK")
        return 0
    if args.command == "client":
        return run_client(args)
    try:
        config, warnings = load_config_with_warnings(args.conf)
    except ConfigError as exc:
        where = f"{args.conf}: " if args.conf and exc.key else ""
        print(f"skydive: configuration error: {where}{exc}", file=sys.stderr)
        return 2
    _setup_logging(config.logging.level)
    for warning in warnings:
        log.warning("%s", warning)
    try:
        asyncio.run(_serve(args.command, config))
    except ConfigError as exc:  # found while starting (an htpasswd file, a certificate...)
        print(f"skydive: configuration error: {exc}", file=sys.stderr)
        return 2
    except SkydiveError as exc:
        print(f"skydive: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
