"""``umlswitch ctl``: send one management command to a running switch and print the answer.

The ``ovs-appctl`` of umlswitch::

    umlswitch ctl [-unix CTL | --mgmt PATH] [--json] COMMAND [ARG...]

It finds the management socket as the switch does (``CTL.mgmt`` beside the control socket,
``/tmp/uml.ctl.mgmt`` by default), prints the data lines (with ``--json``: the one-line JSON
document) on stdout, and exits 0 on ``1000 Success``; on a failure status it prints that status
on stderr and exits 1 (2 for a bad command line). ``MgmtClient`` is the blocking session behind
it, also used by ``umlswitch top`` and the tests; it works against ``vde_switch -M`` too.
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import socket
import sys
from types import TracebackType
from typing import Any, Self

from umlswitch.config import DEFAULT_CONTROL, mgmt_path_for
from umlswitch.mgmt.protocol import JSON_PREFIX, ProtocolError, Reply, ReplyReader

DEFAULT_TIMEOUT = 10.0


class MgmtError(Exception):
    """A command answered with a failure status."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(f"{reply.code:04d} {reply.message}")
        self.reply = reply


class CannotConnect(Exception):
    """The management socket cannot be reached; the message says why, in one line."""


class MgmtClient:
    """A blocking management session: connect, read the banner, run commands one by one."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
            self.banner = self._read(want_status=False).text
        except BaseException:
            self.sock.close()
            raise

    def _read(self, *, want_status: bool = True) -> ReplyReader:
        reader = ReplyReader(want_status=want_status)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        while True:
            data = self.sock.recv(65536)
            if not data:
                if want_status:
                    reader.reply()  # a complete answer without the prompt, or ProtocolError
                    return reader
                raise ConnectionError(f"{self.path} closed the session before the prompt")
            if reader.feed(decoder.decode(data)):
                return reader

    def run(self, line: str) -> Reply:
        """Send one command line and return its answer (whatever its status)."""
        if "\n" in line or "\r" in line:
            raise ValueError("a command is one line")
        self.sock.sendall(line.encode() + b"\n")
        return self._read().reply()

    def json(self, line: str) -> Any:
        """Run ``json LINE``; return its document, or raise MgmtError on a failure status."""
        reply = self.run(f"{JSON_PREFIX} {line}")
        if not reply.ok:
            raise MgmtError(reply)
        if not reply.lines:
            raise ProtocolError(f"no JSON document in the answer to {line!r}")
        return json.loads(reply.lines[0])

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def add_socket_options(parser: argparse.ArgumentParser) -> None:
    """``-unix CTL`` or ``--mgmt PATH``: shared by ``ctl`` and ``top``."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "-unix",
        "--unix",
        metavar="CTL",
        help=f"the switch's control socket (default {DEFAULT_CONTROL}); "
        "its management socket is CTL.mgmt",
    )
    where.add_argument(
        "-M", "--mgmt", metavar="PATH", help="the management socket (as the switch's --mgmt)"
    )


def socket_path(ns: argparse.Namespace) -> str:
    if ns.mgmt:
        return str(ns.mgmt)
    return mgmt_path_for(ns.unix or DEFAULT_CONTROL)


def connect(path: str, timeout: float = DEFAULT_TIMEOUT) -> MgmtClient:
    """A session on ``path``, or CannotConnect with one line saying what is wrong."""
    try:
        return MgmtClient(path, timeout)
    except FileNotFoundError:
        why = "no such socket; is the switch running (without --no-mgmt)?"
    except ConnectionRefusedError:
        why = "nobody serves it (a switch that died?)"
    except PermissionError:
        why = "permission denied; run as the switch's user"
    except (OSError, ProtocolError) as exc:
        why = str(exc)
    raise CannotConnect(f"cannot talk to the management socket '{path}': {why}")


EPILOG = """\
examples:
  umlswitch ctl help
  umlswitch ctl port/print
  umlswitch ctl -unix /run/uml.ctl hash/find 02:00:00:00:00:01
  umlswitch ctl --json showinfo | jq .totals
  umlswitch ctl pcap/start lan.pcap 2      (a relative FILE is made absolute here)

exit status: 0 on success, 1 on a failure answer or when the switch cannot be reached,
2 for a bad command line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="umlswitch ctl",
        description="Send one management command to a running umlswitch and print the answer.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add_socket_options(parser)
    parser.add_argument(
        "--json", action="store_true", help="answer with one JSON document (json COMMAND)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="give up when the switch has not answered within SECONDS (default 10)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="COMMAND [ARG...]; try: help")
    return parser


def command_line(words: list[str], as_json: bool) -> str:
    """The line to send: ``json`` prefixed if asked, pcap/start's FILE made absolute."""
    words = list(words)
    if as_json and words[0] != JSON_PREFIX:
        words.insert(0, JSON_PREFIX)
    at = 1 if words[0] == JSON_PREFIX else 0
    if len(words) > at + 1 and words[at] == "pcap/start":
        words[at + 1] = os.path.abspath(words[at + 1])
    return " ".join(words)


def main(argv: list[str]) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not ns.command:
        parser.error("give a COMMAND (try: umlswitch ctl help)")
    if any("\n" in word or "\r" in word for word in ns.command):
        parser.error("arguments must not contain line breaks")
    streams = {"pcap/stream": "umlswitch capture", "events/stream": "umlswitch events"}
    named = ns.command[1] if ns.command[0] == JSON_PREFIX and len(ns.command) > 1 else ns.command[0]
    if named in streams:
        parser.error(f"{named} turns the session into a stream: use {streams[named]}")
    line = command_line(ns.command, ns.json)
    path = socket_path(ns)
    try:
        with connect(path, ns.timeout) as client:
            reply = client.run(line)
    except CannotConnect as exc:
        print(f"umlswitch: {exc}", file=sys.stderr)
        return 1
    except (OSError, ProtocolError) as exc:
        print(f"umlswitch: management socket '{path}': {exc}", file=sys.stderr)
        return 1
    try:
        for data_line in reply.lines or ():
            print(data_line)
        sys.stdout.flush()
    except BrokenPipeError:  # `umlswitch ctl port/print | head`: the reader took what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
    if not reply.ok:
        print(f"umlswitch: {reply.code:04d} {reply.message}", file=sys.stderr)
        return 1
    return 0
