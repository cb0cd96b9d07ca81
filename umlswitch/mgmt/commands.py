"""The management commands: one table of name, syntax, help, handler and text renderer.

A handler gets the session and the arguments and returns a JSON document; ``execute`` turns it
into the text answer (the command's renderer gives the data lines; commands without one answer
with the status line only, as vde_switch's) or, for ``json COMMAND``, a one-line JSON data block.
Errors are ``CommandError(errno, detail)``: ``1022 Invalid argument: ...``. Commands that change
the switch are logged with the client's pid and uid.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from umlswitch import dataplane, guard_control
from umlswitch.capture import CaptureBusy, open_capture_file
from umlswitch.fabric.frame import format_mac, parse_mac
from umlswitch.fabric.impair import parse_impairment
from umlswitch.fabric.stp import MAX_PATH_COST, Bridge
from umlswitch.fabric.vlan import VlanError, parse_vid, split_key
from umlswitch.listener import PeerCred
from umlswitch.mgmt import views
from umlswitch.mgmt.protocol import Invocation, Reply
from umlswitch.mgmt.restartcmd import restart_command
from umlswitch.mgmt.views import Doc
from umlswitch.restart.handover import RestartFailed

if TYPE_CHECKING:
    from umlswitch.mgmt.managed import ManagedSwitch

log = logging.getLogger("umlswitch.mgmt")

REMOVE_TIMEOUT = 1.0  # how long port/remove waits for the port to be gone before it answers


class CommandError(Exception):
    """A command failed; ``errno`` picks the status line (1000 + errno)."""

    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(detail)
        self.errno = code
        self.detail = detail


@dataclass
class Session:
    """One management connection: the switch, who is connected, and how the session ends."""

    switch: ManagedSwitch
    peer: PeerCred
    ended: bool = False  # logout or shutdown: answer 9999 END OF SESSION and close
    shutdown: bool = False  # stop the switch once the answer is sent
    # pcap/stream, events/stream (mgmt/observe.py): after the answer the session is this stream
    stream: Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]] | None = None
    json: bool = False  # the command running now answers in JSON
    # write an answer now, without a checkpoint (restart: the process exits right after)
    send_now: Callable[[str], None] | None = None


Handler = Callable[[Session, Sequence[str]], Awaitable[Doc]]
Renderer = Callable[[Doc], list[str]]


@dataclass(frozen=True)
class Command:
    """A command; its arguments' count is read from ``syntax`` (``[X]`` optional, ``...`` any)."""

    name: str
    syntax: str
    help: str
    handler: Handler
    render: Renderer | None = None  # None: the text answer has no data block
    changes: bool = False  # changes the switch: logged
    # runs while the data plane waits between two rounds (False: a command that waits for long,
    # as restart does, and pauses the data plane itself where it must)
    barrier: bool = True

    def check_arity(self, args: Sequence[str]) -> None:
        """CommandError ``usage: NAME SYNTAX`` unless ``args`` fit the syntax's word count."""
        words = self.syntax.split()
        low = sum(not word.startswith("[") for word in words)
        high = len(args) if "..." in self.syntax else len(words)
        if not low <= len(args) <= high:
            raise CommandError(errno.EINVAL, f"usage: {self.name} {self.syntax}".rstrip())


COMMANDS: dict[str, Command] = {}


def command(
    name: str,
    syntax: str,
    help: str,
    *,
    render: Renderer | None = None,
    changes: bool = False,
    barrier: bool = True,
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(name, syntax, help, handler, render, changes, barrier)
        return handler

    return register


async def execute(session: Session, invocation: Invocation) -> Reply:
    """Run one command line and return its answer (never raises for a bad command)."""
    name = invocation.name
    cmd = COMMANDS.get(name)
    try:
        if name in ("", "json"):  # `json` alone: the invocation had no command after it
            raise CommandError(errno.EINVAL, "json needs a command, e.g. 'json port/print'")
        if cmd is None:
            raise CommandError(errno.ENOSYS, f"unknown command {name!r}; try 'help'")
        session.json = invocation.json
        cmd.check_arity(invocation.args)
        doc = await _run(session, cmd, invocation.args)
    except Exception as exc:
        if not isinstance(exc, CommandError):  # a bug: it must not end the switch
            log.exception("management client %s: %s: internal error", session.peer, invocation)
            exc = CommandError(
                errno.EIO,
                f"internal error ({type(exc).__name__}: {exc}); the switch keeps running, "
                "its log has the details",
            )
        if cmd is not None and cmd.changes:
            log.info("management client %s: %s: failed: %s", session.peer, invocation, exc)
        if not invocation.json:
            return Reply.error(exc.errno, exc.detail)
        failed = Reply.error(exc.errno, exc.detail)
        error = {"error": {"code": failed.code, "message": failed.message}}
        return Reply.error(exc.errno, exc.detail, [json.dumps(error)])
    if cmd.changes:
        log.info("management client %s: %s", session.peer, invocation)
    lines: list[str] | None
    if invocation.json:
        lines = [json.dumps(doc)]
    else:
        lines = None if cmd.render is None else cmd.render(doc)
    return Reply.end_of_session(lines) if session.ended else Reply.success(lines)


async def _run(session: Session, cmd: Command, args: Sequence[str]) -> Doc:
    """A command runs while the data plane waits between two rounds: one that changes the
    switch is then the fabric's only writer, one that reads sees its tables whole (the thread
    adds and removes ports and MAC entries; a dict must not change while it is read)."""
    plane = dataplane.current(session.switch.fabric)
    if plane is None or not cmd.barrier:
        return await cmd.handler(session, args)
    async with plane.barrier():
        return await cmd.handler(session, args)


# --- argument helpers -----------------------------------------------------------------------


def _number(text: str, what: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise CommandError(errno.EINVAL, f"{what} must be a number, not {text!r}") from None
    if value < 0:
        raise CommandError(errno.EINVAL, f"{what} must not be negative")
    return value


def _vlan(text: str) -> int:
    try:
        return parse_vid(text)
    except VlanError as exc:
        raise CommandError(exc.errno, str(exc)) from None


def _port(session: Session, text: str) -> int:
    port = _number(text, "port")
    if port not in session.switch.fabric.ports:
        raise CommandError(errno.ENXIO, f"no port {port}")
    return port


# --- general --------------------------------------------------------------------------------


@command(
    "help", "[PREFIX]", "list the commands (those starting with PREFIX)", render=views.help_lines
)
async def _help(session: Session, args: Sequence[str]) -> Doc:
    prefix = args[0] if args else ""
    entries = [(c.name, c.syntax, c.help) for c in COMMANDS.values() if c.name.startswith(prefix)]
    return views.help_doc(entries)


@command("json", "COMMAND", "answer COMMAND with one JSON document")
async def _json(session: Session, args: Sequence[str]) -> Doc:
    raise CommandError(errno.EINVAL, "json needs a command, e.g. 'json port/print'")


@command("logout", "", "end this management session")
async def _logout(session: Session, args: Sequence[str]) -> Doc:
    session.ended = True
    return {}


@command("shutdown", "", "stop the switch", changes=True, render=views.shutdown_lines)
async def _shutdown(session: Session, args: Sequence[str]) -> Doc:
    session.ended = session.shutdown = True
    return {"shutdown": True, "pid": os.getpid()}


@command(
    "restart",
    "",
    "hand the switch over to a new process (same command line), guests stay attached",
    changes=True,
    render=views.restart_lines,
    barrier=False,
)
async def _restart(session: Session, args: Sequence[str]) -> Doc:
    try:
        return await restart_command(session)
    except RestartFailed as exc:
        raise CommandError(
            errno.ECANCELED, f"restart failed: {exc}; this switch (pid {os.getpid()}) serves on"
        ) from None


@command(
    "showinfo",
    "",
    "version, pid, uptime, mode, sockets, capture, totals",
    render=views.info_lines,
)
async def _showinfo(session: Session, args: Sequence[str]) -> Doc:
    return views.info_doc(session.switch)


# --- ports ----------------------------------------------------------------------------------


@command("port/print", "[N]", "ports: peer, MACs, counters, drops", render=views.port_lines)
async def _port_print(session: Session, args: Sequence[str]) -> Doc:
    only = _port(session, args[0]) if args else None
    return views.ports_doc(session.switch, only)


@command("port/remove", "N", "detach port N (closes its connection)", changes=True)
async def _port_remove(session: Session, args: Sequence[str]) -> Doc:
    port = _port(session, args[0])
    detached = session.switch.remove_port(port)
    if detached is None:
        raise CommandError(errno.EBUSY, f"port {port} cannot be removed")
    # The port's own task detaches it; wait for that so the next command sees it gone.
    with trio.move_on_after(REMOVE_TIMEOUT):
        await detached.wait()
    if not detached.is_set():
        raise CommandError(
            errno.ETIMEDOUT,
            f"port {port} is leaving but has not left within {REMOVE_TIMEOUT:g} s "
            "(port/print shows it until it has)",
        )
    return {"removed": port}


@command("port/resetcounter", "[N]", "zero port N's counters (all and totals)", changes=True)
async def _port_resetcounter(session: Session, args: Sequence[str]) -> Doc:
    fabric = session.switch.fabric
    if args:
        port = _port(session, args[0])
        fabric.ports[port].stats.reset()
        return {"reset": [port]}
    for port_obj in fabric.ports.values():
        port_obj.stats.reset()
    fabric.departed.reset()
    session.switch.reset_counters()
    return {"reset": sorted(fabric.ports)}


@command("port/sethub", "0/1", "1=hub 0=switch", changes=True)
async def _port_sethub(session: Session, args: Sequence[str]) -> Doc:
    if args[0] not in ("0", "1"):
        raise CommandError(errno.EINVAL, "port/sethub takes 1 (hub) or 0 (switch)")
    session.switch.fabric.set_hub(args[0] == "1")
    return {"mode": "hub" if session.switch.fabric.hub else "switch"}


@command("port/setvlan", "PORT VLAN", "PORT's untagged (access) VLAN", changes=True)
async def _port_setvlan(session: Session, args: Sequence[str]) -> Doc:
    port, vlan = _port(session, args[0]), _vlan(args[1])
    with _vlan_errors():
        session.switch.fabric.vlans.set_untagged(port, vlan)
    return views.port_vlans_doc(session.switch, port)


@command(
    "port/impair",
    "N [in|out|both] [K=V...|off]",
    "add loss, delay, rate... to N",
    render=views.impair_lines,
    changes=True,
)
async def _port_impair(session: Session, args: Sequence[str]) -> Doc:
    syntax = f"port/impair {COMMANDS['port/impair'].syntax}"
    port = session.switch.fabric.ports[_port(session, args[0])]
    words = list(args[1:])
    if words:
        direction = words.pop(0) if words[0] in ("in", "out", "both") else "both"
        if words == ["off"]:
            spec = None
        elif not words or "off" in words:
            raise CommandError(
                errno.EINVAL, f"give KEY=VALUE settings (e.g. loss=5 delay=40ms) or off: {syntax}"
            )
        else:
            try:
                spec = parse_impairment(words)
            except ValueError as exc:
                raise CommandError(errno.EINVAL, str(exc)) from None
        session.switch.impair.set(port, direction, spec)
    return views.impair_doc(session.switch, port)


# --- the MAC table --------------------------------------------------------------------------


@command("hash/print", "", "the MAC table: address, VLAN, port, age", render=views.hash_lines)
async def _hash_print(session: Session, args: Sequence[str]) -> Doc:
    return views.hash_doc(session.switch)


@command("hash/find", "MAC", "the port MAC was learned on", render=views.hash_lines)
async def _hash_find(session: Session, args: Sequence[str]) -> Doc:
    try:
        mac = parse_mac(args[0])
    except ValueError:
        raise CommandError(errno.EINVAL, f"not a MAC address: {args[0]!r}") from None
    fabric = session.switch.fabric
    found = [
        views.mac_entry_doc(entry.mac, entry.port, entry.age)
        for entry in fabric.table.entries(fabric.now)
        if split_key(entry.mac)[0] == mac
    ]
    if not found:
        raise CommandError(errno.ENODEV, f"{format_mac(mac)} is not in the table")
    return {"entries": sorted(found, key=lambda e: (e["vlan"] or 0, e["port"]))}


@command("hash/flush", "[PORT]", "forget every MAC (learned on PORT)", changes=True)
async def _hash_flush(session: Session, args: Sequence[str]) -> Doc:
    table = session.switch.fabric.table
    flushed = table.forget_port(_port(session, args[0])) if args else table.flush()
    return {"flushed": flushed}


@command("hash/showinfo", "", "MAC table size, bounds, expiry", render=views.hash_info_lines)
async def _hash_showinfo(session: Session, args: Sequence[str]) -> Doc:
    return views.hash_info_doc(session.switch)


@command("hash/setexpire", "N", "forget MACs unseen for N seconds", changes=True)
async def _hash_setexpire(session: Session, args: Sequence[str]) -> Doc:
    seconds = _number(args[0], "expire time")
    if seconds < 1:
        raise CommandError(errno.EINVAL, "expire time must be at least 1 second")
    session.switch.fabric.table.aging = float(seconds)
    return {"aging": float(seconds)}


# --- VLANs (vde_switch's names and argument order) -------------------------------------------


@contextlib.contextmanager
def _vlan_errors() -> Iterator[None]:
    """A VlanError of the VLAN table as the command's error (vde_switch's errnos)."""
    try:
        yield
    except VlanError as exc:
        raise CommandError(exc.errno, str(exc)) from None


@command("vlan/create", "VLAN", "create VLAN N (1 to 4094)", changes=True)
async def _vlan_create(session: Session, args: Sequence[str]) -> Doc:
    vlan = _vlan(args[0])
    with _vlan_errors():
        session.switch.fabric.vlans.create(vlan)
    return views.vlans_doc(session.switch, vlan)


@command("vlan/remove", "VLAN", "remove an unused VLAN", changes=True)
async def _vlan_remove(session: Session, args: Sequence[str]) -> Doc:
    vlan = _vlan(args[0])
    with _vlan_errors():
        session.switch.fabric.vlans.remove(vlan)
    return {"removed": vlan, "active": session.switch.fabric.vlans.active}


@command("vlan/addport", "VLAN PORT", "PORT carries VLAN tagged (trunk)", changes=True)
async def _vlan_addport(session: Session, args: Sequence[str]) -> Doc:
    vlan, port = _vlan(args[0]), _port(session, args[1])
    with _vlan_errors():
        session.switch.fabric.vlans.add_tagged(vlan, port)
    return views.port_vlans_doc(session.switch, port)


@command("vlan/delport", "VLAN PORT", "PORT stops carrying VLAN tagged", changes=True)
async def _vlan_delport(session: Session, args: Sequence[str]) -> Doc:
    vlan, port = _vlan(args[0]), _port(session, args[1])
    with _vlan_errors():
        session.switch.fabric.vlans.remove_tagged(vlan, port)
    return views.port_vlans_doc(session.switch, port)


@command("vlan/print", "[VLAN]", "VLANs and their ports", render=views.vlan_lines)
async def _vlan_print(session: Session, args: Sequence[str]) -> Doc:
    only = _vlan(args[0]) if args else None
    if only is not None and only not in session.switch.fabric.vlans.vlans:
        raise CommandError(errno.ENXIO, f"no VLAN {only}")
    return views.vlans_doc(session.switch, only)


# --- packet capture -------------------------------------------------------------------------


@command(
    "pcap/start",
    "FILE [PORT]",
    "capture frames (of PORT) to FILE",
    render=views.capture_lines,
    changes=True,
)
async def _pcap_start(session: Session, args: Sequence[str]) -> Doc:
    path = args[0]
    if not os.path.isabs(path):
        raise CommandError(
            errno.EINVAL, f"give an absolute path (the switch runs in '{os.getcwd()}')"
        )
    euid = os.geteuid()
    if session.peer.uid not in (0, euid):
        raise CommandError(
            errno.EACCES, f"only root or uid {euid} (the switch's user) may write capture files"
        )
    port = _port(session, args[1]) if len(args) > 1 else None
    control = session.switch.capture
    if control.current is not None:
        raise CommandError(errno.EBUSY, f"already capturing to {control.current.path}")
    try:
        file = await trio.to_thread.run_sync(open_capture_file, path)
    except OSError as exc:
        raise CommandError(exc.errno or errno.EIO, f"cannot write '{path}'") from None
    try:
        capture = control.start(file, path, port)
    except CaptureBusy as exc:  # another session started one while the file was opened
        file.close()
        raise CommandError(errno.EBUSY, str(exc)) from None
    return {"running": True, **capture.info()}


@command(
    "pcap/stop",
    "",
    "stop the capture; the file is complete",
    render=views.capture_lines,
    changes=True,
)
async def _pcap_stop(session: Session, args: Sequence[str]) -> Doc:
    capture = await session.switch.capture.stop()
    if capture is None:
        raise CommandError(errno.EINVAL, "no capture is running")
    return {"running": False, **capture.info()}


@command("pcap/showinfo", "", "the capture: file, port, frames", render=views.capture_lines)
async def _pcap_showinfo(session: Session, args: Sequence[str]) -> Doc:
    return views.capture_doc(session.switch)


# --- spanning tree and storm control ---------------------------------------------------------


def _bridge(session: Session) -> Bridge:
    bridge = session.switch.guard.stp
    if bridge is None:
        raise CommandError(errno.EINVAL, "the spanning tree is off (fstp/setfstp 1)")
    return bridge


def _ranged(text: str, what: str, low: int, high: int, step: int = 1) -> int:
    value = _number(text, what)
    if not low <= value <= high or value % step:
        steps = f" in steps of {step}" if step > 1 else ""
        raise CommandError(errno.EINVAL, f"{what} must be from {low} to {high}{steps}")
    return value


@command("fstp/print", "", "the spanning tree: root, roles, states", render=views.stp_lines)
async def _fstp_print(session: Session, args: Sequence[str]) -> Doc:
    return views.stp_doc(session.switch)


@command("fstp/setfstp", "0/1", "spanning tree 1=on 0=off", changes=True)
async def _fstp_setfstp(session: Session, args: Sequence[str]) -> Doc:
    if args[0] not in ("0", "1"):
        raise CommandError(errno.EINVAL, "fstp/setfstp takes 1 (on) or 0 (off)")
    guard = session.switch.guard
    if args[0] == "1" and guard.stp is None:
        guard.enable_stp(guard_control.new_bridge(session.switch.config))
    elif args[0] == "0":
        guard.disable_stp()
    return {"stp": guard.stp is not None}


@command("fstp/setpriority", "N", "bridge priority (0-65535)", changes=True)
async def _fstp_setpriority(session: Session, args: Sequence[str]) -> Doc:
    priority = _ranged(args[0], "bridge priority", 0, 65535)
    bridge = _bridge(session)
    bridge.set_priority(priority, session.switch.fabric.now)
    session.switch.guard.apply()
    return {"priority": priority}


@command("fstp/setportprio", "PORT N", "port priority (0-240, steps of 16)", changes=True)
async def _fstp_setportprio(session: Session, args: Sequence[str]) -> Doc:
    port = _port(session, args[0])
    priority = _ranged(args[1], "port priority", 0, 240, 16)
    _bridge(session).set_port(port, session.switch.fabric.now, priority=priority)
    session.switch.guard.apply()
    return {"port": port, "priority": priority}


@command("fstp/setcost", "PORT N", "path cost of PORT", changes=True)
async def _fstp_setcost(session: Session, args: Sequence[str]) -> Doc:
    port = _port(session, args[0])
    cost = _ranged(args[1], "path cost", 1, MAX_PATH_COST)
    _bridge(session).set_port(port, session.switch.fabric.now, cost=cost)
    session.switch.guard.apply()
    return {"port": port, "cost": cost}


@command("fstp/setedge", "PORT 0/1", "1=edge port (forwards at once)", changes=True)
async def _fstp_setedge(session: Session, args: Sequence[str]) -> Doc:
    port = _port(session, args[0])
    if args[1] not in ("0", "1"):
        raise CommandError(errno.EINVAL, "fstp/setedge takes 1 (edge) or 0 (not)")
    _bridge(session).set_edge(port, args[1] == "1", session.switch.fabric.now)
    session.switch.guard.apply()
    return {"port": port, "edge": args[1] == "1"}


@command(
    "port/setstormlimit",
    "PORT|all N",
    "flooded frames/s of PORT, 0=no limit",
    changes=True,
)
async def _port_setstormlimit(session: Session, args: Sequence[str]) -> Doc:
    port = None if args[0] == "all" else _port(session, args[0])
    limit = _ranged(args[1], "storm limit", 0, 10_000_000)
    session.switch.guard.set_storm_limit(port, limit)
    return {"port": port, "storm_limit": limit}


from umlswitch.mgmt import observe  # noqa: E402, F401  (its commands join the table)


def _group_menus() -> None:
    """Keep each menu's commands together in the table (``help`` lists them in this order)."""
    menus = list(dict.fromkeys(name.partition("/")[0] for name in COMMANDS))
    grouped = {
        name: cmd
        for menu in menus
        for name, cmd in COMMANDS.items()
        if name.partition("/")[0] == menu
    }
    COMMANDS.clear()
    COMMANDS.update(grouped)


_group_menus()
