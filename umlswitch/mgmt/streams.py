"""``umlswitch capture`` and ``umlswitch events``: clients of the management socket's streams.

::

    umlswitch capture [-unix CTL | -M PATH] [PORT] [-w FILE|-] [-c COUNT]
    umlswitch events  [-unix CTL | -M PATH]

Each opens a management session, sends ``pcap/stream [PORT]`` or ``events/stream``
(``mgmt/observe.py``), reads the status line and then copies the stream as it comes: pcap to FILE
or standard output (``| tcpdump -n -r -``, ``| wireshark -k -i -``), or one JSON object per line.
A reader that goes away (a closed pipe) ends the client, and with it that stream only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import struct
import sys
from collections.abc import Callable
from typing import BinaryIO

from umlswitch.mgmt.client import (
    DEFAULT_TIMEOUT,
    CannotConnect,
    add_socket_options,
    connect,
    socket_path,
)
from umlswitch.mgmt.protocol import ProtocolError

PCAP_HEADER_LEN = 24
RECORD_HEADER = struct.Struct("=IIII")
_STATUS = re.compile(rb"^(\d{4})(?: (.*))?$")


class StreamRefused(Exception):
    """The switch answered the stream command with a failure status."""


def open_stream(
    path: str, line: str, timeout: float = DEFAULT_TIMEOUT
) -> tuple[socket.socket, bytes]:
    """A session on ``path`` turned into a stream by ``line``: the socket and the stream's
    first bytes (those that came with the status line). CannotConnect, StreamRefused."""
    client = connect(path, timeout)
    sock = client.sock
    try:
        sock.sendall(line.encode() + b"\n")
        received = b""
        while b"\n" not in received:
            data = sock.recv(65536)
            if not data:
                raise ProtocolError(f"{path} closed the session before answering {line!r}")
            received += data
        status, _, rest = received.partition(b"\n")
        match = _STATUS.match(status)
        if match is None:
            raise ProtocolError(f"unexpected answer {status[:200]!r}")
        if match.group(1) != b"1000":
            raise StreamRefused(status.decode(errors="replace"))
        sock.settimeout(None)
        return sock, rest
    except BaseException:
        sock.close()
        raise


class PcapCounter:
    """Follows a pcap byte stream: how many whole records it holds, and where the ``limit``-th
    one ends (to stop exactly after ``-c COUNT`` frames)."""

    def __init__(self) -> None:
        self.frames = 0
        self._piece = "file"  # what is being read: the file header, a record header, a frame
        self._need = PCAP_HEADER_LEN
        self._pending = b""

    def _next(self, piece: str, size: int) -> None:
        self._piece, self._need, self._pending = piece, size, b""

    def feed(self, data: bytes, limit: int | None = None) -> int:
        """How many bytes of ``data`` to keep so that at most ``limit`` records are complete."""
        used = 0
        while used < len(data) or (self._piece == "frame" and self._need == 0):
            take = min(self._need - len(self._pending), len(data) - used)
            self._pending += data[used : used + take]
            used += take
            if len(self._pending) < self._need:
                break
            if self._piece == "record":
                self._next("frame", RECORD_HEADER.unpack(self._pending)[2])  # captured length
                continue
            if self._piece == "frame":
                self.frames += 1
                if limit is not None and self.frames >= limit:
                    self._next("record", RECORD_HEADER.size)
                    return used
            self._next("record", RECORD_HEADER.size)
        return used


def _output(where: str) -> BinaryIO:
    if where == "-":
        return sys.stdout.buffer
    fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "wb", buffering=0)


def copy_stream(
    sock: socket.socket,
    first: bytes,
    write: Callable[[bytes], None],
    count: int | None = None,
) -> int:
    """Copy a pcap stream to ``write`` until the switch closes it or ``count`` frames have
    been copied; returns the number of frames."""
    counter = PcapCounter()
    data = first
    while True:
        if data:
            keep = counter.feed(data, count)
            write(data[:keep])
            if count is not None and counter.frames >= count:
                return counter.frames
        data = sock.recv(1 << 16)
        if not data:
            return counter.frames


def capture_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="umlswitch capture",
        description="Capture a running umlswitch's frames live, as pcap, to FILE or stdout.",
        epilog="examples:\n"
        "  umlswitch capture -w - | tcpdump -n -r -\n"
        "  umlswitch capture 3 -w - | wireshark -k -i -\n"
        "  umlswitch capture -unix /run/uml.ctl -c 100 -w lan.pcap\n\n"
        "A reader slower than the traffic loses capture frames (pcap/showinfo counts them),\n"
        "never the switch's traffic. Only root or the switch's user may capture.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add_socket_options(parser)
    parser.add_argument(
        "port", nargs="?", type=int, metavar="PORT", help="only frames from and to PORT"
    )
    parser.add_argument(
        "-w", dest="write", metavar="FILE|-", default="-", help="write to FILE (- stdout, default)"
    )
    parser.add_argument(
        "-c", dest="count", type=int, metavar="COUNT", help="stop after COUNT frames"
    )
    return parser


def _quiet_stdout() -> None:
    """Standard output's reader left: let the interpreter's exit not complain about it."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def capture_main(argv: list[str]) -> int:
    parser = capture_parser()
    ns = parser.parse_args(argv)
    if ns.count is not None and ns.count < 1:
        parser.error("-c COUNT must be at least 1")
    if ns.write == "-" and sys.stdout.isatty():
        parser.error("standard output is a terminal: give -w FILE, or pipe: | tcpdump -n -r -")
    path = socket_path(ns)
    line = "pcap/stream" if ns.port is None else f"pcap/stream {ns.port}"
    try:
        sock, first = open_stream(path, line)
    except (CannotConnect, StreamRefused, ProtocolError, OSError) as exc:
        print(f"umlswitch: {exc}", file=sys.stderr)
        return 1
    which = "every port" if ns.port is None else f"port {ns.port}"
    print(f"umlswitch: capturing {which} of {path}", file=sys.stderr, flush=True)
    frames = 0
    try:
        with sock, _output(ns.write) as out:

            def write(data: bytes) -> None:
                out.write(data)
                out.flush()

            frames = copy_stream(sock, first, write, ns.count)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        _quiet_stdout()
    except OSError as exc:
        print(f"umlswitch: capture: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"umlswitch: {frames} frame(s) captured", file=sys.stderr)
    return 0


def events_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="umlswitch events",
        description="Print a running umlswitch's events as they happen: one JSON object a line "
        "(port/attach, port/detach, port/stall, mac/move, stp/state, storm/start, "
        "storm/stop, restart; events/lost when this reader fell behind).",
        epilog="example:\n  umlswitch events | jq -c 'select(.event == \"port/detach\")'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add_socket_options(parser)
    return parser


def events_main(argv: list[str]) -> int:
    ns = events_parser().parse_args(argv)
    path = socket_path(ns)
    try:
        sock, data = open_stream(path, "events/stream")
    except (CannotConnect, StreamRefused, ProtocolError, OSError) as exc:
        print(f"umlswitch: {exc}", file=sys.stderr)
        return 1
    out = sys.stdout.buffer
    try:
        with sock:
            while True:
                if data:
                    out.write(data)
                    out.flush()
                data = sock.recv(1 << 16)
                if not data:
                    print("umlswitch: the switch ended the event stream", file=sys.stderr)
                    return 0
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except OSError as exc:
        print(f"umlswitch: events: {exc.strerror or exc}", file=sys.stderr)
        return 1
