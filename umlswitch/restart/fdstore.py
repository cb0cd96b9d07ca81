"""systemd's file descriptor store: guests survive a crash of the switch.

When the unit has ``FileDescriptorStoreMax=`` (systemd then sets ``$FDSTORE``) and
``NOTIFY_SOCKET`` is set, the switch hands systemd a copy of its listening sockets and of every
guest's descriptors (``FDSTORE=1`` with ``FDNAME=``, ``sd_pid_notify_with_fds(3)``), and takes
them back out when a guest leaves (``FDSTOREREMOVE=1``). ``FdStore.run`` keeps the store in step
with the attached ports once a second. After a crash (SIGKILL), systemd starts the switch again
and passes the stored descriptors with ``LISTEN_FDS`` and their names in ``LISTEN_FDNAMES``;
``Recovery`` serves the listeners again and re-attaches every guest with the port number it had
(the MAC table is learned anew, the rest of the state was the dead process's).

Names (no ``:``, as systemd wants): ``umlswitch.control``, ``umlswitch.mgmt``,
``umlswitch.data``; ``umlswitch.port.N.data`` and ``umlswitch.port.N.ctl`` for the control
socket's client N; ``umlswitch.port.N.stream`` for stream connection N.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING

import trio

from umlswitch.dataplane import parked
from umlswitch.listener import PeerCred, peer_cred
from umlswitch.ports.stream.port import StreamPort
from umlswitch.ports.unix.clients import ClientPort
from umlswitch.restart.state import Runner, _client_runner, _stream_runner
from umlswitch.systemd import Notifier

if TYPE_CHECKING:
    from umlswitch.binding import BoundSockets
    from umlswitch.daemon import Switch

log = logging.getLogger("umlswitch.restart")

PREFIX = "umlswitch."
SYNC_INTERVAL = 1.0


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether systemd keeps an fd store for us (``$FDSTORE``, systemd 254 and later)."""
    value = (os.environ if environ is None else environ).get("FDSTORE", "")
    return value.isdigit() and int(value) > 0


class FdStore:
    """Keeps systemd's fd store in step with the switch's listeners and ports."""

    def __init__(self, notify: Notifier) -> None:
        self.notify = notify
        self.stored: dict[str, int] = {}  # name -> the fd number stored under it

    def store(self, name: str, fd: int) -> None:
        if self.stored.get(name) == fd:
            return
        if name in self.stored:
            self.remove(name)
        message = f"FDSTORE=1\nFDNAME={name}".encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.notify.address)
                socket.send_fds(sock, [message], [fd])
        except OSError as exc:
            log.warning("cannot store %s in systemd's fd store: %s", name, exc.strerror or exc)
            return
        self.stored[name] = fd

    def remove(self, name: str) -> None:
        self.stored.pop(name, None)
        self.notify.send("FDSTOREREMOVE=1", f"FDNAME={name}")

    def listeners(self, sockets: BoundSockets) -> None:
        for name, sock in (("control", sockets.control), ("mgmt", sockets.mgmt)):
            if sock is not None:
                self.store(PREFIX + name, sock.fileno())
        if sockets.data is not None:
            self.store(PREFIX + "data", sockets.data.fileno())

    def sync(self, switch: Switch) -> None:
        """Store the ports attached since the last call; remove those gone."""
        wanted: dict[str, int] = {}
        for port in list(switch.fabric.ports.values()):
            if isinstance(port, ClientPort):
                conn = switch.control.connections.get(port.id)
                if conn is not None and port.sock.fileno() >= 0:
                    wanted[f"{PREFIX}port.{port.id}.data"] = port.sock.fileno()
                    wanted[f"{PREFIX}port.{port.id}.ctl"] = conn.fileno()
            elif isinstance(port, StreamPort) and port.sock.fileno() >= 0:
                wanted[f"{PREFIX}port.{port.id}.stream"] = port.sock.fileno()
        for name in [n for n in self.stored if n.startswith(PREFIX + "port.")]:
            if name not in wanted:
                self.remove(name)
        for name, fd in wanted.items():
            self.store(name, fd)

    async def run(self, switch: Switch, sockets: BoundSockets) -> None:
        self.listeners(sockets)
        while True:
            self.sync(switch)
            await trio.sleep(SYNC_INTERVAL)


def split(
    sockets: list[socket.socket], names: str
) -> tuple[list[socket.socket], dict[str, socket.socket]]:
    """The passed sockets: (socket activation's, ours from the fd store by name)."""
    labels = names.split(":") if names else []
    activation: list[socket.socket] = []
    stored: dict[str, socket.socket] = {}
    for index, sock in enumerate(sockets):
        label = labels[index] if index < len(labels) else ""
        if label.startswith(PREFIX):
            stored[label] = sock
        else:
            activation.append(sock)
    return activation, stored


class Recovery:
    """Re-attaches the guests systemd kept for us; serves like a handover (``daemon.serve``)."""

    def __init__(self, stored: dict[str, socket.socket]) -> None:
        self.stored = stored
        self.done = False
        self.restarts = 0
        self.started_at: float | None = None
        self.created: dict[str, int] = {}

    def listeners(self) -> list[socket.socket]:
        """The stored listening sockets, as socket activation would pass them."""
        return [
            self.stored.pop(PREFIX + name)
            for name in ("control", "mgmt", "data")
            if PREFIX + name in self.stored
        ]

    async def take_over(self, switch: Switch, sockets: BoundSockets) -> list[Runner]:
        from umlswitch.daemon import _attach_static_ports

        for path in (sockets.control_path, sockets.mgmt_path, sockets.data_path):
            with contextlib.suppress(OSError, TypeError):
                self.created[str(path)] = os.lstat(str(path)).st_ino
        runners: list[Runner] = []
        numbers = sorted({int(n.split(".")[2]) for n in self.stored if n.count(".") == 3})
        async with parked(switch.fabric):  # the fabric's one writer while guests come back
            for number in numbers:
                runner = self._port(switch, number)
                if runner is not None:
                    runners.append(runner)
        for sock in self.stored.values():  # half a client: its other half is gone
            sock.close()
        # the command line's ports after the guests, whose numbers are taken already
        await _attach_static_ports(
            switch.config, sockets.static_ports, switch.attachments, switch.impair
        )
        log.info("fd store: re-attached %d port(s) kept by systemd", len(runners))
        return runners

    def _port(self, switch: Switch, number: int) -> Runner | None:
        base = f"{PREFIX}port.{number}."
        data, ctl = self.stored.pop(base + "data", None), self.stored.pop(base + "ctl", None)
        stream = self.stored.pop(base + "stream", None)
        if data is not None and ctl is not None:
            data.setblocking(False)
            cred = _cred(ctl)
            port = ClientPort(number, f"unix:{number} pid={cred.pid}", data, None)
            port.peer = cred
            switch.attachments.attach_now(port)
            return _client_runner(switch, port, trio.socket.from_stdlib_socket(ctl))
        if stream is not None:
            stream.setblocking(False)
            unix = stream.family == socket.AF_UNIX
            who = _cred(stream) if unix else None
            if who is not None:
                peer = str(who)
            else:
                host, tcp_port = stream.getpeername()[:2]
                peer = f"{host}:{tcp_port}"
            port2 = StreamPort(number, f"stream:{number} {peer}", stream, peer_cred=who)
            switch.attachments.attach_now(port2)
            return _stream_runner(switch, port2)
        for sock in (data, ctl):
            if sock is not None:
                sock.close()
        return None

    def running(self, sockets: BoundSockets) -> None:
        sockets.created.update(self.created)
        self.done = True


def _cred(sock: socket.socket) -> PeerCred:
    try:
        return peer_cred(sock)
    except OSError:
        return PeerCred(0, -1, -1)
