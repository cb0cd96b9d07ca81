"""Loop and storm protection between the ports and the forwarding decision: the spanning tree's
gate, storm control, and the loop warning of a switch without STP.

The fabric asks ``Guard.admit`` about every frame only while the guard is *active* (STP on, or
a storm limit on some port): the guard installs itself as ``Fabric.guard`` then, and the fabric
composes its stage into the pipeline (which then decides every frame anew: the guard counts and
gates each one); otherwise ``Fabric.guard`` is None and the plain path has no trace of it. What
the tree blocks on egress costs nothing per frame: the fabric's flood and
unicast tables are rebuilt without the blocked ports whenever the tree changes
(``Fabric.set_blocked``).

* **STP** (``umlswitch.fabric.stp``): a frame to ``01:80:c2:00:00:00`` is a BPDU, consumed and
  never forwarded; a frame arriving on a port that is not forwarding is dropped (``stp_discard``),
  its source learned first if the port is learning.
* **Storm control**: a port with a limit of N may flood (broadcast, multicast, unknown unicast)
  at most N frames in each one-second window of the switch's coarse clock; the others are
  dropped (``storm``). Known unicast is never limited.
* **Loop warning** (``LoopWatch``, STP off): a source address the table refuses to move because
  it was seen on another port within the hold-down is what a switch sees when its own flooded
  frames come back through a loop; it is logged, at most once per interval per pair of ports.

Time is the fabric's coarse clock (``Fabric.now``); nothing here reads a clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from umlswitch import counters
from umlswitch.fabric.frame import format_mac
from umlswitch.fabric.stp import STP_GROUP, BpduError, Bridge, format_bridge_id
from umlswitch.ratelog import RateLimitedLog

if TYPE_CHECKING:
    from umlswitch.fabric.fabric import Fabric, FabricPort

log = logging.getLogger("umlswitch.stp")

STORM_WINDOW = 1.0  # seconds
NOT_STORMING = -1.0  # a storm entry's last drop time while the port is not storming
LOOP_LOG_INTERVAL = 10.0


def is_edge(port: FabricPort) -> bool:
    """Guests' ports (unix, VDE and stream clients) are edge ports; the others take part."""
    return bool(getattr(port, "stp_edge", False))


class Guard:
    """The per-frame gate of STP and storm control, and the owner of the bridge; it installs
    itself as ``fabric.guard`` while it has something to do."""

    def __init__(self, fabric: Fabric, *, storm_limit: int = 0) -> None:
        self.fabric = fabric
        self.stp: Bridge | None = None
        self.storm_default = storm_limit  # for ports attached from now on; 0: none
        # port id -> [limit, window start, frames flooded in the window]
        self.storm: dict[int, list[float]] = {}
        self._ratelog = RateLimitedLog(log)
        self._states: dict[int, str] = {}  # the tree's port states last published (stp/state)
        self._refresh()

    # --- switching on and off ------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.stp is not None or bool(self.storm) or self.storm_default > 0

    def _refresh(self) -> None:
        self.fabric.guard = self if self.active else None

    def enable_stp(self, bridge: Bridge) -> None:
        """Run ``bridge`` over every attached port from now on."""
        self.stp = bridge
        now = self.fabric.now
        for port in self.fabric.ports.values():
            bridge.add_port(port.id, port.name, edge=is_edge(port), now=now)
        log.info("spanning tree on: bridge id %s", format_bridge_id(bridge.id))
        self._refresh()
        self.apply()

    def disable_stp(self) -> None:
        if self.stp is None:
            return
        self.stp = None
        self._states = {}
        self.fabric.set_blocked(frozenset())
        log.info("spanning tree off: every port forwards")
        self._refresh()

    def set_storm_limit(self, port_id: int | None, limit: int) -> None:
        """Limit port ``port_id`` (every port and new ones: None) to ``limit`` flooded frames
        per second; 0 removes the limit."""
        ids = list(self.fabric.ports) if port_id is None else [port_id]
        if port_id is None:
            self.storm_default = limit
        for pid in ids:
            if limit > 0:
                self.storm[pid] = [float(limit), self.fabric.now, 0.0, NOT_STORMING]
            else:
                self.storm.pop(pid, None)
        self._refresh()

    def storm_limit(self, port_id: int) -> int:
        entry = self.storm.get(port_id)
        return 0 if entry is None else int(entry[0])

    # --- ports ---------------------------------------------------------------------------

    def attached(self, port: FabricPort) -> None:
        if self.storm_default > 0:
            self.storm[port.id] = [float(self.storm_default), self.fabric.now, 0.0, NOT_STORMING]
        if self.stp is not None:
            self.stp.add_port(port.id, port.name, edge=is_edge(port), now=self.fabric.now)
            self.apply()
        self._refresh()

    def detached(self, port_id: int) -> None:
        self.storm.pop(port_id, None)
        if self.stp is not None:
            self.stp.remove_port(port_id, self.fabric.now)
            self.apply()
        self._refresh()

    # --- the tree's effects --------------------------------------------------------------

    def tick(self, now: float) -> None:
        if self.stp is not None:
            self.stp.tick(now)
            self.apply()
        for pid, entry in list(self.storm.items()):
            if entry[3] != NOT_STORMING and now - entry[3] >= STORM_WINDOW:
                entry[3] = NOT_STORMING  # a whole window without a drop: the storm is over
                self.fabric.publish("storm/stop", port=pid, limit=int(entry[0]))

    def apply(self) -> None:
        """Do what the bridge asked: log, flush, re-gate the ports, send BPDUs."""
        bridge = self.stp
        if bridge is None:
            return
        effects = bridge.take()
        fabric = self.fabric
        for line in effects.logs:
            log.info("%s", line)
        flushed = 0
        for pid in effects.flush:
            flushed += fabric.table.forget_port(pid)
        if flushed:
            fabric.events[counters.STP_FLUSHED] += flushed
            log.debug("topology change: forgot %d MAC(s)", flushed)
        if effects.changed:
            blocked = frozenset(pid for pid in fabric.ports if pid not in bridge.forwarding)
            fabric.set_blocked(blocked)
        self._publish_states(bridge)
        ports = fabric.ports
        for pid, frame in effects.sends:
            port = ports.get(pid)
            if port is not None:
                fabric.egress_of(port).send_nowait(frame)  # an impaired link impairs BPDUs too

    def _publish_states(self, bridge: Bridge) -> None:
        """Publish ``stp/state`` for every port whose state changed since the last call."""
        states = {pid: port.state.value for pid, port in bridge.ports.items()}
        if states == self._states:
            return
        for pid, state in states.items():
            previous = self._states.get(pid)
            if state != previous:
                self.fabric.publish("stp/state", port=pid, state=state, previous=previous)
        self._states = states

        # --- the per-frame gate --------------------------------------------------------------

    def admit(
        self,
        ingress: FabricPort,
        dst: bytes,
        src: bytes,
        data: bytes | bytearray | memoryview,
        offset: int,
        size: int,
    ) -> bool:
        """Whether the fabric may go on with this frame (False: consumed or dropped, counted)."""
        pid = ingress.id
        bridge = self.stp
        fabric = self.fabric
        if bridge is not None:
            if dst == STP_GROUP:
                try:
                    bridge.receive(pid, data[offset : offset + size], fabric.now)
                except BpduError as exc:
                    ingress.stats.drops[counters.BAD_BPDU] += 1
                    self._ratelog.warning(
                        f"bpdu:{pid}", "port %d (%s): bad BPDU: %s", pid, ingress.name, exc
                    )
                self.apply()
                return False
            if pid not in bridge.forwarding:
                if pid in bridge.learning and not fabric.hub:
                    fabric.table.learn(src, pid, fabric.now)
                ingress.stats.drops[counters.STP_DISCARD] += 1
                return False
        storm = self.storm.get(pid)
        if storm is not None and (fabric.hub or dst[0] & 1 or fabric.table.lookup(dst) is None):
            now = fabric.now
            if now - storm[1] >= STORM_WINDOW:
                storm[1] = now
                storm[2] = 0.0
            if storm[2] >= storm[0]:
                ingress.stats.drops[counters.STORM] += 1
                if storm[3] == NOT_STORMING:
                    fabric.publish("storm/start", port=pid, name=ingress.name, limit=int(storm[0]))
                storm[3] = now
                self._ratelog.warning(
                    f"storm:{pid}",
                    "port %d (%s): storm control: more than %d flooded frames/s; dropping",
                    pid,
                    ingress.name,
                    int(storm[0]),
                )
                return False
            storm[2] += 1
        return True


class LoopWatch:
    """Says in the log when the switch (STP off) sees its own flooded frames come back."""

    def __init__(self, fabric: Fabric, clock: Callable[[], float] | None = None) -> None:
        self.fabric = fabric
        kwargs = {} if clock is None else {"clock": clock}
        self._ratelog = RateLimitedLog(log, interval=LOOP_LOG_INTERVAL, burst=1, **kwargs)

    def held(self, mac: bytes, learned_on: int | None, ingress: FabricPort) -> None:
        """``mac``, learned on port ``learned_on`` a moment ago, arrived on ``ingress``."""
        fabric = self.fabric
        if (fabric.guard is not None and fabric.guard.stp is not None) or learned_on is None:
            return
        fabric.events[counters.LOOP_SUSPECTED] += 1
        other = fabric.ports.get(learned_on)
        a, b = sorted((learned_on, ingress.id))
        self._ratelog.warning(
            f"loop:{a}:{b}",
            "LOOP? frames from %s, which port %d (%s) sent a moment ago, came back on port %d "
            "(%s): the network has a loop through this switch, and broadcasts circle forever; "
            "turn on the spanning tree (--stp, or 'fstp/setfstp 1') or remove a link",
            format_mac(mac),
            learned_on,
            "gone" if other is None else other.name,
            ingress.id,
            ingress.name,
        )
