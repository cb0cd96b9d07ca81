"""The handover channel: JSON documents with descriptors over a unix SOCK_SEQPACKET socketpair.

A *bundle* is one JSON document and a list of descriptors. It travels as several messages,
because a datagram has a size bound and SCM_RIGHTS carries at most ``MAX_FDS`` descriptors:
``F`` messages carry descriptors (in order), ``D`` messages carry the document's bytes in
chunks, and ``E`` ends the bundle. The channel is blocking with a timeout on both sides: the
old process sends its final bundle while the data plane is parked between two rounds and no
trio task runs (that is what stops it reading).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

MAX_FDS = 250  # below the kernel's SCM_MAX_FD (253)
CHUNK = 32 * 1024
ENV = "UMLSWITCH_HANDOVER"  # the fd number of the new process's end of the channel


class ChannelError(Exception):
    """The other process went away, sent garbage, or took too long."""


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(old end, new end): the new end is inheritable, to be passed with ``pass_fds``."""
    old, new = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old.set_inheritable(False)
    new.set_inheritable(True)
    return old, new


def send_bundle(sock: socket.socket, doc: dict[str, Any], fds: Sequence[int] = ()) -> None:
    """Send ``doc`` and ``fds`` (blocking; the socket's timeout applies)."""
    try:
        for start in range(0, len(fds), MAX_FDS):
            socket.send_fds(sock, [b"F"], list(fds[start : start + MAX_FDS]))
        data = json.dumps(doc, separators=(",", ":")).encode()
        for start in range(0, len(data), CHUNK):
            sock.sendall(b"D" + data[start : start + CHUNK])
        sock.sendall(b"E")
    except OSError as exc:
        raise ChannelError(f"cannot send to the other process: {exc.strerror or exc}") from None


def receive_bundle(sock: socket.socket, timeout: float) -> tuple[dict[str, Any], list[int]]:
    """The next bundle (blocking, at most ``timeout`` seconds in all): its document and the
    descriptors, now ours (close-on-exec)."""
    deadline = time.monotonic() + timeout
    fds: list[int] = []
    data = bytearray()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChannelError(f"no answer from the other process within {timeout:g} s")
            sock.settimeout(left)
            try:
                message, got, _, _ = socket.recv_fds(sock, CHUNK + 1, MAX_FDS)
            except TimeoutError:
                raise ChannelError(
                    f"no answer from the other process within {timeout:g} s"
                ) from None
            except OSError as exc:
                raise ChannelError(f"the handover channel failed: {exc.strerror or exc}") from None
            for fd in got:
                os.set_inheritable(fd, False)
            fds.extend(got)
            if not message:
                raise ChannelError("the other process closed the handover channel")
            kind, body = message[:1], message[1:]
            if kind == b"D":
                data += body
            elif kind == b"E":
                break
            elif kind != b"F":
                raise ChannelError(f"unexpected message {kind!r} on the handover channel")
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise ChannelError(
                f"the other process sent a document that is not JSON: {exc}"
            ) from None
        if not isinstance(doc, dict):
            raise ChannelError("the other process sent a document that is not a JSON object")
        return doc, fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
