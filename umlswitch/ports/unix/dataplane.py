"""The data plane of client ports: one task serves every client data socket through an epoll set.

A trio task per port waits for its socket on its own, and every wait costs an ``epoll_ctl`` and a
trip through trio's run loop (trio registers with ``EPOLLONESHOT``). Here every client socket is
registered once, level-triggered, in a private epoll set; one task waits for that set (a single
fd in trio's loop) and then serves whatever is ready: a ready socket is read, and a socket
whose backlog waits is written when writable (``EPOLLOUT`` is asked for only while a backlog
exists). Every ready port gets at most ``BATCH`` frames per round, so none starves the others,
and the task lets trio run its other tasks between rounds.

A port is read a frame at a time (``recv_into``, then the fabric, then the egress send): a
guest's socket takes ten frames, and a receiver on the other core drains them while the switch
reads the next, where a batch would overflow it into the backlog (closed loop, window 16,
against batches: 1.10-1.34x frames/s). A port whose queue outruns a whole round of such reads
(``PER_FRAME_READS``) is read a batch at a time from then on (``recvmmsg`` into one shared
``FrameBatch``, ``Fabric.forward_batch``, one ``sendmmsg`` per egress port), until a batch
comes back short: the open loop with 4 pairs ran 1.25x faster that way than frame by frame.

Back-pressure (``ports/base.py``) works as for the other kinds: a port whose frames fill a
receiver's backlog is *held*, which here means its ``EPOLLIN`` interest is dropped until the
receiver releases it, or until ``STALL_TIMEOUT`` passes and its receivers count as stalled.
"""

from __future__ import annotations

import contextlib
import select
import socket

import trio

from umlswitch.fabric.fabric import Fabric
from umlswitch.ports import vectorio
from umlswitch.ports.base import BATCH, STALL_TIMEOUT, Port, count_receive_error

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
MAX_EVENTS = 256
PER_FRAME_READS = BATCH
_TRUNC = socket.MSG_TRUNC  # a read returns the datagram's real length: giants are measured


class DataPlane:
    """The epoll set of the client data sockets, and the task that serves it."""

    def __init__(self, fabric: Fabric) -> None:
        self.fabric = fabric
        self.epoll = select.epoll()
        self.receiver = vectorio.BatchReceiver(fabric.max_frame + 1, BATCH)
        self.sender = vectorio.BatchSender(BATCH)
        self._ports: dict[int, Port] = {}  # fd -> port
        self._masks: dict[Port, int] = {}  # port -> the events it is registered for
        self._fds: dict[Port, int] = {}
        self._held: dict[Port, float] = {}  # held port -> when its receivers count as stalled
        self._sockets: dict[Port, socket.socket] = {}
        self._bulk: set[Port] = set()  # ports read a batch at a time (their queue is long)
        self._single = bytearray(fabric.max_frame + 1)  # where a lone frame is read to
        self._single_view = memoryview(self._single)

    # --- ports ------------------------------------------------------------------------------

    def add(self, port: Port, sock: socket.socket) -> None:
        fd = sock.fileno()
        self._ports[fd] = port
        self._fds[port] = fd
        self._sockets[port] = sock
        # a port handed over by a restart may come with frames in its backlog already
        mask = _IN | (_OUT if port.backlog else 0)
        self._masks[port] = mask
        self.epoll.register(fd, mask)

    def remove(self, port: Port) -> None:
        fd = self._fds.pop(port, None)
        if fd is None:
            return
        del self._ports[fd]
        del self._masks[port]
        del self._sockets[port]
        self._held.pop(port, None)
        self._bulk.discard(port)
        with contextlib.suppress(OSError):  # closed already
            self.epoll.unregister(fd)

    def _interest(self, port: Port) -> None:
        """Register ``port`` for what it needs now: input unless held, output while a backlog
        waits."""
        mask = (0 if port in self._held else _IN) | (_OUT if port.backlog else 0)
        if self._masks.get(port, mask) != mask:
            self._masks[port] = mask
            self.epoll.modify(self._fds[port], mask)

    def backlog_started(self, port: Port) -> None:
        if port in self._fds:
            self._interest(port)

    def released(self, port: Port) -> None:
        if self._held.pop(port, None) is not None:
            self._interest(port)

    def _hold(self, port: Port) -> None:
        port.stats.paused += 1
        self._held[port] = trio.current_time() + STALL_TIMEOUT
        self._interest(port)

    def _expire_holds(self) -> None:
        """Receivers that held a port for STALL_TIMEOUT are stalled; the port reads on."""
        now = trio.current_time()
        for port, deadline in list(self._held.items()):
            if deadline <= now:
                port.stall_holders()
                self.released(port)

    # --- the task ---------------------------------------------------------------------------

    async def run(self) -> None:
        poll = self.epoll.poll
        epoll_fd = self.epoll.fileno()
        ports = self._ports
        serve = self._serve
        checkpoint = trio.lowlevel.checkpoint
        wait_readable = trio.lowlevel.wait_readable
        events = poll(0, MAX_EVENTS)
        while True:
            if not events:
                if self._held:
                    with trio.move_on_at(min(self._held.values())):
                        await wait_readable(epoll_fd)
                    self._expire_holds()
                else:
                    await wait_readable(epoll_fd)
                events = poll(0, MAX_EVENTS)
                continue
            for fd, mask in events:
                port = ports.get(fd)
                if port is not None:
                    serve(port, fd, mask)
            if self._held:
                self._expire_holds()
            events = poll(0, MAX_EVENTS)
            if events:
                await checkpoint()  # busy: let the other tasks run between two rounds

    def close(self) -> None:
        """Once every port has left."""
        self.epoll.close()

    def _serve(self, port: Port, fd: int, mask: int) -> None:
        if mask & _OUT:
            port.flush_backlog()
            if not port.backlog:
                self._interest(port)
        if mask & ~_OUT and port not in self._held:  # input, or an error a read reports
            self._read(port, fd)

    def _read(self, port: Port, fd: int) -> None:
        fabric = self.fabric
        bulk = self._bulk
        try:
            if port in bulk:
                receiver = self.receiver
                got = receiver.receive(fd)
                if got > 1:
                    full = fabric.forward_batch(port, receiver.batch)
                elif got:
                    full = fabric.receive(port, receiver.batch.view, receiver.batch.lengths[0])
                if got and full:
                    port.held_by(full)
                if got < BATCH:
                    bulk.discard(port)
            else:
                receive = fabric.receive
                recv_into = self._sockets[port].recv_into
                single, view = self._single, self._single_view
                for _ in range(PER_FRAME_READS):
                    full = receive(port, view, recv_into(single, 0, _TRUNC))
                    if full:
                        port.held_by(full)
                        break
                else:
                    bulk.add(port)  # its queue outran a round of single reads
        except BlockingIOError:
            pass
        except OSError as exc:
            count_receive_error(port, exc)
            return
        if port.holders():
            self._hold(port)
