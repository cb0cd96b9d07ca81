"""What the switch's listening sockets share: the accept loop and the peer's credentials.

The control socket (``ports/unix/server.py``) and the management socket (``mgmt/server.py``) both
accept connections with ``serve_listener`` and learn who connected with ``peer_cred``
(``SO_PEERCRED``: pid, uid and gid of the process at the other end).
"""

from __future__ import annotations

import logging
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from umlswitch.ratelog import RateLimitedLog

LISTEN_BACKLOG = 128  # connections the kernel queues for every listening socket of the switch

log = logging.getLogger("umlswitch.listener")
ratelog = RateLimitedLog(log)


@dataclass(frozen=True)
class PeerCred:
    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"pid={self.pid} uid={self.uid}"


def peer_cred(sock: trio.socket.SocketType | socket.socket) -> PeerCred:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCred(pid, uid, gid)


async def serve_listener(
    listener: trio.socket.SocketType,
    handler: Callable[[trio.socket.SocketType], Awaitable[None]],
    what: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections on ``listener`` forever, each handled in a task of its own.

    A failing accept (EMFILE and friends) is logged at a bounded rate and retried after a short
    pause: running out of descriptors for a moment must not stop the switch.
    """
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            try:
                conn, _ = await listener.accept()
            except OSError as exc:
                ratelog.warning(f"accept:{what}", "%s: accept failed: %s", what, exc)
                await trio.sleep(0.1)
                continue
            nursery.start_soon(handler, conn)


def user_name(uid: int) -> str:
    """The name of user ``uid`` for log lines; the number itself if it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return str(uid)
