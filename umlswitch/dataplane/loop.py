"""The data-plane loop: one ``epoll`` set over every frame socket. Runs in the data-plane thread.

Every round blocks in ``epoll`` (the GIL released) until a socket is ready, a command is posted
or a timer is due, then:

* a readable socket is read by its port kind's ``Source`` (at most ``BATCH`` frames a round, so
  none starves the others), each frame decided and sent by the fabric at once;
* a writable socket drains the backlogs waiting on it (``EPOLLOUT`` is asked for only while a
  backlog waits); a port whose egress cannot be polled (a socket shared by several ports) retries
  every ``RETRY_INTERVAL``, as a timer;
* commands posted by the control plane are applied (``Mailbox``), so the fabric has one writer;
* due timers run (``timers.py``): the stall watchdog, and whatever the fabric schedules.

**Back-pressure.** A source whose frames put a receiver's backlog past half its bound leaves its
port *held* (``Port.holders``): its ``EPOLLIN`` interest is dropped, so its peer's own queue fills
and slows it down. The receivers release it once they drain to an eighth (``Port.released``);
if they have not within ``STALL_TIMEOUT``, they are stalled (``Port.stall_holders``) and the port
reads on.

**Ends.** A source that raises ``PortClosed`` has its port removed from the set here and a
``closed`` event posted to the control plane, which detaches it. Anything else a round raises is
a bug: ``run`` lets it out, and the thread's wrapper (``plane.py``) reports it.
"""

from __future__ import annotations

import contextlib
import functools
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from umlswitch.dataplane.mailbox import Mailbox
from umlswitch.dataplane.timers import TimerHandle, TimerHeap
from umlswitch.fabric.fabric import Fabric
from umlswitch.ports import vectorio
from umlswitch.ports.base import (
    BATCH,
    RETRY_INTERVAL,
    STALL_TIMEOUT,
    Port,
    PortClosed,
    ReadArea,
    Source,
)

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
MAX_EVENTS = 256

Command = tuple[Callable[..., Any], tuple[Any, ...], Any]  # fn, args, reply (or None)
EventHook = Callable[..., None]


def no_event(name: str, **fields: object) -> None:
    """The default ``on_event``: nobody listens."""


def _fileno(file: socket.socket | int) -> int:
    return file if isinstance(file, int) else file.fileno()


class _File:
    """One descriptor of the set: the source read from it, the ports whose backlog waits on it."""

    __slots__ = ("fd", "mask", "sources", "writers")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        # Who reads it: one source, or one per port sharing the socket (the segments of one
        # VXLAN socket); the first reads for all.
        self.sources: list[Source] = []
        self.writers: set[Port] = set()
        self.mask = 0  # what it is registered for; 0: not registered

    @property
    def source(self) -> Source | None:
        return self.sources[0] if self.sources else None


class _Attached:
    """What the loop keeps of a port: its descriptors and its retry timer."""

    __slots__ = ("egress", "periodic", "reads", "retry")

    def __init__(self, reads: list[int], egress: int | None) -> None:
        self.reads = reads
        self.egress = egress
        self.retry: TimerHandle | None = None
        self.periodic: TimerHandle | None = None


class Loop:
    """The epoll set, the timers and the mailboxes of one fabric's data plane."""

    def __init__(self, fabric: Fabric, clock: Callable[[], float] = time.monotonic) -> None:
        self.fabric = fabric
        self.epoll = select.epoll()
        self.timers = TimerHeap(clock)
        self.commands: Mailbox[Command] = Mailbox()
        self.events: Mailbox[tuple[str, dict[str, Any]]] = Mailbox()
        self.epoll.register(self.commands.fd, _IN)
        # A batch read at once is at most half a backlog: a receiver's backlog holds its sender
        # from half its bound on, so the batch that crosses half still fits whole.
        read_batch = max(1, min(BATCH, fabric.port_queue // 2))
        self.area = ReadArea(
            fabric.max_frame + 1,
            vectorio.BatchReceiver(fabric.max_frame + 1, read_batch)
            if vectorio.available()
            else None,
            vectorio.BatchSender(BATCH) if vectorio.available() else None,
        )
        self.on_event: EventHook = no_event
        self.thread_id: int | None = None  # the thread running the rounds, once known
        self.paused = False  # pause(): nothing is read until resume()
        self.stopping = False
        self._files: dict[int, _File] = {}
        self._ports: dict[Port, _Attached] = {}
        self._held: dict[Port, TimerHandle] = {}

    # --- ports (applied between two rounds) ---------------------------------------------------

    def add_port(self, port: Port) -> None:
        """Serve ``port``: read its sources, drain its backlog when writable."""
        if port in self._ports:
            return
        port.loop = self
        reads = []
        for source in port.sources(self.fabric, self.area):
            self.add_source(source)
            reads.append(_fileno(source.file))
        egress = port.egress_fd()
        self._ports[port] = _Attached(reads, None if egress is None else _fileno(egress))
        if not port._idle():
            self.backlog_started(port)
        periodic = port.periodic()
        if periodic is not None:
            self._repeat(port, *periodic)

    def _repeat(self, port: Port, interval: float, call: Callable[[], None]) -> None:
        attached = self._ports.get(port)
        if attached is None:
            return
        when = self.timers.now() + interval
        attached.periodic = self.timers.call_at(
            when, functools.partial(self._periodic, port, interval, call)
        )

    def _periodic(self, port: Port, interval: float, call: Callable[[], None]) -> None:
        call()
        self._repeat(port, interval, call)

    def add_source(self, source: Source) -> None:
        """Read a socket that is no one port's (the shared v0 data socket)."""
        fd = _fileno(source.file)
        entry = self._files.get(fd)
        if entry is None:
            entry = self._files[fd] = _File(fd)
        entry.sources.append(source)
        self._update(entry)

    def remove_source(self, source: Source) -> None:
        entry = self._files.get(_fileno(source.file))
        if entry is not None and source in entry.sources:
            entry.sources.remove(source)
            self._update(entry)

    def remove_port(self, port: Port) -> None:
        """Stop serving ``port`` (idempotent); its backlog and back-pressure ties go."""
        attached = self._ports.pop(port, None)
        if attached is None:
            return
        for fd in attached.reads:
            entry = self._files.get(fd)
            if entry is not None:
                entry.sources = [source for source in entry.sources if source.port is not port]
                self._update(entry)
        if attached.egress is not None:
            entry = self._files.get(attached.egress)
            if entry is not None:
                entry.writers.discard(port)
                self._update(entry)
        for timer in (attached.retry, attached.periodic):
            if timer is not None:
                self.timers.cancel(timer)
        held = self._held.pop(port, None)
        if held is not None:
            self.timers.cancel(held)
        port.leave()
        port.loop = None

    def attached(self) -> list[Port]:
        return list(self._ports)

    def descriptors(self) -> dict[int, list[int]]:
        """Each served port's OS descriptors (what it reads, then where it writes), by port id."""
        found: dict[int, list[int]] = {}
        for port, attached in self._ports.items():
            fds = list(attached.reads)
            if attached.egress is not None and attached.egress not in fds:
                fds.append(attached.egress)
            found[port.id] = fds
        return found

    def set_paused(self, paused: bool) -> None:
        """Stop (or start again) reading every socket, closing none; backlogs still drain."""
        self.paused = paused
        for entry in list(self._files.values()):
            self._update(entry)

    # --- interest -----------------------------------------------------------------------------

    def _update(self, entry: _File) -> None:
        """Register ``entry`` for what it needs now: input unless its port is held or the loop
        is paused, output while a backlog waits on it; unregistered when it needs nothing."""
        source = entry.source
        mask = _OUT if entry.writers else 0
        if source is not None and not self.paused and source.port not in self._held:
            mask |= _IN
        if mask == entry.mask:
            if not mask and source is None and not entry.writers:
                self._files.pop(entry.fd, None)
            return
        try:
            if not mask:
                self.epoll.unregister(entry.fd)
            elif entry.mask:
                self.epoll.modify(entry.fd, mask)
            else:
                self.epoll.register(entry.fd, mask)
        except (OSError, ValueError):  # closed under us: the port's end is reported elsewhere
            mask = 0
        entry.mask = mask
        if not mask and source is None and not entry.writers:
            self._files.pop(entry.fd, None)

    def _update_port(self, port: Port) -> None:
        attached = self._ports.get(port)
        if attached is not None:
            for fd in attached.reads:
                entry = self._files.get(fd)
                if entry is not None:
                    self._update(entry)

    def _foreign(self) -> bool:
        """Called from another thread than the loop's (the control plane, with the loop
        running): the change must be posted, not made."""
        return self.thread_id is not None and threading.get_ident() != self.thread_id

    def backlog_started(self, port: Port) -> None:
        """``port`` has frames waiting for the kernel: drain them when it can take more."""
        if self._foreign():
            self.commands.put((self.backlog_started, (port,), None))
            return
        attached = self._ports.get(port)
        if attached is None:
            return
        if attached.egress is None:
            if attached.retry is None:
                when = self.timers.now() + RETRY_INTERVAL
                attached.retry = self.timers.call_at(when, functools.partial(self._retry, port))
            return
        entry = self._files.get(attached.egress)
        if entry is None:
            entry = self._files[attached.egress] = _File(attached.egress)
        if port not in entry.writers:
            entry.writers.add(port)
            self._update(entry)

    def _retry(self, port: Port) -> None:
        attached = self._ports.get(port)
        if attached is None:
            return
        attached.retry = None
        port.flush_backlog()
        if not port._idle():
            self.backlog_started(port)

    def _flush(self, entry: _File) -> None:
        for port in list(entry.writers):
            port.flush_backlog()
            if port._idle():
                entry.writers.discard(port)
        self._update(entry)

    # --- back-pressure ------------------------------------------------------------------------

    def _hold(self, port: Port) -> None:
        if port in self._held or port not in self._ports:
            return
        port.stats.paused += 1
        self._watch_holders(port)
        self._update_port(port)

    def _watch_holders(self, port: Port) -> None:
        """In STALL_TIMEOUT, stall those of ``port``'s holders that have sent nothing by then."""
        sent = {receiver: receiver.stats.tx_frames for receiver in port.holders()}
        when = self.timers.now() + STALL_TIMEOUT
        self._held[port] = self.timers.call_at(when, functools.partial(self._stall, port, sent))

    def _stall(self, port: Port, sent: dict[Port, int]) -> None:
        """``port`` was held STALL_TIMEOUT: the receivers holding it that sent nothing meanwhile
        are stalled; one that drains, if slowly, holds it on (watched again), so that its own
        backlog does not overflow. With no holder left, ``port`` reads on."""
        self._held.pop(port, None)
        stuck = [r for r in port.holders() if r.stats.tx_frames == sent.get(r, -1)]
        port.stall_holders(stuck)
        for receiver in stuck:
            if receiver.stalled:
                self.on_event("stall", port=receiver.id, sender=port.id)
        if port.holders():
            self._watch_holders(port)
        self._update_port(port)

    def released(self, port: Port) -> None:
        """No receiver holds ``port`` any more: read it again."""
        if self._foreign():
            self.commands.put((self.released, (port,), None))
            return
        handle = self._held.pop(port, None)
        if handle is not None:
            self.timers.cancel(handle)
            self._update_port(port)

    # --- rounds -------------------------------------------------------------------------------

    def run_once(self, timeout: float) -> None:
        """One round: wait at most ``timeout`` seconds (-1: until something happens), serve
        what is ready, apply the posted commands, run the due timers."""
        wait = self.timers.timeout(timeout)
        if timeout >= 0 and (wait < 0 or wait > timeout):
            wait = timeout
        events = self.epoll.poll(wait, MAX_EVENTS)
        files = self._files
        commands = False
        for fd, mask in events:
            entry = files.get(fd)
            if entry is None:
                commands = commands or fd == self.commands.fd
                continue
            if mask & _OUT and entry.writers:
                self._flush(entry)
            if mask & ~_OUT and entry.mask & _IN:
                self._read(entry)
        if commands:
            self.apply_commands()
        self.timers.run_due()

    def _read(self, entry: _File) -> None:
        source = entry.source
        assert source is not None
        port = source.port
        try:
            source.read()
        except PortClosed as exc:
            if port is not None:
                self.close_port(port, str(exc))
            return
        if port is not None and port.holders():
            self._hold(port)

    def port_gone(self, port: Port, reason: str) -> None:
        """A kind found its peer or device gone while sending: close the port after this
        round (not under the send that found it)."""
        self.timers.call_at(0.0, functools.partial(self.close_port, port, reason))

    def close_port(self, port: Port, reason: str) -> None:
        """``port``'s peer or device is gone: stop serving it and tell the control plane."""
        if port not in self._ports:
            return
        self.remove_port(port)
        self.events.put(("closed", {"port": port, "reason": reason}))
        self.on_event("port_closed", port=port.id, reason=reason)

    def apply_commands(self) -> None:
        """Run every command the control plane posted, in order; post each one's reply."""
        for fn, args, reply in self.commands.take():
            try:
                result = fn(*args)
            except Exception as exc:
                if reply is None:
                    raise
                reply.error = exc
            else:
                if reply is not None:
                    reply.result = result
            if reply is not None:
                reply.done_in_loop(self)

    def stop(self) -> None:
        """Applied as a command: the thread ends after this round."""
        self.stopping = True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.epoll.close()
        self.commands.close()
        self.events.close()
