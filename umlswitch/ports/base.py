"""The port interface shared by every port kind: one egress path with a bounded backlog and
back-pressure, and the batched ingress loop of sockets with several senders.

A port has an ``id``, a ``name``, ``stats`` and a non-blocking ``send_nowait``; that is all the
fabric sees (as vde's ``port.h``: a sender and a delete hook). Ingress waits for readability once
and then drains the socket with non-blocking reads, handing the frames to the fabric: no
per-frame ``await`` and no per-frame allocation beyond a memoryview slice. (Client sockets are
served together by ``unix/dataplane.py``; every other kind has a task of its own.)

**Egress: one rule for every port kind.** ``send_nowait`` hands the frame to the kernel at once
(the kind's ``_send``). What the kernel cannot take now (``EAGAIN``: a guest's 10-datagram queue
is full) is copied into the port's **backlog**, a bounded FIFO, and every later frame queues
behind it, so order is kept. A task of the port's own (``_drain``) waits until the socket or tap
is writable again and sends the backlog, oldest first. Only a full backlog drops (tail drop,
``egress_full``): its bound is ``--port-queue`` frames per port and ``--queue-memory`` bytes for
all ports together. Other send errors are the kind's to judge (``_send_failed``): counted
(``egress_error``), logged at a bounded rate.

**Back-pressure, with a watchdog.** A backlog only absorbs bursts: a sender that is simply
faster than its receiver would still overflow it. So when a backlog passes half its bound, the
port's send answers "full" (``send_nowait`` returns True), the fabric returns that receiver to the
ingress loop (``Fabric.forward``), and the loop has the ingress port *held* (``held_by``): its
receive loop stops reading (at its next ``pause_point``) until the backlog is down to an
eighth, and the sender's own socket or tap queue fills up and slows it down, as uml_switch's
blocking send does, without loss. A held port
holds nobody else: other senders go on. A receiver that has not drained its backlog
``STALL_TIMEOUT`` after it began holding a sender is declared *stalled* (logged, counted): it
holds nobody until it reads again and its backlog tail-drops meanwhile, so a stuck (or very
slow) receiver costs a sender one bounded pause, not its traffic to everybody else.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import trio

from umlswitch import counters
from umlswitch.counters import PortStats
from umlswitch.fabric.batch import FrameBatch
from umlswitch.fabric.fabric import Fabric, no_event
from umlswitch.fabric.queues import DEFAULT_PORT_QUEUE, QueueBudget
from umlswitch.listener import PeerCred
from umlswitch.ratelog import RateLimitedLog

log = logging.getLogger("umlswitch.ports")
ratelog = RateLimitedLog(log)

# Frames read per wakeup before the ingress task goes back to the scheduler, so that one busy port
# cannot starve the others.
BATCH = 64
# The receive buffer of every socket the switch reads frames from: a burst from a fast guest or
# peer must not be lost while the switch is busy elsewhere.
RCVBUF = 1 << 20
# How often a port whose egress cannot be polled for writability (a socket shared by several
# ports) retries its backlog.
RETRY_INTERVAL = 0.001
# How long a held ingress port waits for the receivers holding it before they count as stalled.
STALL_TIMEOUT = 0.05

Frame = bytes | memoryview


class PortClosed(Exception):
    """The port's peer is gone; the port must be detached."""


class Unsent(Exception):
    """Raised by a kind's ``_send``: the frame went nowhere, and the kind has counted why."""


@dataclass(frozen=True)
class PortInfo:
    """What a port says of itself to the management console (``port/print``)."""

    kind: str  # unix, stream, tap, mcast, ucast, vxlan, vxvde
    peer: PeerCred | None = None  # who is on the other end of a unix socket, if known
    description: str = ""  # what a vde client said it is
    data_socket: str | None = None  # the switch's socket of a client port, by which it finds it
    vteps: dict[str, list[str]] | None = None  # an overlay's remote VTEPs and the MACs behind
    link: dict[str, Any] | None = None  # a --stream-connect link: target, state, reconnections


class Port:
    """Base of every port kind: the egress path with its backlog, and the task that drains it.

    A kind provides ``_send`` (one frame to the kernel; raises ``OSError``), ``ingress`` (its
    receive loop), ``egress_fd`` (what to poll for writability) and, where its errors need more
    than a counter, ``_send_failed``. A kind that keeps unsent bytes outside the backlog (the
    stream port: the rest of a frame the kernel took only in part) overrides ``_idle`` and
    ``flush_backlog`` to send them first.
    """

    kind: ClassVar[str] = "other"  # the family, as the management console shows it

    def __init__(self, port_id: int, name: str) -> None:
        self.id = port_id
        self.name = name
        self.stats = PortStats()
        self.peer: PeerCred | None = None  # the peer's credentials, where a socket tells them
        self.description = ""  # what the client said it is (a vde client's description)
        self.detached = trio.Event()  # set once the port has left the switch (attachments.py)
        # Frames waiting for the kernel, oldest first; bounded by queue_limit and the budget.
        self.backlog: deque[bytes] = deque()
        self.queue_limit = DEFAULT_PORT_QUEUE
        self.budget = QueueBudget()  # the switch's, from run(); a private one until then
        self._backlog_waiting: trio.Event | None = None  # set when the backlog is filled again
        # Back-pressure: the senders this port's full backlog holds, the receivers holding this
        # port's ingress, the event that wakes it, and whether this port is stalled.
        self._holding: set[Port] = set()
        self._held_by: set[Port] = set()
        self._released: trio.Event | None = None
        self.stalled = False
        self.publish: Callable[..., None] = no_event  # the switch's events, from run()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.name}>"

    # --- the kind's part --------------------------------------------------------------------

    def _send(self, frame: Frame) -> None:
        """Give one frame to the kernel now; raise OSError (BlockingIOError: try again later)."""
        raise NotImplementedError

    def _send_failed(self, exc: OSError) -> None:
        """A send failed for another reason than a full queue: count and log it."""
        self.stats.drops[counters.EGRESS_ERROR] += 1
        ratelog.warning(
            f"egress:{self.id}",
            "port %d (%s): send failed: %s",
            self.id,
            self.name,
            exc.strerror or exc,
        )

    def _idle(self) -> bool:
        """Nothing waits to go out, so the drain task may sleep until the backlog fills again.
        A kind that keeps more than the backlog (the stream port's part-sent record) says so."""
        return not self.backlog

    def egress_fd(self) -> int | socket.socket | None:
        """What to wait on for writability; None: retry the backlog every RETRY_INTERVAL."""
        return None

    async def ingress(self, fabric: Fabric) -> None:
        """The receive loop: forward what the peer sends until cancelled (or raise PortClosed)."""
        await trio.sleep_forever()

    def close(self) -> None:
        """Release the port's OS resources (idempotent)."""

    def describe(self) -> PortInfo:
        """What the management console shows of this port besides its counters."""
        return PortInfo(self.kind, self.peer, self.description)

    # --- running ----------------------------------------------------------------------------

    async def run(self, fabric: Fabric) -> None:
        """Receive and drain the backlog until cancelled, or raise PortClosed."""
        self.queue_limit = fabric.port_queue
        self.budget = fabric.queue_budget
        self.publish = fabric.publish
        closed: PortClosed | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._drain)
                try:
                    await self.ingress(fabric)
                except PortClosed as exc:
                    closed = exc
                nursery.cancel_scope.cancel()
        finally:
            self.leave()
        if closed is not None:
            raise closed

    def leave(self) -> None:
        """The port stops: forget its backlog and every back-pressure tie it has."""
        self.discard_backlog()
        self._release_all()
        for receiver in self._held_by:
            receiver._holding.discard(self)
        self._held_by.clear()

    # --- back-pressure ----------------------------------------------------------------------

    async def pause_point(self) -> None:
        """Where an ingress loop lets the others run; a held port waits here for its
        receivers (at most STALL_TIMEOUT, then they are stalled)."""
        if not self._held_by:
            await trio.lowlevel.checkpoint()
            return
        self.stats.paused += 1
        self._released = released = trio.Event()
        with trio.move_on_after(STALL_TIMEOUT):
            await released.wait()
            return
        self.stall_holders()

    def holders(self) -> set[Port]:
        """The receivers whose backlogs hold this port's ingress back now."""
        return self._held_by

    def stall_holders(self) -> None:
        """This port waited STALL_TIMEOUT for its holders: they are stalled; it reads on."""
        for receiver in self._held_by:
            receiver._stall(self)
        self._held_by.clear()

    def _stall(self, sender: Port) -> None:
        """This port held ``sender`` for STALL_TIMEOUT without sending anything."""
        self._holding.discard(sender)
        if not self.stalled:
            self.stalled = True
            self.stats.stalls += 1
            ratelog.warning(
                f"stalled:{self.id}",
                "port %d (%s): its receiver did not drain %d frame(s) within %.0f ms; it holds no "
                "sender back until it reads again, and frames beyond --port-queue are dropped",
                self.id,
                self.name,
                len(self.backlog),
                STALL_TIMEOUT * 1000,
            )
            self.publish(
                "port/stall", port=self.id, name=self.name, queued=len(self.backlog), held=sender.id
            )

    def held_by(self, receivers: tuple[Any, ...]) -> None:
        """``receivers`` (ports) answered "full" to a frame of this port (``Fabric.forward``'s
        result): each holds this port's ingress back until its backlog drains."""
        for receiver in receivers:
            receiver._hold(self)

    def _hold(self, sender: Port) -> None:
        if sender is not self and not self.stalled:
            self._holding.add(sender)
            sender._held_by.add(self)

    def _release_all(self) -> None:
        for sender in self._holding:
            held_by = sender._held_by
            held_by.discard(self)
            if not held_by:
                sender.released()
        self._holding.clear()

    def released(self) -> None:
        """No receiver holds this port any more: its ingress may read on."""
        if self._released is not None:
            self._released.set()

    # --- egress -----------------------------------------------------------------------------

    def send_nowait(self, frame: Frame) -> bool:
        """Send ``frame`` now, or keep it in the backlog, or drop it (counted); never block.
        True: the backlog is past half its bound now, and the sender should be held."""
        if self.backlog:
            return self._enqueue(frame)
        try:
            self._send(frame)
        except BlockingIOError:
            return self._enqueue(frame)
        except OSError as exc:
            self._send_failed(exc)
            return False
        except Unsent:
            return False
        stats = self.stats
        stats.tx_frames += 1
        stats.tx_bytes += len(frame)
        return False

    def send_batch(self, batch: FrameBatch, indices: list[int]) -> bool:
        """Send the frames in slots ``indices`` of ``batch``, in order (a kind with a vector
        send overrides this); True as ``send_nowait`` after the last one."""
        frame = batch.frame
        full = False
        for index in indices:
            full = self.send_nowait(frame(index))
        return full

    def _enqueue(self, frame: Frame) -> bool:
        """Keep a copy of ``frame`` for later, or count it dropped if the backlog is full; True
        if the backlog is past half its bound (the sender should be held)."""
        backlog = self.backlog
        budget = self.budget
        size = len(frame)
        if len(backlog) >= self.queue_limit or budget.used + size > budget.limit:
            self.stats.drops[counters.EGRESS_FULL] += 1
            return len(backlog) * 2 >= self.queue_limit and not self.stalled
        backlog.append(bytes(frame))
        budget.used += size
        depth = len(backlog)
        stats = self.stats
        stats.queued = depth
        if depth > stats.queue_high:
            stats.queue_high = depth
        if depth == 1:
            self.backlog_started()
        return depth * 2 >= self.queue_limit and not self.stalled

    def backlog_started(self) -> None:
        """The backlog was empty and holds a frame now: have it drained when writable."""
        if self._backlog_waiting is not None:
            self._backlog_waiting.set()

    def flush_backlog(self) -> None:
        """Send what the kernel takes now from the backlog, oldest first; release the senders
        it held once it is down to an eighth."""
        backlog = self.backlog
        budget = self.budget
        stats = self.stats
        send = self._send
        before = len(backlog)
        while backlog:
            frame = backlog[0]
            try:
                send(frame)
            except BlockingIOError:
                break
            except OSError as exc:
                self._send_failed(exc)
            except Unsent:
                pass
            else:
                stats.tx_frames += 1
                stats.tx_bytes += len(frame)
            backlog.popleft()
            budget.used -= len(frame)
        depth = stats.queued = len(backlog)
        if depth < before:
            self.stalled = False  # it reads again
        if self._holding and depth * 8 <= self.queue_limit:
            self._release_all()

    def discard_backlog(self) -> None:
        """Forget every queued frame (the port is going away); they count as ``egress_full``."""
        if self.backlog:
            self.stats.drops[counters.EGRESS_FULL] += len(self.backlog)
            self.budget.used -= sum(map(len, self.backlog))
            self.backlog.clear()
            self.stats.queued = 0

    async def _wait_writable(self) -> None:
        fd = self.egress_fd()
        if fd is None:
            await trio.sleep(RETRY_INTERVAL)
        else:
            await trio.lowlevel.wait_writable(fd)

    async def _drain(self) -> None:
        """Send the backlog whenever the kernel can take more, until cancelled."""
        idle = self._idle
        try:
            while True:
                if idle():
                    self._backlog_waiting = trio.Event()
                    await self._backlog_waiting.wait()
                    self._backlog_waiting = None
                await self._wait_writable()
                self.flush_backlog()
        except (trio.ClosedResourceError, OSError):
            # The socket or device was closed under us: the ingress loop reports why.
            await trio.sleep_forever()


async def drain_from(
    sock: socket.socket,
    bufsize: int,
    handle: Callable[[memoryview, int, Any], None],
    on_error: Callable[[OSError], None],
    pause_point: Callable[[], Awaitable[None]] = trio.lowlevel.checkpoint,
) -> None:
    """Hand every datagram ``sock`` receives to ``handle(view, size, sender)``, until cancelled.

    The batched ingress loop of the sockets that hear several senders (UDP ports, the shared v0
    data socket): wait for readability once, then read without blocking until the socket is
    empty, letting the other tasks run after every ``BATCH`` datagrams.
    ``view`` is a reused buffer of ``bufsize`` bytes; ``size`` is the datagram's real length
    (``MSG_TRUNC``), more than ``bufsize`` for one that did not fit. A receive error goes to
    ``on_error`` and reading resumes at the next wake-up. ``pause_point`` is where the loop
    lets the others run (the port's own, so that back-pressure can hold it).
    """
    buf = bytearray(bufsize)
    view = memoryview(buf)
    recvfrom_into = sock.recvfrom_into
    trunc = socket.MSG_TRUNC
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
                await pause_point()


def count_receive_error(port: Port, exc: OSError, consequence: str = "") -> None:
    """A read failed: count it on ``port`` and log it at a bounded rate."""
    port.stats.drops[counters.RECEIVE_ERROR] += 1
    ratelog.warning(
        f"recv:{port.id}",
        "port %d (%s): receive failed: %s%s",
        port.id,
        port.name,
        exc.strerror or exc,
        consequence,
    )
