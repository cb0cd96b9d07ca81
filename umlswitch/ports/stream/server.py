"""Stream listeners: every connection to a ``--stream`` socket becomes one port.

QEMU connects as a client (``-netdev stream,server=off,addr.type=unix|inet,...`` or the older
``-netdev socket,connect=HOST:PORT``) and, once connected, sends and receives length-prefixed
frames (``framing.py``); there is no handshake. So a connection is attached at once, named
``stream:N pid=P uid=U`` (unix: the peer's ``SO_PEERCRED``) or ``stream:N IP:PORT`` (TCP), and
detached when it ends, with its MAC entries forgotten. ``--max-ports`` bounds them together with
every other port: a connection beyond it is closed at once, counted (``port_limit``) and logged.

The unix listener is bound by the daemon like the control socket (stale-socket reclaim, created
with ``--mode``/``--group`` and never wider, removed on exit); the TCP one here
(``bind_tcp_listener``), on loopback unless the option names an address.
"""

from __future__ import annotations

import functools
import logging
import socket
from collections import Counter

import trio

from umlswitch import counters
from umlswitch.errors import StartupError, bind_hint
from umlswitch.fabric.fabric import Fabric
from umlswitch.fabric.vlan import DEFAULT_MEMBERSHIP, Membership
from umlswitch.listener import LISTEN_BACKLOG, PeerCred, peer_cred, serve_listener
from umlswitch.ports.attachments import Attachments
from umlswitch.ports.base import ratelog
from umlswitch.ports.stream.port import StreamPort
from umlswitch.ports.stream.spec import StreamSpec

log = logging.getLogger("umlswitch.stream")


def bind_tcp_listener(spec: StreamSpec) -> socket.socket:
    """A listening, non-blocking TCP socket for ``spec``, or StartupError saying what to do."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((spec.host, spec.port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        hint = bind_hint(exc, "TCP", spec.host, spec.port)
        raise StartupError(
            f"--stream {spec}: cannot listen on {spec.host}:{spec.port}: {exc.strerror}; {hint}"
        ) from None
    sock.setblocking(False)
    return sock


def listener_name(spec: StreamSpec, sock: socket.socket) -> str:
    """``unix:PATH`` or ``tcp:HOST:PORT`` with the port really bound (for ``tcp:...:0``)."""
    if spec.kind == "unix":
        return f"unix:{spec.path}"
    host, port = sock.getsockname()[:2]
    return f"tcp:{host}:{port}"


async def _run_until_closed(port: StreamPort, fabric: Fabric) -> str:
    await port.run(fabric)
    return "shutdown"


class StreamServer:
    """Accepts connections on one ``--stream`` listener and runs each as a port."""

    def __init__(
        self,
        listener: socket.socket,
        name: str,
        fabric: Fabric,
        *,
        max_ports: int,
        vlans: Membership = DEFAULT_MEMBERSHIP,
        attachments: Attachments | None = None,
    ) -> None:
        self.listener = trio.socket.from_stdlib_socket(listener)
        self.name = name  # unix:PATH or tcp:HOST:PORT
        self.fabric = fabric
        self.vlans = vlans  # every connection's port joins these
        self.max_ports = max_ports
        self.events: Counter[str] = Counter()
        # the switch's attached ports (shared with its other families), for remove and detach
        self.attachments = attachments if attachments is not None else Attachments(fabric)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_listener(
            self.listener, self._connection, f"stream listener {self.name}", task_status=task_status
        )

    async def _connection(self, conn: trio.socket.SocketType) -> None:
        sock = socket.socket(fileno=conn.detach())
        with sock:
            cred: PeerCred | None = None
            if sock.family == socket.AF_UNIX:
                try:
                    cred = peer_cred(sock)
                except OSError:
                    cred = PeerCred(0, -1, -1)
                peer = str(cred)
            else:
                try:
                    host, port = sock.getpeername()[:2]
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    return  # gone already
                peer = f"{host}:{port}"
            fabric = self.fabric
            if len(fabric.ports) >= self.max_ports:
                self.events[counters.PORT_LIMIT] += 1
                ratelog.warning(
                    "port-limit",
                    "refused %s on %s: the switch has %d ports already (--max-ports)",
                    peer,
                    self.name,
                    len(fabric.ports),
                )
                return
            port_id = self.attachments.allocate_id()
            port = StreamPort(port_id, f"stream:{port_id} {peer}", sock, peer_cred=cred)
            await self.attachments.attach(port, self.vlans)
            in_vlans = "" if self.vlans.is_default else f" (VLAN {self.vlans.describe()})"
            log.info(
                "port %d attached: stream client %s on %s%s", port_id, peer, self.name, in_vlans
            )
            await self.attachments.run(port, functools.partial(_run_until_closed, port, fabric))
