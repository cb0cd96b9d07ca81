"""The port interface shared by every port kind, and the batched datagram ingress loop.

A port has an ``id``, a ``name``, ``stats`` and a non-blocking ``send_nowait``; that is all the
fabric sees (as vde's ``port.h``: a sender and a delete hook). Ingress is one task per port that
waits for readability once and then drains the socket with non-blocking reads, handing each frame
to the fabric: no per-frame ``await`` and no per-frame allocation beyond a memoryview slice.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from umlswitch import counters
from umlswitch.counters import PortStats
from umlswitch.fabric.fabric import Fabric
from umlswitch.ratelog import RateLimitedLog

log = logging.getLogger("umlswitch.ports")
ratelog = RateLimitedLog(log)

# Frames read per wakeup before the ingress task goes back to the scheduler, so that one busy port
# cannot starve the others.
BATCH = 64


class PortClosed(Exception):
    """The port's peer is gone; the port must be detached."""


class Port:
    """Base for ports whose egress is one datagram per frame on a socket."""

    def __init__(self, port_id: int, name: str) -> None:
        self.id = port_id
        self.name = name
        self.stats = PortStats()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.name}>"

    def _send(self, frame: bytes | memoryview) -> None:
        raise NotImplementedError

    async def run(self, fabric: Fabric) -> None:
        """The ingress loop: forward what the peer sends until cancelled (or raise PortClosed)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the port's OS resources (idempotent)."""

    def send_nowait(self, frame: bytes | memoryview) -> None:
        try:
            self._send(frame)
        except OSError as exc:
            self.count_send_error(exc)
            return
        self.stats.tx_frames += 1
        self.stats.tx_bytes += len(frame)

    def count_send_error(self, exc: OSError) -> None:
        """A full receiver queue is a silent, counted drop; anything else is logged too."""
        if isinstance(exc, BlockingIOError):
            self.stats.drops[counters.EGRESS_FULL] += 1
            return
        self.stats.drops[counters.EGRESS_ERROR] += 1
        ratelog.warning(
            f"egress:{self.id}",
            "port %d (%s): send failed: %s",
            self.id,
            self.name,
            exc.strerror or exc,
        )


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


async def drain_from(
    sock: socket.socket,
    bufsize: int,
    handle: Callable[[memoryview, int, Any], None],
    on_error: Callable[[OSError], None],
) -> None:
    """Hand every datagram ``sock`` receives to ``handle(view, size, sender)``, until cancelled.

    The batched ingress loop of the sockets that hear several senders (UDP ports, the shared v0
    data socket): wait for readability once, then read without blocking until the socket is
    empty, letting the other tasks run after every ``BATCH`` datagrams (as ``pump_datagrams``).
    ``view`` is a reused buffer of ``bufsize`` bytes; ``size`` is the datagram's real length
    (``MSG_TRUNC``), more than ``bufsize`` for one that did not fit. A receive error goes to
    ``on_error`` and reading resumes at the next wake-up.
    """
    buf = bytearray(bufsize)
    view = memoryview(buf)
    recvfrom_into = sock.recvfrom_into
    trunc = socket.MSG_TRUNC
    checkpoint = trio.lowlevel.checkpoint
    wait_readable = trio.lowlevel.wait_readable
    while True:
        await wait_readable(sock)
        got = BATCH
        while got:
            got = 0
            for _ in range(BATCH):
                try:
                    size, sender = recvfrom_into(buf, 0, trunc)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    on_error(exc)
                    break
                got += 1
                handle(view, size, sender)
            if got:
                await checkpoint()


async def pump_datagrams(sock: socket.socket, port: Port, fabric: Fabric) -> None:
    """Forward every datagram ``sock`` receives as a frame from ``port``; runs until cancelled.

    The hot path of connected client sockets: ``drain_from``'s loop without the sender address
    (an object per frame) and without a handler call per frame, neither of which it needs.
    """
    max_frame = fabric.max_frame
    buf = bytearray(max_frame + 1)
    view = memoryview(buf)
    recv_into = sock.recv_into
    forward = fabric.forward
    trunc = socket.MSG_TRUNC  # recv returns the datagram's real length, so giants are measured
    checkpoint = trio.lowlevel.checkpoint
    wait_readable = trio.lowlevel.wait_readable
    while True:
        await wait_readable(sock)
        got = BATCH
        while got:
            got = 0
            for _ in range(BATCH):
                try:
                    size = recv_into(buf, 0, trunc)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    port.stats.drops[counters.RECEIVE_ERROR] += 1
                    ratelog.warning(
                        f"recv:{port.id}",
                        "port %d (%s): receive failed: %s",
                        port.id,
                        port.name,
                        exc.strerror or exc,
                    )
                    break
                got += 1
                if size > max_frame:
                    fabric.reject(port, counters.GIANT, size)
                else:
                    forward(port, view[:size])
            if got:
                # Let the other tasks run, then read on. A busy port's next frame has usually
                # arrived by then, and a checkpoint costs far less than another wait_readable
                # (two epoll_ctl calls and a trip through the run loop's I/O wait).
                await checkpoint()
