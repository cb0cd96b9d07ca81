"""What the management commands show: JSON documents of the live switch, and their text form.

Each ``*_doc`` function reads the running switch and returns a plain JSON-able dict (the answer of
``json COMMAND``); each ``*_lines`` function renders such a document as the data lines of the
text answer, in at most 80 columns. The text is for people; scripts use the JSON.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from umlswitch import __version__, counters
from umlswitch.counters import PortStats
from umlswitch.fabric.fabric import FabricPort
from umlswitch.fabric.frame import format_mac
from umlswitch.fabric.stp import format_bridge_id
from umlswitch.fabric.vlan import DEFAULT_VLAN, split_key
from umlswitch.ports.base import Port, PortInfo

if TYPE_CHECKING:
    from umlswitch.mgmt.managed import ManagedSwitch

Doc = dict[str, Any]


# --- small formatting helpers ---------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3700`` -> ``1h01m40s``; ``90000`` -> ``1d01h00m``."""
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_counts(counts: Mapping[str, int]) -> str:
    """``{"runt": 2, "giant": 0}`` -> ``runt=2`` (zeros left out); ``none`` if all are zero."""
    shown = [f"{name}={value}" for name, value in sorted(counts.items()) if value]
    return " ".join(shown) or "none"


def drops_doc(drops: Mapping[str, int]) -> dict[str, int]:
    """Every known drop reason (zero or not) plus any other reason counted."""
    doc = dict.fromkeys(counters.DROP_REASONS, 0)
    for reason, count in drops.items():
        doc[reason] = doc.get(reason, 0) + count
    return doc


def _perm(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return f"{stat.S_IMODE(os.lstat(path).st_mode):04o}"
    except OSError:
        return None


def _traffic(stats: PortStats) -> Doc:
    return {
        "rx_frames": stats.rx_frames,
        "rx_bytes": stats.rx_bytes,
        "tx_frames": stats.tx_frames,
        "tx_bytes": stats.tx_bytes,
        "drops": drops_doc(stats.drops),
    }


def _traffic_lines(doc: Mapping[str, Any]) -> list[str]:
    return [
        f" IN:  frames {doc['rx_frames']:>12}  bytes {doc['rx_bytes']:>16}",
        f" OUT: frames {doc['tx_frames']:>12}  bytes {doc['tx_bytes']:>16}",
        f" drops: {format_counts(doc['drops'])}",
    ]


# --- ports --------------------------------------------------------------------------------


def port_doc(switch: ManagedSwitch, port: FabricPort) -> Doc:
    info = port.describe() if isinstance(port, Port) else PortInfo("other")
    cred = info.peer
    return {
        "id": port.id,
        "kind": info.kind,
        "name": port.name,
        "peer": None if cred is None else {"pid": cred.pid, "uid": cred.uid, "gid": cred.gid},
        "description": info.description or None,
        "socket": info.data_socket,
        "macs": switch.fabric.table.count(port.id),
        "vlans": switch.fabric.vlans.membership(port.id).doc(),
        "vteps": info.vteps,
        "link": info.link,
        "queue": {
            "depth": port.stats.queued,
            "high": port.stats.queue_high,
            "limit": switch.fabric.port_queue,
        },
        "paused": port.stats.paused,
        "stalls": port.stats.stalls,
        "stp": stp_port_doc(switch, port.id),
        "storm_limit": switch.guard.storm_limit(port.id),
        "impair": switch.impair.doc(port),
        **_traffic(port.stats),
    }


def stp_port_doc(switch: ManagedSwitch, port_id: int) -> Doc | None:
    """A port's part in the spanning tree; None while STP is off."""
    bridge = switch.guard.stp
    port = bridge.ports.get(port_id) if bridge is not None else None
    if port is None:
        return None
    return {
        "role": port.role.value,
        "state": port.state.value,
        "edge": port.edge,
        "protocol": "rstp" if port.rstp else "stp",
        "priority": port.priority,
        "cost": port.cost,
        "port_id": f"{port.port_id:04x}",
        "designated_bridge": (
            format_bridge_id(port.info.bridge) if port.info is not None else None
        ),
        "bpdus": port.heard,
    }


def stp_doc(switch: ManagedSwitch) -> Doc:
    """The spanning tree: bridge, root, timers, topology changes, ports (``fstp/print``)."""
    bridge = switch.guard.stp
    if bridge is None:
        return {"stp": False}
    last = bridge.last_topology_change
    _, max_age, hello, fwd = bridge.times
    return {
        "stp": True,
        "bridge": format_bridge_id(bridge.id),
        "root": format_bridge_id(bridge.root),
        "is_root": bridge.is_root,
        "root_port": bridge.root_port,
        "root_cost": bridge.root_cost,
        "timers": {"hello": hello, "max_age": max_age, "forward_delay": fwd},
        "topology_changes": bridge.topology_changes,
        "last_topology_change": (
            None if last is None else round(max(switch.fabric.now - last, 0.0), 1)
        ),
        "ports": [
            {"id": pid, "name": p.name, **(stp_port_doc(switch, pid) or {})}
            for pid, p in sorted(bridge.ports.items())
        ],
    }


def stp_lines(doc: Mapping[str, Any]) -> list[str]:
    if not doc["stp"]:
        return ["spanning tree off (fstp/setfstp 1 turns it on)"]
    root = "this switch" if doc["is_root"] else f"via port {doc['root_port']}"
    last = doc["last_topology_change"]
    timers = doc["timers"]
    lines = [
        f"bridge {doc['bridge']}",
        f"root   {doc['root']} ({root}), cost {doc['root_cost']}",
        f"timers hello {timers['hello']:g} s, max age {timers['max_age']:g} s, "
        f"forward delay {timers['forward_delay']:g} s",
        f"topology changes {doc['topology_changes']}"
        + ("" if last is None else f", last {format_duration(last)} ago"),
        "PORT NAME                 ROLE        STATE       PROTO EDGE PRIO   COST",
    ]
    for p in doc["ports"]:
        lines.append(
            f"{p['id']:>4} {p['name'][:20]:<20} {p['role']:<11} {p['state']:<11} "
            f"{p['protocol']:<5} {'yes' if p['edge'] else 'no':<4} {p['priority']:>4} "
            f"{p['cost']:>6}"
        )
    return lines


def ports_doc(switch: ManagedSwitch, only: int | None = None) -> Doc:
    ports = switch.fabric.ports
    ids = sorted(ports) if only is None else [only]
    return {"ports": [port_doc(switch, ports[pid]) for pid in ids]}


def port_lines(doc: Mapping[str, Any]) -> list[str]:
    if not doc["ports"]:
        return ["no ports attached"]
    lines = []
    for port in doc["ports"]:
        lines.append(f"Port {port['id']:04d} {port['kind']:<6} {port['name']}")
        peer = port["peer"]
        if peer is not None:
            lines.append(f" peer pid={peer['pid']} uid={peer['uid']} gid={peer['gid']}")
        if port["description"]:
            lines.append(f" description {port['description']!r}")
        if port.get("socket"):
            lines.append(f" data socket {port['socket']}")
        link = port.get("link")
        if link is not None:
            lines.append(link_line(link))
        lines.append(f" MACs {port['macs']}")
        vlans = port.get("vlans")
        if vlans is not None and (vlans["untagged"] != DEFAULT_VLAN or vlans["tagged"]):
            lines.append(f" VLAN {describe_vlans(vlans)}")
        for vtep, macs in (port.get("vteps") or {}).items():
            lines.append(f" VTEP {vtep}: {len(macs)} MAC(s)")
            lines.extend(f"  {' '.join(macs[i : i + 4])}" for i in range(0, len(macs), 4))
        stp = port.get("stp")
        if stp is not None:
            lines.append(
                f" stp {stp['role']} {stp['state']} ({stp['protocol']}"
                f"{', edge' if stp['edge'] else ''}), priority {stp['priority']},"
                f" cost {stp['cost']}"
            )
        if port.get("storm_limit"):
            lines.append(f" storm limit {port['storm_limit']} flooded frames/s")
        queue = port["queue"]
        lines.append(
            f" queue {queue['depth']}/{queue['limit']} frames waiting (high {queue['high']}),"
            f" paused {port['paused']}, stalls {port['stalls']}"
        )
        impair = port.get("impair")
        if impair is not None:
            for direction in ("in", "out"):
                side = impair[direction]
                if side is not None:
                    lines.append(f" impair {direction}: {side['text']} (seed {side['seed']})")
        lines.extend(_traffic_lines(port))
    return lines


def link_line(link: Mapping[str, Any]) -> str:
    """`` link tcp:10.0.0.2:5555 connected (10.0.0.2:5555, 1m02s), 3 reconnection(s)``."""
    state = link["state"]
    if link["connected_for"] is not None:
        state += f" ({link['peer']}, {format_duration(link['connected_for'])})"
    elif link["last_error"]:
        state += f" (last: {link['last_error']})"
    return f" link {link['target']} {state}, {link['reconnections']} reconnection(s)"


def impair_doc(switch: ManagedSwitch, port: FabricPort) -> Doc:
    """``port/impair N``: the port's impairment per direction (None where there is none)."""
    doc = switch.impair.doc(port) or {"in": None, "out": None}
    return {"id": port.id, "name": port.name, **doc}


def impair_lines(doc: Mapping[str, Any]) -> list[str]:
    lines = [f"port {doc['id']} ({doc['name']})"]
    for direction in ("in", "out"):
        side = doc[direction]
        label = f" {direction + ':':<4} "
        if side is None:
            lines.append(f"{label}none")
            continue
        lines.append(f"{label}{side['text']}; seed {side['seed']}")
        dropped, events = side["dropped"], side["events"]
        lines.append(
            f"      queued {side['queued']}; dropped: loss {dropped['loss']}, queue full "
            f"{dropped['full']}; {format_counts(events)}"
        )
    return lines


# --- the MAC table --------------------------------------------------------------------------


def mac_entry_doc(key: bytes, port: int, age: float) -> Doc:
    """One MAC table entry; ``vlan`` is None while VLANs are off (``key`` is the MAC alone)."""
    mac, vlan = split_key(key)
    return {"mac": format_mac(mac), "vlan": vlan, "port": port, "age": round(max(age, 0.0), 1)}


def hash_doc(switch: ManagedSwitch) -> Doc:
    fabric = switch.fabric
    entries = sorted(fabric.table.entries(fabric.now), key=lambda e: (e.port, e.mac))
    return {"entries": [mac_entry_doc(e.mac, e.port, e.age) for e in entries]}


def hash_lines(doc: Mapping[str, Any]) -> list[str]:
    entries = doc["entries"]
    if not any(e.get("vlan") is not None for e in entries):
        lines = ["MAC                PORT     AGE"]
        lines += [f"{e['mac']}  {e['port']:>4}  {e['age']:>6.1f}" for e in entries]
        return lines
    lines = ["MAC                VLAN  PORT     AGE"]
    lines += [
        f"{e['mac']}  {e['vlan'] or '-':>4}  {e['port']:>4}  {e['age']:>6.1f}" for e in entries
    ]
    return lines


# --- VLANs ------------------------------------------------------------------------------------


def describe_vlans(vlans: Mapping[str, Any]) -> str:
    """A membership document as text: ``untagged 10, tagged 20 30``."""
    text = f"untagged {vlans['untagged']}"
    if vlans["tagged"]:
        text += ", tagged " + " ".join(map(str, vlans["tagged"]))
    return text


def port_vlans_doc(switch: ManagedSwitch, port_id: int) -> Doc:
    """A port's VLANs, the answer of the commands that change them."""
    return {"id": port_id, **switch.fabric.vlans.membership(port_id).doc()}


def vlans_doc(switch: ManagedSwitch, only: int | None = None) -> Doc:
    """``vlan/print [VLAN]``: whether VLANs are on, and each VLAN's ports and control sockets."""
    table = switch.fabric.vlans
    names = {pid: port.name for pid, port in switch.fabric.ports.items()}
    vlans = []
    for vid in sorted(table.vlans) if only is None else [only]:
        untagged, tagged = table.ports_in(vid)
        sockets = [
            {"path": path, "tagged": vid != member.untagged}
            for path, member in table.bound.items()
            if vid in member.vlans()
        ]
        vlans.append(
            {
                "id": vid,
                "default": vid == DEFAULT_VLAN,
                "untagged": [{"id": p, "name": names.get(p, "")} for p in untagged],
                "tagged": [{"id": p, "name": names.get(p, "")} for p in tagged],
                "control_sockets": sockets,
            }
        )
    return {"active": table.active, "vlans": vlans}


def vlan_lines(doc: Mapping[str, Any]) -> list[str]:
    """vde_switch's layout (``VLAN 0010``, `` -- Port 0003 ...``), with each port's tagging."""
    lines = []
    if not doc["active"]:
        lines.append("VLANs off: only the default VLAN 1 exists; tags pass through untouched")
    for vlan in doc["vlans"]:
        lines.append(f"VLAN {vlan['id']:04d}" + (" (default)" if vlan["default"] else ""))
        members = [(p, "untagged") for p in vlan["untagged"]]
        members += [(p, "tagged") for p in vlan["tagged"]]
        for port, how in sorted(members, key=lambda m: m[0]["id"]):
            lines.append(f" -- Port {port['id']:04d} {how:<8} {port['name']}")
        for sock in vlan["control_sockets"]:
            how = "tagged" if sock["tagged"] else "untagged"
            lines.append(f" -- control socket {sock['path']} ({how})")
    return lines


def hash_info_doc(switch: ManagedSwitch) -> Doc:
    fabric = switch.fabric
    table = fabric.table
    return {
        "entries": len(table),
        "max_entries": table.max_entries,
        "max_per_port": table.max_per_port,
        "aging": table.aging,
        "hold_down": table.hold_down,
        "events": {
            name: fabric.events.get(name, 0)
            for name in (
                counters.MAC_EVICTED,
                counters.MAC_MOVED,
                counters.MAC_MOVE_HELD,
                counters.MAC_EXPIRED,
            )
        },
    }


def hash_info_lines(doc: Mapping[str, Any]) -> list[str]:
    per_port = doc["max_per_port"]
    return [
        f"entries {doc['entries']} of at most {doc['max_entries']}"
        + ("" if per_port is None else f", {per_port} per port"),
        f"expire {doc['aging']:g} s",
        f"move hold-down {doc['hold_down']:g} s",
        f"events: {format_counts(doc['events'])}",
    ]


# --- the switch -----------------------------------------------------------------------------


def totals_doc(switch: ManagedSwitch) -> Doc:
    """Switch-wide traffic and drops: every port, those that have left, and the shared socket."""
    total = PortStats()
    total.add(switch.fabric.departed)
    for port in switch.fabric.ports.values():
        total.add(port.stats)
    unknown_senders = switch.unknown_senders()
    if unknown_senders:
        total.drops[counters.UNKNOWN_SENDER] += unknown_senders
    return _traffic(total)


def capture_doc(switch: ManagedSwitch) -> Doc:
    control = switch.capture
    last = control.last
    doc: dict[str, Any] = {
        "running": control.current is not None,
        **(last.info() if last is not None else {"file": None}),
    }
    live = switch.live_captures.running
    if live:  # pcap/stream sessions
        doc["live"] = [capture.info() for capture in live]
    return doc


def capture_lines(doc: Mapping[str, Any]) -> list[str]:
    if doc["file"] is None:
        return ["capture off", *live_capture_lines(doc)]
    state = "capturing" if doc["running"] else "capture stopped"
    which = "every port" if doc["port"] is None else f"port {doc['port']}"
    lines = [
        f"{state}: {which} to {doc['file']}",
        f"frames {doc['captured']} captured, {doc['written']} written, "
        f"{doc['dropped']} dropped (writer behind); {doc['bytes']} bytes",
    ]
    if doc["error"]:
        lines.append(f"error: {doc['error']}")
    return lines + live_capture_lines(doc)


def live_capture_lines(doc: Mapping[str, Any]) -> list[str]:
    """The live captures (``pcap/stream``) of ``pcap/showinfo``."""
    return [
        f"live capture of {'every port' if live['port'] is None else 'port ' + str(live['port'])}:"
        f" {live['sent']} sent, {live['dropped']} dropped (reader behind)"
        for live in doc.get("live", ())
    ]


def info_doc(switch: ManagedSwitch) -> Doc:
    fabric = switch.fabric
    events = switch.events()
    sockets = {
        "control": switch.control_path,
        "data": switch.data_path,
        "mgmt": switch.mgmt_path,
    }
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime": round(time.time() - switch.started_at, 1),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(switch.started_at)),
        "restarts": getattr(switch, "restarts", 0),
        "mode": "hub" if fabric.hub else "switch",
        "sockets": sockets,
        "perm": {what: _perm(path) for what, path in sockets.items() if path is not None},
        "streams": [
            {"name": name, "perm": _perm(name[5:]) if name.startswith("unix:") else None}
            for name in switch.stream_names
        ],
        "ports": len(fabric.ports),
        "macs": len(fabric.table),
        "vlans": {"active": fabric.vlans.active, "ids": sorted(fabric.vlans.vlans)},
        "max_frame": fabric.max_frame,
        "queues": {
            "port_limit": fabric.port_queue,
            "memory_limit": fabric.queue_budget.limit,
            "memory_used": fabric.queue_budget.used,
        },
        "capture": capture_doc(switch),
        "stp": _stp_summary(switch),
        "totals": totals_doc(switch),
        "events": dict(sorted(events.items())),
    }


def _stp_summary(switch: ManagedSwitch) -> Doc | None:
    bridge = switch.guard.stp
    if bridge is None:
        return None
    return {
        "bridge": format_bridge_id(bridge.id),
        "root": format_bridge_id(bridge.root),
        "is_root": bridge.is_root,
        "topology_changes": bridge.topology_changes,
    }


def shutdown_lines(doc: Mapping[str, Any]) -> list[str]:
    return [f"shutting down: pid {doc['pid']} stops and removes its socket files"]


def restart_lines(doc: Mapping[str, Any]) -> list[str]:
    return [f"restarted: pid {doc['old_pid']} handed the switch over to pid {doc['pid']}"]


def info_lines(doc: Mapping[str, Any]) -> list[str]:
    lines = [
        f"umlswitch V.{doc['version']}",
        f"pid {doc['pid']} uptime {format_duration(doc['uptime'])}, running since "
        f"{doc['started_at']}, {doc['restarts']} restart(s)",
        f"mode {doc['mode']}, {doc['ports']} port(s), {doc['macs']} MAC(s), "
        f"max frame {doc['max_frame']} bytes",
    ]
    vlans = doc.get("vlans")
    if vlans is not None and vlans["active"]:
        lines.append("VLANs " + " ".join(map(str, vlans["ids"])))
    for what, path in doc["sockets"].items():
        if path is not None:
            perm = doc["perm"].get(what)
            lines.append(f"{what:<7} {path}" + (f" perm {perm}" if perm else ""))
    for stream in doc["streams"]:
        perm = stream["perm"]
        lines.append(f"stream  {stream['name']}" + (f" perm {perm}" if perm else ""))
    queues = doc["queues"]
    lines.append(
        f"queues  {queues['port_limit']} frames per port, {queues['memory_limit'] >> 20} MiB in "
        f"all, {queues['memory_used']} bytes waiting"
    )
    lines += capture_lines(doc["capture"])
    stp = doc.get("stp")
    if stp is not None:
        root = "this switch" if stp["is_root"] else stp["root"]
        lines.append(
            f"stp     bridge {stp['bridge']}, root {root}, "
            f"{stp['topology_changes']} topology change(s)"
        )
    lines.append("totals:")
    lines += _traffic_lines(doc["totals"])
    lines.append(f"events: {format_counts(doc['events'])}")
    return lines


def help_doc(entries: Iterable[tuple[str, str, str]]) -> Doc:
    return {"commands": [{"command": c, "syntax": s, "help": h} for c, s, h in entries]}


def help_lines(doc: Mapping[str, Any]) -> list[str]:
    """vde_switch's layout: vdeterm takes the first word after the dashes for completion."""
    lines = [
        f"{'COMMAND PATH':<18} {'SYNTAX':<15} HELP",
        f"{'------------':<18} {'--------------':<15} ------------",
    ]
    menus: dict[str, list[Mapping[str, Any]]] = {}  # each menu once, in order of first command
    for entry in doc["commands"]:
        name = entry["command"]
        menus.setdefault(name.partition("/")[0] if "/" in name else "", []).append(entry)
    for group, entries in menus.items():
        if group:  # vde_switch's menu lines (vdeterm drops them)
            lines.append(f"{group:<18} {'============':<15} {group.upper()} MENU")
        lines += [f"{e['command']:<18} {e['syntax']:<15} {e['help']}" for e in entries]
    return lines
