"""The final state of a restart: exported by the old process, applied by the new one.

What travels (document version 1): the restart count and the time the switch first started;
hub mode and the MAC table (each entry with its age); the VLANs; every port with its number,
name, peer, description, VLAN membership, counters, impairment, storm limit and the frames its
egress backlog still held; the spanning tree (on/off, bridge priority, each port's priority,
cost and edge setting); the switch-wide counters; the running capture (its file, written up to
the last frame it queued, goes on in the new process). Frames an impairment was delaying are
not carried (they count as lost, as on a real link that is re-plugged).

``export`` must run with no trio checkpoint between it and the end of the old process's part:
that is what guarantees that the old process reads no frame after the state was taken.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from umlswitch import guard_control
from umlswitch.counters import PortStats
from umlswitch.fabric.impair import Impairment, PortImpairment
from umlswitch.fabric.vlan import DEFAULT_MEMBERSHIP, Membership
from umlswitch.ports.base import Port
from umlswitch.ports.stream.server import _run_until_closed
from umlswitch.restart import kinds
from umlswitch.restart.document import UnreadableState, envelope
from umlswitch.restart.listeners import Descriptors

if TYPE_CHECKING:
    from umlswitch.daemon import Switch

log = logging.getLogger("umlswitch.restart")

Runner = Callable[[], Awaitable[object]]


def _stats(stats: PortStats) -> dict[str, Any]:
    return {
        "rx_frames": stats.rx_frames,
        "rx_bytes": stats.rx_bytes,
        "tx_frames": stats.tx_frames,
        "tx_bytes": stats.tx_bytes,
        "drops": dict(stats.drops),
        "queue_high": stats.queue_high,
        "paused": stats.paused,
        "stalls": stats.stalls,
    }


def _restore_stats(stats: PortStats, doc: dict[str, Any]) -> None:
    for key in ("rx_frames", "rx_bytes", "tx_frames", "tx_bytes", "queue_high", "paused", "stalls"):
        setattr(stats, key, int(doc.get(key, 0)))
    stats.drops.update({str(k): int(v) for k, v in doc.get("drops", {}).items()})


def _impairment(spec: Impairment | None) -> dict[str, Any] | None:
    return None if spec is None else dataclasses.asdict(spec)


def _port_record(switch: Switch, port: Port, fds: Descriptors) -> dict[str, Any] | None:
    record = kinds.describe(port, fds.index, switch.control.connections)
    if record is None:
        if port.kind in ("unix", "stream"):
            return None  # a client still in its handshake: it sees the old process close
        record = {"kind": "static"}
    setting = switch.impair.setting(port)
    record.update(
        id=port.id,
        name=port.name,
        peer=kinds._peer(port.peer),
        description=port.description,
        vlans=switch.fabric.vlans.membership(port.id).doc(),
        stats=_stats(port.stats),
        backlog=[frame.hex() for frame in port.backlog],
        impair={"in": _impairment(setting.inbound), "out": _impairment(setting.outbound)},
        storm=switch.guard.storm_limit(port.id),
    )
    return record


def _stp(switch: Switch) -> dict[str, Any] | None:
    bridge = switch.guard.stp
    if bridge is None:
        return None
    ports = {
        str(n): {"priority": p.priority, "cost": p.cost, "edge": p.admin_edge}
        for n, p in bridge.ports.items()
    }
    return {"mac": bridge.mac.hex(), "priority": bridge.priority, "ports": ports}


def _capture(switch: Switch, fds: Descriptors) -> dict[str, Any] | None:
    """The running capture: its file (what it queued is written first) and its counters."""
    capture = switch.capture.current
    if capture is None:
        return None
    try:
        capture._write(capture._take())
    except OSError as exc:
        log.warning("restart: the capture to '%s' lost its last frames: %s", capture.path, exc)
        return None
    return {
        "file": fds.index(capture.file.fileno()),
        "path": capture.path,
        "port": capture.port,
        "counters": [capture.captured, capture.written, capture.dropped, capture.bytes_written],
    }


def _apply_capture(switch: Switch, doc: dict[str, Any] | None, fds: list[int]) -> None:
    if doc is None:
        return
    file = os.fdopen(fds[doc["file"]], "wb", buffering=0)
    capture = switch.capture.start(file, str(doc["path"]), doc.get("port"))
    captured, written, dropped, size = (int(n) for n in doc["counters"])
    capture.restore_counters(captured, written, dropped)
    capture.bytes_written = size


def export(switch: Switch, restarts: int) -> tuple[dict[str, Any], list[int]]:
    """The state document and the descriptors of every port it names."""
    fabric = switch.fabric
    fds = Descriptors()
    ports = []
    for port in list(fabric.ports.values()):
        if isinstance(port, Port):
            record = _port_record(switch, port, fds)
            if record is not None:
                ports.append(record)
    now = fabric.now
    doc = envelope(
        "state",
        restarts=restarts,
        started_at=switch.started_at,
        hub=fabric.hub,
        aging=fabric.table.aging,
        table=[[e.mac.hex(), e.port, max(0.0, e.age)] for e in fabric.table.entries(now)],
        vlans=sorted(fabric.vlans.vlans),
        storm_default=switch.guard.storm_default,
        stp=_stp(switch),
        ports=ports,
        departed=_stats(fabric.departed),
        events=dict(fabric.events),
        control_events=dict(switch.control.events),
        capture=_capture(switch, fds),
    )
    return doc, fds.fds


def _membership(doc: dict[str, Any] | None) -> Membership:
    if not doc:
        return DEFAULT_MEMBERSHIP
    return Membership(int(doc["untagged"]), frozenset(int(v) for v in doc["tagged"]))


def _apply_impairment(switch: Switch, port: Port, doc: dict[str, Any] | None) -> None:
    if not doc or not (doc.get("in") or doc.get("out")):
        return
    inbound = Impairment(**doc["in"]) if doc.get("in") else None
    outbound = Impairment(**doc["out"]) if doc.get("out") else None
    switch.impair.apply(port, PortImpairment(inbound, outbound))


def _adopt_port(
    switch: Switch, record: dict[str, Any], fds: list[int], static: dict[str, Port]
) -> tuple[Port, Runner | None]:
    runner: Runner | None = None
    if record["kind"] == "static":
        found = static.pop(record["name"], None)
        if found is None:
            raise kinds.CannotAdopt(f"port {record['name']} was not handed over")
        port = found
        port.id = int(record["id"])
    else:
        shared = switch.shared
        port, control = kinds.rebuild(record, fds, shared)
        if control is not None:
            conn = trio.socket.from_stdlib_socket(control)
            runner = _client_runner(switch, port, conn)
        else:
            runner = _stream_runner(switch, port)
    switch.attachments.attach_now(port, _membership(record.get("vlans")))
    _restore_stats(port.stats, record.get("stats", {}))
    for frame in record.get("backlog", []):
        port.send_nowait(bytes.fromhex(frame))
    _apply_impairment(switch, port, record.get("impair"))
    storm = int(record.get("storm", 0))
    if storm != switch.guard.storm_limit(port.id):
        switch.guard.set_storm_limit(port.id, storm)
    return port, runner


def _client_runner(switch: Switch, port: Port, conn: trio.socket.SocketType) -> Runner:
    async def run() -> None:
        with conn:
            await switch.control.run_client(port, conn)  # type: ignore[arg-type]

    return run


def _stream_runner(switch: Switch, port: Port) -> Runner:
    async def run() -> None:
        await switch.attachments.run(port, lambda: _run_until_closed(port, switch.fabric))  # type: ignore[arg-type]

    return run


def _apply_stp(switch: Switch, doc: dict[str, Any] | None) -> None:
    guard = switch.guard
    if doc is None:
        if guard.stp is not None:
            guard.disable_stp()
        return
    mac = bytes.fromhex(doc["mac"])
    if guard.stp is not None and guard.stp.mac != mac:
        guard.disable_stp()
    if guard.stp is None:  # the same bridge id: the other bridges see no change
        guard.enable_stp(guard_control.new_bridge(switch.config, mac))
    bridge = guard.stp
    assert bridge is not None
    now = switch.fabric.now
    bridge.set_priority(int(doc["priority"]), now)
    for number, port in doc.get("ports", {}).items():
        if int(number) in bridge.ports:
            bridge.set_port(int(number), now, priority=port["priority"], cost=port["cost"])
            bridge.set_edge(int(number), bool(port["edge"]), now)
    guard.apply()


def apply(
    switch: Switch, doc: dict[str, Any], fds: list[int], static_ports: list[Port]
) -> list[Runner]:
    """Rebuild every port and the tables; the runners start the rebuilt client and stream
    ports (the command line's ones run as at start-up)."""
    fabric = switch.fabric
    try:
        fabric.set_hub(bool(doc["hub"]))
        fabric.table.aging = float(doc["aging"])
        for vid in doc.get("vlans", []):
            if vid not in fabric.vlans.vlans:
                fabric.vlans.create(int(vid))
        switch.guard.storm_default = int(doc.get("storm_default", 0))
        static = {port.name: port for port in static_ports}
        runners = []
        for record in doc["ports"]:
            _, runner = _adopt_port(switch, record, fds, static)
            if runner is not None:
                runners.append(runner)
        now = fabric.now
        for mac, port_id, age in doc.get("table", []):
            if port_id in fabric.ports:
                fabric.table.learn(bytes.fromhex(mac), int(port_id), now - float(age))
        _apply_stp(switch, doc.get("stp"))
        _restore_stats(fabric.departed, doc.get("departed", {}))
        fabric.events.update(doc.get("events", {}))
        switch.control.events.update(doc.get("control_events", {}))
        _apply_capture(switch, doc.get("capture"), fds)
    except (KeyError, TypeError, ValueError) as exc:
        raise UnreadableState(f"the state document is malformed: {exc!r}") from None
    for port in static.values():
        log.warning("port %s was not in the previous process's state; not attached", port.name)
    return runners
