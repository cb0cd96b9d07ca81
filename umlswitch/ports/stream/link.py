"""``--stream-connect``: a port that connects, as a client, to a listener speaking QEMU's stream
framing (passt's socket, another umlswitch's ``--stream``, QEMU ``-netdev stream,server=on``),
and keeps its port number while it reconnects.

Everything here is control plane (trio): connecting, backing off, swapping the port. Frames go
through the stream port machinery exactly as for an accepted ``--stream`` connection: once
connected, the socket becomes a ``LinkPort`` (a ``StreamPort``: its framing, ingress, egress,
hostile-length and deaf-peer handling) attached and run through ``Attachments`` like any
accepted connection, and detached the same way when the connection ends (its MAC entries
forgotten). While there is no connection the port number is held by a ``DownPort``: attached in
the link's VLANs, it sends nothing (frames flooded to it are counted ``link_down``), and
``port/print`` shows the link's state through it.

The life of a link, one task (``StreamLink.run``):

* at start-up (before the ``--rc`` file runs) the link takes a port number and its ``DownPort``
  is attached, so the number is the same on every start and the ``--rc`` file can address it;
* it connects (``connecting``); a failure is logged at a bounded rate and retried after a
  back-off of 1 s, doubling up to 30 s (``retrying in N s``);
* connected, the ``LinkPort`` replaces the ``DownPort`` under the same number, with the VLANs,
  impairment, spanning-tree settings (priority, cost, edge) and storm limit the port had (the
  command line's, or what the console set since);
* when the connection ends (the peer left, a hostile length, an error) the ``DownPort`` comes
  back and the link reconnects after the back-off; a connection that lasted ``STABLE`` seconds
  starts the back-off again at 1 s. ``port/remove`` of the link's port ends the link.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections import Counter
from typing import Any

import trio

from umlswitch import counters
from umlswitch.dataplane import parked
from umlswitch.fabric.guard import Guard
from umlswitch.fabric.impair import PortImpairment
from umlswitch.fabric.vlan import DEFAULT_MEMBERSHIP, Membership
from umlswitch.impair_control import ImpairControl
from umlswitch.listener import peer_cred
from umlswitch.ports.attachments import REMOVED, Attachments
from umlswitch.ports.base import Frame, Port, PortInfo, Unsent, ratelog
from umlswitch.ports.stream.port import StreamPort
from umlswitch.ports.stream.spec import StreamSpec, target_of

log = logging.getLogger("umlswitch.stream")

FIRST_DELAY = 1.0  # seconds before the first retry
MAX_DELAY = 30.0  # the back-off doubles up to this
STABLE = 30.0  # a connection that lasted this long starts the back-off again at FIRST_DELAY
CONNECT_TIMEOUT = 10.0  # one connection attempt (name lookup and connect)
# TCP keepalive of a link: a peer host that vanished without a word is noticed in about 25 s.
KEEPALIVE = ((socket.TCP_KEEPIDLE, 10), (socket.TCP_KEEPINTVL, 5), (socket.TCP_KEEPCNT, 3))


class Backoff:
    """Delays between attempts: ``first``, doubling up to ``limit``; ``reset`` starts again."""

    def __init__(self, first: float = FIRST_DELAY, limit: float = MAX_DELAY) -> None:
        self.first = first
        self.limit = limit
        self._next = first

    def delay(self) -> float:
        """The delay before the next attempt (and double it for the one after)."""
        delay = self._next
        self._next = min(delay * 2, self.limit)
        return delay

    def reset(self) -> None:
        self._next = self.first


class GuardSettings:
    """A port's spanning-tree priority, cost and edge setting and its storm limit, as the
    console may have changed them: kept from one of a link's ports for the next."""

    def __init__(self, guard: Guard, port_id: int) -> None:
        self.storm_limit = guard.storm_limit(port_id)
        stp = guard.stp.ports.get(port_id) if guard.stp is not None else None
        self.stp = None if stp is None else (stp.priority, stp.cost, stp.admin_edge)

    def restore(self, guard: Guard, port_id: int) -> None:
        if self.storm_limit != guard.storm_limit(port_id):
            guard.set_storm_limit(port_id, self.storm_limit)
        bridge = guard.stp
        port = bridge.ports.get(port_id) if bridge is not None else None
        if bridge is None or port is None or self.stp is None:
            return
        priority, cost, edge = self.stp
        now = guard.fabric.now
        if (port.priority, port.cost) != (priority, cost):
            bridge.set_port(port_id, now, priority=priority, cost=cost)
        if port.admin_edge != edge:
            bridge.set_edge(port_id, edge, now)
        guard.apply()


class DownPort(Port):
    """Holds a link's port number while it is not connected: it sends nothing."""

    kind = "stream"
    stp_edge = False  # another switch may be behind it: the spanning tree must see it

    def __init__(self, port_id: int, name: str, link: StreamLink) -> None:
        super().__init__(port_id, name)
        self.link = link

    def _send(self, frame: Frame) -> None:
        self.stats.drops[counters.LINK_DOWN] += 1
        raise Unsent

    def describe(self) -> PortInfo:
        return PortInfo(self.kind, link=self.link.info())


class LinkPort(StreamPort):
    """A link's connection: a stream port like an accepted one, that says it is a link."""

    stp_edge = False  # another switch may be behind it: the spanning tree must see it

    def __init__(self, port_id: int, name: str, sock: socket.socket, link: StreamLink) -> None:
        super().__init__(port_id, name, sock)
        self.link = link

    def describe(self) -> PortInfo:
        return PortInfo(self.kind, self.peer, self.description, link=self.link.info())


async def _run_until_closed(port: StreamPort, attachments: Attachments) -> str:
    await port.run(attachments.fabric)
    return "shutdown"


class StreamLink:
    """One ``--stream-connect`` target: its port number, state and the task that keeps it up."""

    def __init__(
        self,
        spec: StreamSpec,
        attachments: Attachments,
        impair: ImpairControl,
        *,
        vlans: Membership = DEFAULT_MEMBERSHIP,
        impairment: PortImpairment | None = None,
    ) -> None:
        self.spec = spec
        self.target = target_of(spec)
        self.name = f"stream-connect:{self.target}"  # the port's name, whatever its state
        self.attachments = attachments
        self.impair = impair
        self.vlans = vlans  # of the link's port, kept across connections
        self.impairment = impairment or PortImpairment()  # likewise
        self.port_id = 0
        self.state = "connecting"
        self.retry_at = 0.0  # trio time of the next attempt, while retrying
        self.connected_at = 0.0  # wall-clock time the connection began, while connected
        self.peer = ""  # who answered: pid=P uid=U (unix) or HOST:PORT (TCP)
        self.connections = 0  # connections made (the first and the reconnections)
        self.failures = 0  # attempts that failed
        self.last_error = ""
        self.backoff = Backoff()
        self.events: Counter[str] = Counter()  # link_lost, link_connect_failed
        self._port: Port | None = None  # the port holding the number now
        self._guard_settings: GuardSettings | None = None  # likewise, once there was a port
        self._sock: socket.socket | None = None  # a fresh connection, between two ports

    @property
    def reconnections(self) -> int:
        return max(self.connections - 1, 0)

    def info(self) -> dict[str, Any]:
        """The link as ``port/print`` shows it."""
        state = self.state
        if state == "retrying":
            state = f"retrying in {max(self.retry_at - trio.current_time(), 0.0):.0f} s"
        return {
            "target": self.target,
            "state": state,
            "peer": self.peer or None,
            "connected_for": (
                round(time.time() - self.connected_at, 1) if self.state == "connected" else None
            ),
            "reconnections": self.reconnections,
            "failed_attempts": self.failures,
            "last_error": self.last_error or None,
        }

    async def open(self) -> None:
        """Take a port number and hold it with a ``DownPort`` (at start-up, before --rc)."""
        self.port_id = self.attachments.allocate_id()
        self.attachments.reserve(self.port_id)  # its number, whatever its connections do
        async with parked(self.attachments.fabric):
            if not self.vlans.is_default:
                self.attachments.fabric.vlans.bind(self.name, self.vlans)
            await self._hold(DownPort(self.port_id, self.name, self))
        in_vlans = "" if self.vlans.is_default else f" (VLAN {self.vlans.describe()})"
        log.info("port %d attached: %s, connecting%s", self.port_id, self.name, in_vlans)

    async def _hold(self, port: Port) -> None:
        """Attach ``port`` under the link's number, with the link's VLANs and impairment (the
        data plane waits meanwhile: the fabric has one writer at a time)."""
        self._port = port
        async with parked(self.attachments.fabric):
            self.attachments.attach_now(port, self.vlans)
            setting = self.impairment
            if setting.inbound is not None or setting.outbound is not None:
                self.impair.apply(port, setting)
            guard = self.attachments.fabric.guard
            if self._guard_settings is not None and isinstance(guard, Guard):
                self._guard_settings.restore(guard, port.id)

    def _keep_settings(self, port: Port) -> None:
        """Remember what the console may have changed on ``port``, for the next one: its
        VLANs, impairment, spanning-tree settings and storm limit."""
        self.vlans = self.attachments.fabric.vlans.membership(port.id)
        self.impairment = self.impair.setting(port)
        guard = self.attachments.fabric.guard
        if isinstance(guard, Guard):
            self._guard_settings = GuardSettings(guard, port.id)

    async def run(self) -> None:
        """Connect, run the connection as a port, reconnect; until removed or cancelled."""
        first = True
        while True:
            down = self._port
            assert down is not None
            life = functools.partial(self._connect, first, down)
            if await self.attachments.run(down, life) == REMOVED:
                break
            sock, self._sock = self._sock, None
            assert sock is not None
            port = LinkPort(self.port_id, self.name, sock, self)
            self._describe_peer(port, sock)
            await self._hold(port)
            self.state, self.connected_at = "connected", time.time()
            self.connections += 1
            log.info(
                "port %d (%s): connected to %s (connection %d)",
                self.port_id,
                self.name,
                self.peer,
                self.connections,
            )
            started = trio.current_time()
            reason = await self.attachments.run(port, functools.partial(self._connected, port))
            if reason == REMOVED:
                break
            if trio.current_time() - started >= STABLE:
                self.backoff.reset()
            self.last_error = reason
            self.events[counters.LINK_LOST] += 1
            log.warning("port %d (%s): link lost (%s); reconnecting", port.id, self.name, reason)
            self.state = "connecting"
            await self._hold(DownPort(self.port_id, self.name, self))
            first = False
        self.state = "removed"
        self.attachments.release(self.port_id)
        log.info("port %d (%s): link removed; no more reconnections", self.port_id, self.name)

    async def _connected(self, port: LinkPort) -> str:
        try:
            return await _run_until_closed(port, self.attachments)
        finally:
            self._keep_settings(port)

    async def _connect(self, first: bool, down: Port) -> str:
        """The ``DownPort``'s life: attempt, back off, attempt again, until connected."""
        try:
            while True:
                if not first:
                    delay = self.backoff.delay()
                    self.state, self.retry_at = "retrying", trio.current_time() + delay
                    await trio.sleep(delay)
                first = False
                self.state = "connecting"
                try:
                    with trio.fail_after(CONNECT_TIMEOUT):
                        self._sock = await self._open_connection()
                except (OSError, trio.TooSlowError) as exc:
                    self._failed(exc)
                    continue
                return f"connected to {self.target}"
        finally:
            self._keep_settings(down)

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.events[counters.LINK_CONNECT_FAILED] += 1
        if isinstance(exc, OSError):
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            self.last_error = f"cannot connect: {reason}"
        else:
            self.last_error = f"no answer within {CONNECT_TIMEOUT:g} s"
        ratelog.warning(
            f"link:{self.port_id}",
            "port %d (%s): %s; retrying with back-off (up to %g s)",
            self.port_id,
            self.name,
            self.last_error,
            MAX_DELAY,
        )

    async def _open_connection(self) -> socket.socket:
        """A connected, non-blocking stdlib socket to the target."""
        spec = self.spec
        if spec.kind == "unix":
            candidates: list[tuple[int, Any]] = [(socket.AF_UNIX, spec.path)]
        else:
            infos = await trio.socket.getaddrinfo(spec.host, spec.port, type=socket.SOCK_STREAM)
            candidates = [(family, address) for family, _, _, _, address in infos]
        error: OSError = OSError(f"{spec.host} has no address")
        for family, address in candidates:
            sock = trio.socket.socket(family, socket.SOCK_STREAM)
            try:
                await sock.connect(address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            plain = socket.socket(fileno=sock.detach())
            if family != socket.AF_UNIX:
                plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                plain.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                for option, value in KEEPALIVE:
                    plain.setsockopt(socket.IPPROTO_TCP, option, value)
            return plain
        raise error

    def _describe_peer(self, port: LinkPort, sock: socket.socket) -> None:
        try:
            if sock.family == socket.AF_UNIX:
                port.peer = peer_cred(sock)
                self.peer = str(port.peer)
            else:
                host, number = sock.getpeername()[:2]
                self.peer = f"[{host}]:{number}" if ":" in host else f"{host}:{number}"
        except OSError:
            self.peer = self.target
