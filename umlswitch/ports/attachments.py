"""The switch's attached ports: one record per port, one way in and one way out for every family.

Each attach path (the control socket's clients, a stream listener's connections, the ports of the
command line) attaches its ports with ``attach`` and runs them with ``run``, which detaches them
when they end, whatever the reason: the peer left (``PortClosed``, or what the family's own watch
returns), the management console removed the port (``remove``), or the switch shut down. Detaching
is always the same: out of the fabric (its MAC entries forgotten), the port closed, its
``detached`` event set (``port/remove`` waits on it), one log line saying why.

Runs in trio. The fabric changes (attach, detach) are applied by the data plane between two of
its rounds (``dataplane.plane``), so the fabric has one writer; with no data plane running
(tests of the fabric alone) they are made here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from umlswitch.dataplane.plane import current
from umlswitch.fabric.fabric import Fabric, PortNumberTaken
from umlswitch.fabric.vlan import DEFAULT_MEMBERSHIP, Membership
from umlswitch.ports.base import Port, PortClosed

log = logging.getLogger("umlswitch.ports")

REMOVED = "removed by the management console"
SHUTDOWN = "shutdown"


class Attachments:
    """The attached ports of every family, by port number, each with the scope that runs it."""

    def __init__(self, fabric: Fabric) -> None:
        self.fabric = fabric
        self._scopes: dict[int, trio.CancelScope] = {}
        self._running: set[int] = set()  # ports whose run has begun
        self._reserved: set[int] = set()  # numbers kept for a port between two attachments

    def __contains__(self, port_id: object) -> bool:
        return port_id in self._scopes

    def allocate_id(self, requested: int | None = None) -> int:
        """A free port number (``Fabric.allocate_id``), counting the ports being attached: the
        data plane attaches them between two rounds, after this returns."""
        taken = self._scopes.keys() | self.fabric.ports.keys() | self._reserved
        if requested is not None:
            if requested in taken:
                raise PortNumberTaken(f"port {requested} is already in use")
            return requested
        number = 1
        while number in taken:
            number += 1
        return number

    def reserve(self, port_id: int) -> None:
        """Keep ``port_id`` from ``allocate_id`` while no port holds it (a stream link between
        its connections), until ``release``."""
        self._reserved.add(port_id)

    def release(self, port_id: int) -> None:
        self._reserved.discard(port_id)

    async def attach(self, port: Port, vlans: Membership = DEFAULT_MEMBERSHIP) -> None:
        """Make ``port`` part of the fabric (it forwards from now on) and keep its record."""
        plane = current(self.fabric)
        if plane is None:
            self.attach_now(port, vlans)
            return
        self._scopes[port.id] = trio.CancelScope()  # its number is taken from now on
        try:
            await plane.call(self.fabric.attach, port, vlans)
        except BaseException:
            self._scopes.pop(port.id, None)
            raise
        self._attached(port)

    def attach_now(self, port: Port, vlans: Membership = DEFAULT_MEMBERSHIP) -> None:
        """``attach`` where no data plane runs the fabric (or in its thread)."""
        self.fabric.attach(port, vlans)
        self._scopes[port.id] = trio.CancelScope()
        self._attached(port)

    def _attached(self, port: Port) -> None:
        """Say that ``port`` is part of the fabric now (``port/attach``)."""
        peer = port.peer
        self.fabric.publish(
            "port/attach",
            port=port.id,
            kind=port.kind,
            name=port.name,
            **({} if peer is None else {"pid": peer.pid, "uid": peer.uid}),
        )

    async def run(self, port: Port, life: Callable[[], Awaitable[str]]) -> str:
        """Run an attached port's ``life`` (it returns why the port ends, or raises PortClosed)
        until it ends, the port is removed, or the switch shuts down; then detach the port.
        Returns why it ended."""
        reason = SHUTDOWN
        scope = self._scopes.get(port.id)
        if scope is None:  # removed before it ran (by the --rc file): detached already
            return REMOVED
        self._running.add(port.id)
        try:
            with scope:
                try:
                    reason = await life()
                except PortClosed as exc:
                    reason = str(exc)
            if scope.cancelled_caught:
                reason = REMOVED
        finally:
            with trio.CancelScope(shield=True):
                await self.detach(port, reason)
        return reason

    async def detach(self, port: Port, reason: str) -> None:
        """The one way out: the port leaves the fabric, is closed, and says it is gone."""
        plane = current(self.fabric)
        if plane is None:
            self._detach_now(port, reason)
        else:
            await plane.call(self._detach_now, port, reason)
        port.detached.set()

    def _detach_now(self, port: Port, reason: str) -> None:
        self._scopes.pop(port.id, None)
        self._running.discard(port.id)
        forgotten = self.fabric.detach(port.id)
        port.close()
        log.info("port %d detached (%s); forgot %d MAC(s)", port.id, reason, forgotten)
        self.fabric.publish(
            "port/detach", port=port.id, kind=port.kind, name=port.name, reason=reason
        )

    def remove(self, port_id: int) -> trio.Event | None:
        """Detach a port as if its peer had left (the console's ``port/remove``): the event set
        once it is gone, or None if no port has that number."""
        scope = self._scopes.get(port_id)
        port = self.fabric.ports.get(port_id)
        if scope is None or not isinstance(port, Port):
            return None
        if port_id in self._running:
            scope.cancel()  # its run detaches it
            return port.detached
        plane = current(self.fabric)
        if plane is None:
            self._detach_now(port, REMOVED)
        else:
            plane.apply(self._detach_now, port, REMOVED)
        port.detached.set()
        return port.detached
