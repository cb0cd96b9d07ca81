"""The port interface shared by every port kind: one egress path with a bounded backlog and
back-pressure, and the batched ingress loop of sockets with several senders.

A port has an ``id``, a ``name``, ``stats`` and a non-blocking ``send_nowait``; that is all the
fabric sees (as vde's ``port.h``: a sender and a delete hook). Every kind's I/O runs in the
data-plane thread (``umlswitch/dataplane/``): a kind says what to read and how (``sources``:
each a descriptor and a function reading at most ``BATCH`` frames without blocking, handing them
to the fabric), and where its egress waits for room (``egress_fd``). No per-frame allocation
beyond a memoryview slice. ``run`` is the control plane's (trio) side: it hands the port to the
data plane and returns when the port's peer is gone.

**Egress: one rule for every port kind.** ``send_nowait`` hands the frame to the kernel at once
(the kind's ``_send``). What the kernel cannot take now (``EAGAIN``: a guest's 10-datagram queue
is full) is copied into the port's **backlog**, a bounded FIFO, and every later frame queues
behind it, so order is kept. The data-plane loop waits until the socket or tap is writable again
(``EPOLLOUT``) and sends the backlog, oldest first (``flush_backlog``). Only a full backlog
drops (tail drop, ``egress_full``): its bound is ``--port-queue`` frames per port and ``--queue-
memory`` bytes for all ports together. Other send errors are the kind's to judge
(``_send_failed``): counted (``egress_error``), logged at a bounded rate.

**Back-pressure, with a watchdog.** A backlog only absorbs bursts: a sender that is simply
faster than its receiver would still overflow it. So when a backlog passes half its bound, the
port's send answers "full" (``send_nowait`` returns True), the fabric returns that receiver to the
ingress (``Fabric.forward``), which has the ingress port *held* (``held_by``): the data-plane loop
stops reading it (after its current round) until the backlog is down to an eighth, and the
sender's own socket or tap queue fills up and slows it down, as uml_switch's blocking send does,
without loss. A held port
holds nobody else: other senders go on. A receiver that has sent nothing for ``STALL_TIMEOUT``
while it held a sender is declared *stalled* (logged, counted): it holds nobody until it reads
again and its backlog tail-drops meanwhile, so a stuck receiver costs a sender one bounded
pause, not its traffic to everybody else; a receiver that drains, if slowly, holds the sender
on (its backlog would overflow otherwise), watched again every ``STALL_TIMEOUT``.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import trio

from umlswitch import counters
from umlswitch.counters import PortStats
from umlswitch.fabric.batch import FrameBatch
from umlswitch.fabric.fabric import Fabric, no_event
from umlswitch.fabric.queues import DEFAULT_PORT_QUEUE, QueueBudget
from umlswitch.listener import PeerCred
from umlswitch.ratelog import RateLimitedLog

if TYPE_CHECKING:
    from umlswitch.dataplane.loop import Loop
    from umlswitch.ports.vectorio import BatchReceiver, BatchSender

log = logging.getLogger("umlswitch.ports")
ratelog = RateLimitedLog(log)

# Frames read from one source per round of the data-plane loop, so that one busy port cannot
# starve the others.
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


class ReadArea:
    """What every source of one data plane reads into: one buffer for a lone frame, and the
    vector receiver and sender (None without Linux's recvmmsg/sendmmsg)."""

    def __init__(
        self, size: int, receiver: BatchReceiver | None, sender: BatchSender | None
    ) -> None:
        self.single = bytearray(size)
        self.view = memoryview(self.single)
        self.receiver = receiver
        self.sender = sender


class Source:
    """One descriptor the data plane reads, and how: ``read()`` reads at most ``BATCH`` frames
    without blocking and hands them to the fabric; it raises ``PortClosed`` when the peer is
    gone. ``port`` is whom the frames come from (the one held by back-pressure), if one port."""

    __slots__ = ("file", "port", "read")

    def __init__(
        self, file: socket.socket | int, read: Callable[[], None], port: Port | None
    ) -> None:
        self.file = file
        self.read = read
        self.port = port


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
    """Base of every port kind: the egress path with its backlog, and its back-pressure ties.

    A kind provides ``_send`` (one frame to the kernel; raises ``OSError``), ``sources`` (what
    the data plane reads for it, and how), ``egress_fd`` (what to poll for writability) and,
    where its errors need more than a counter, ``_send_failed``. A kind that keeps unsent bytes
    outside the backlog (the stream port: the rest of a frame the kernel took only in part)
    overrides ``_idle`` and ``flush_backlog`` to send them first.
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
        # The data-plane loop serving the port (set and cleared by the loop), and, on the
        # control plane's side, the event set when the loop reports the port closed, and why.
        self.loop: Loop | None = None
        self.ended: trio.Event | None = None
        self.end_reason: str | None = None
        # Back-pressure: the senders this port's full backlog holds, the receivers holding this
        # port's ingress, and whether this port is stalled.
        self._holding: set[Port] = set()
        self._held_by: set[Port] = set()
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
        """Nothing waits to go out: the loop stops polling for room until the backlog fills.
        A kind that keeps more than the backlog (the stream port's part-sent record) says so."""
        return not self.backlog

    def egress_fd(self) -> int | socket.socket | None:
        """What to wait on for writability; None: retry the backlog every RETRY_INTERVAL."""
        return None

    def sources(self, fabric: Fabric, area: ReadArea) -> list[Source]:
        """What the data plane reads for this port, and how (runs in the data-plane thread)."""
        return []

    def periodic(self) -> tuple[float, Callable[[], None]] | None:
        """A housekeeping call the data plane makes every so many seconds while it serves the
        port (in its thread), or None."""
        return None

    def close(self) -> None:
        """Release the port's OS resources (idempotent)."""

    def describe(self) -> PortInfo:
        """What the management console shows of this port besides its counters."""
        return PortInfo(self.kind, self.peer, self.description)

    # --- running ----------------------------------------------------------------------------

    async def run(self, fabric: Fabric) -> None:
        """Have the data plane serve the port until cancelled, or raise PortClosed when its
        peer is gone (control plane)."""
        from umlswitch.dataplane.plane import plane_of  # the plane imports the ports

        self.queue_limit = fabric.port_queue
        self.budget = fabric.queue_budget
        self.publish = fabric.publish
        reason = await plane_of(fabric).serve_port(self)
        raise PortClosed(reason)

    def leave(self) -> None:
        """The port stops: forget its backlog and every back-pressure tie it has."""
        self.discard_backlog()
        self._release_all()
        for receiver in self._held_by:
            receiver._holding.discard(self)
        self._held_by.clear()

    # --- back-pressure ----------------------------------------------------------------------

    def holders(self) -> set[Port]:
        """The receivers whose backlogs hold this port's ingress back now."""
        return self._held_by

    def stall_holders(self, receivers: list[Port] | None = None) -> None:
        """This port waited STALL_TIMEOUT for ``receivers`` (all its holders: None), which sent
        nothing meanwhile: they are stalled and hold it no more."""
        for receiver in list(self._held_by) if receivers is None else receivers:
            receiver._stall(self)
            self._held_by.discard(receiver)

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
        if self.loop is not None:
            self.loop.released(self)

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
        if self.loop is not None:
            self.loop.backlog_started(self)

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


def read_datagrams(
    sock: socket.socket,
    buf: bytearray,
    handle: Callable[[memoryview, int, Any], None],
    on_error: Callable[[OSError], None],
) -> int:
    """Read at most ``BATCH`` datagrams from ``sock`` without blocking, handing each to
    ``handle(view, size, sender)``; return how many were read.

    The ingress of the sockets that hear several senders (UDP ports, the shared v0 data
    socket). ``view`` is ``buf`` as a memoryview, reused; ``size`` is the datagram's real length
    (``MSG_TRUNC``), more than the buffer for one that did not fit. A receive error goes to
    ``on_error`` and ends the round.
    """
    view = memoryview(buf)
    recvfrom_into = sock.recvfrom_into
    trunc = socket.MSG_TRUNC
    got = 0
    while got < BATCH:
        try:
            size, sender = recvfrom_into(buf, 0, trunc)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            on_error(exc)
            break
        got += 1
        handle(view, size, sender)
    return got


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
