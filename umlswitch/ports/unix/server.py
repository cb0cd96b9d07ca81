"""The control socket of the unix-socket family: handshakes, attach, detach.

A client connects to the control socket and sends one request (``control.py`` decodes every
dialect); the server checks that the data socket it names is its own (``peercheck.py``), makes
it a port (``clients.py``), attaches the port to the fabric, replies, and runs the port. A port
lives as long as its control connection: EOF or any byte on it detaches the port and forgets its
MAC entries. Bounds: ``--max-ports``, ``--max-pending``, ``--handshake-timeout``.

One server may listen on several control sockets (``add_listener``): each puts the ports of its
clients in its own VLANs (``-unix /tmp/vlan10.ctl,vlan=10``), which a guest on ``eth0=daemon``
cannot choose itself.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import os
import socket
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import trio

from umlswitch import counters
from umlswitch.fabric.fabric import Fabric, PortNumberTaken
from umlswitch.fabric.vlan import DEFAULT_MEMBERSHIP, Membership
from umlswitch.listener import PeerCred, peer_cred, serve_listener, user_name
from umlswitch.ports.attachments import Attachments
from umlswitch.ports.base import RCVBUF, ratelog
from umlswitch.ports.unix import control, peercheck
from umlswitch.ports.unix.clients import (
    NAME_NUMBERS,
    ClientPort,
    SharedDataSocket,
    SharedPort,
    abstract_name,
    describe_address,
)
from umlswitch.ports.unix.control import NeedMore, Request, RequestDecoder, RequestError

log = logging.getLogger("umlswitch.unix")

# After a request that may still be growing (a vde description), wait this long for more bytes.
QUIET_PERIOD = 0.05


class PeerRefused(OSError):
    """The data socket a client named is not its own."""


@dataclass(frozen=True)
class Entrance:
    """One control socket: where its clients' pathname data sockets go ("DIR/" for a control
    socket DIR/ctl, vde's layout) and the VLANs their ports join."""

    listener: trio.socket.SocketType
    data_path_prefix: str
    vlans: Membership = DEFAULT_MEMBERSHIP
    label: str = "control socket"
    name_prefix: str = "unix"  # its ports are named PREFIX:N pid=P
    # who may attach here: the reason a peer is refused, None to let it in (None: anybody)
    admit: Callable[[PeerCred], str | None] | None = None


class ControlServer:
    """Accepts control connections, runs the handshake, and runs each attached port."""

    def __init__(
        self,
        listener: trio.socket.SocketType,
        fabric: Fabric,
        *,
        handshake_timeout: float,
        max_ports: int,
        max_pending: int,
        data_path_prefix: str,
        shared: SharedDataSocket | None = None,
        verify_peers: bool = True,
        attachments: Attachments | None = None,
    ) -> None:
        self.max_ports = max_ports
        self.max_pending = max_pending
        # connections still in their handshake, oldest first: key -> (peer, cancel scope)
        self._pending: OrderedDict[int, tuple[PeerCred, trio.CancelScope]] = OrderedDict()
        self._pending_keys = itertools.count()
        # refuse clients that name a data socket which is not their own (see peercheck)
        self.verify_peers = verify_peers
        self.entrances = [Entrance(listener, data_path_prefix)]
        self.fabric = fabric
        self.shared = shared
        self.handshake_timeout = handshake_timeout
        self.events: Counter[str] = Counter()
        # the switch's attached ports (shared with its other families), for remove and detach
        self.attachments = attachments if attachments is not None else Attachments(fabric)
        # each attached client's control connection, by port number (a restart hands them over)
        self.connections: dict[int, trio.socket.SocketType] = {}

    def add_listener(
        self, listener: trio.socket.SocketType, data_path_prefix: str, vlans: Membership, path: str
    ) -> None:
        """Serve one more control socket, whose clients' ports join ``vlans`` (before serve)."""
        label = f"control socket {path} ({vlans.describe()})"
        self.entrances.append(Entrance(listener, data_path_prefix, vlans, label))

    def add_private_listener(self, entrance: Entrance) -> None:
        """Serve a control socket for one client the switch started itself (``--slirp``'s
        helper), which ``entrance.admit`` recognises (before serve)."""
        self.entrances.append(entrance)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for entrance in self.entrances:
                await nursery.start(
                    serve_listener,
                    entrance.listener,
                    functools.partial(self._connection, entrance),
                    entrance.label,
                )
            task_status.started()

    async def _connection(self, entrance: Entrance, conn: trio.socket.SocketType) -> None:
        with conn:
            try:
                cred = peer_cred(conn)
            except OSError:
                cred = PeerCred(0, -1, -1)
            log.debug("new control connection from %s", cred)
            refusal = entrance.admit(cred) if entrance.admit is not None else None
            if refusal is not None:
                self.events[counters.PEER_REFUSED] += 1
                ratelog.warning(
                    f"admit:{entrance.label}",
                    "refused %s on the %s: %s",
                    cred,
                    entrance.label,
                    refusal,
                )
                return
            if len(self._pending) >= self.max_pending:
                # Make room by closing the connection that has waited longest: a client that
                # really means to attach completes its handshake in milliseconds.
                _, (oldest_cred, oldest_scope) = self._pending.popitem(last=False)
                oldest_scope.cancel()
                self.events[counters.PENDING_LIMIT] += 1
                ratelog.warning(
                    "pending-limit",
                    "closed the oldest pending control connection (from %s): %d connections "
                    "were waiting for their handshake (--max-pending)",
                    oldest_cred,
                    self.max_pending,
                )
            key = next(self._pending_keys)
            request = None
            with trio.CancelScope() as scope:
                self._pending[key] = (cred, scope)
                try:
                    request = await self._read_request(conn, cred)
                finally:
                    self._pending.pop(key, None)
            if request is None:
                return
            if len(self.fabric.ports) >= self.max_ports:
                self.events[counters.PORT_LIMIT] += 1
                ratelog.warning(
                    "port-limit",
                    "refused %s: the switch has %d ports already (--max-ports)",
                    cred,
                    len(self.fabric.ports),
                )
                return
            await self._serve_client(conn, cred, request, entrance)

    async def _read_request(self, conn: trio.socket.SocketType, cred: PeerCred) -> Request | None:
        decoder = RequestDecoder()
        result: control.Decoded = NeedMore(can_finish=False)
        with trio.move_on_after(self.handshake_timeout) as timeout:
            while isinstance(result, NeedMore):
                data = b""
                if result.can_finish:
                    with trio.move_on_after(QUIET_PERIOD):
                        data = await conn.recv(control.MAX_REQUEST + 1)
                    if not data:
                        result = decoder.finish()
                        break
                else:
                    data = await conn.recv(control.MAX_REQUEST + 1)
                    if not data:
                        if decoder.buffered:
                            result = decoder.finish()
                        else:
                            log.info("control connection from %s closed before a request", cred)
                            return None
                        break
                result = decoder.feed(data)
        if timeout.cancelled_caught:
            self.events[counters.HANDSHAKE_TIMEOUT] += 1
            ratelog.warning(
                "handshake-timeout",
                "control connection from %s: no complete request within %g s; closed",
                cred,
                self.handshake_timeout,
            )
            return None
        if isinstance(result, RequestError):
            self.events[result.counter] += 1
            ratelog.warning(f"request:{result.counter}", "refused %s: %s", cred, result.message)
            return None
        assert isinstance(result, Request)
        return result

    async def _serve_client(
        self,
        conn: trio.socket.SocketType,
        cred: PeerCred,
        request: Request,
        entrance: Entrance,
    ) -> None:
        port = self._open_port(cred, request, entrance)
        if port is None:
            return
        port.peer = cred
        port.description = request.description or ""
        # Attach before replying: a client may send (and expect to receive) as soon as it has
        # the reply, so the port must already be part of the fabric by then.
        await self.attachments.attach(port, entrance.vlans)
        try:
            if isinstance(port, ClientPort):
                await conn.send(control.encode_sockaddr(port.local_address))
        except OSError as exc:
            await self.attachments.detach(
                port, f"client {cred} vanished during the handshake: {exc}"
            )
            return
        self._log_attached(port, cred, request, entrance)

        await self.run_client(port, conn)

    async def run_client(self, port: ClientPort | SharedPort, conn: trio.socket.SocketType) -> None:
        """Run an attached client's port until its control connection ends (or the switch's)."""

        async def life() -> str:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(port.run, self.fabric)
                reason = await self._watch_control(conn)
                nursery.cancel_scope.cancel()
            return reason

        self.connections[port.id] = conn
        try:
            await self.attachments.run(port, life)
        finally:
            self.connections.pop(port.id, None)

    def _open_port(
        self, cred: PeerCred, request: Request, entrance: Entrance
    ) -> ClientPort | SharedPort | None:
        """The port for a client's request, or None (counted, logged) if it is refused."""
        try:
            port_id = self.attachments.allocate_id(request.requested_port)
        except PortNumberTaken as exc:
            self._refuse(counters.ATTACH_FAILED, "refused %s (%s): %s", cred, request.dialect, exc)
            return None
        name = f"{entrance.name_prefix}:{port_id} pid={cred.pid}"
        peer = request.peer_address
        if request.dialect == "v0":
            return self._open_shared_port(port_id, name, peer, cred)
        try:
            return self._open_client_port(port_id, name, peer, cred, entrance.data_path_prefix)
        except PeerRefused as exc:
            self._refuse(counters.PEER_REFUSED, "refused %s (%s): %s", cred, request.dialect, exc)
            return None
        except OSError as exc:
            self._refuse(
                counters.ATTACH_FAILED,
                "refused %s (%s): cannot connect to its data socket %s: %s",
                cred,
                request.dialect,
                describe_address(peer),
                exc.strerror or exc,
            )
            return None

    def _open_shared_port(
        self, port_id: int, name: str, peer: bytes | str, cred: PeerCred
    ) -> SharedPort | None:
        """A v0 client's port on the shared data socket, or None if it is refused."""
        if self.shared is None:
            self._refuse(
                counters.ATTACH_FAILED,
                "refused v0 request from %s: v0 clients need a shared data socket; "
                "start umlswitch with -compat-v0 or -unix CTL DATA",
                cred,
            )
            return None
        if self.shared.is_registered(peer):
            self._refuse(
                counters.ATTACH_FAILED,
                "refused v0 request from %s: address %s is already attached",
                cred,
                describe_address(peer),
            )
            return None
        refusal = self._check_v0_address(peer, cred)
        if refusal is not None:
            self._refuse(counters.PEER_REFUSED, "refused v0 request from %s: %s", cred, refusal)
            return None
        port = SharedPort(port_id, name, self.shared, peer)
        self.shared.register(port)
        return port

    def _refuse(self, counter: str, message: str, *args: object) -> None:
        self.events[counter] += 1
        log.warning(message, *args)

    def _log_attached(
        self, port: ClientPort | SharedPort, cred: PeerCred, request: Request, entrance: Entrance
    ) -> None:
        owner = port.owner if isinstance(port, ClientPort) and port.owner is not None else cred.uid
        extra = f" user={user_name(owner)}"
        if request.description:
            extra += f" description={request.description!r}"
        if not entrance.vlans.is_default:
            extra += f" VLAN {entrance.vlans.describe()}"
        log.info(
            "port %d attached: %s client %s, data %s%s",
            port.id,
            request.dialect,
            cred,
            describe_address(request.peer_address),
            extra,
        )

    def _check_v0_address(self, peer: bytes | str, cred: PeerCred) -> str | None:
        """For the shared socket: whether ``peer`` names the client's own socket."""
        if not self.verify_peers:
            return None
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(peer)
                return peercheck.check_connected_socket(probe, cred.pid, cred.uid)
            except OSError as exc:
                return f"cannot reach its data socket {describe_address(peer)}: {exc.strerror}"

    def _open_client_port(
        self, port_id: int, name: str, peer: bytes | str, cred: PeerCred, data_path_prefix: str
    ) -> ClientPort:
        """A data socket for one client, bound and connected to the client's own address.

        An abstract client address (UML) gets an abstract socket. A pathname one (libvdeplug)
        gets a pathname socket beside the control socket, owned by the client's socket's owner
        so that the client may connect to it, as vde_switch does.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path: str | None = None
        owner = -1
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            if isinstance(peer, bytes):
                sock.bind(abstract_name(str(port_id)))
            else:
                owner = os.stat(peer).st_uid
                path = f"{data_path_prefix}{port_id:03d}.{next(NAME_NUMBERS)}"
                if len(os.fsencode(path)) >= control.SUN_PATH_LEN:
                    raise OSError(errno.ENAMETOOLONG, f"data socket path {path} is too long")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # left by a killed switch
                sock.bind(path)
                os.chmod(path, 0o600)
                if os.geteuid() == 0:
                    os.chown(path, owner, -1)
            sock.connect(peer)
            if self.verify_peers:
                reason = peercheck.check_connected_socket(sock, cred.pid, cred.uid)
                if reason is not None:
                    raise PeerRefused(reason)
        except OSError:
            sock.close()
            if path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
        port = ClientPort(port_id, name, sock, path)
        port.owner = owner if path is not None else None
        return port

    async def _watch_control(self, conn: trio.socket.SocketType) -> str:
        """Wait until the control connection ends; return why."""
        try:
            data = await conn.recv(512)
        except OSError as exc:
            return f"control connection error: {exc.strerror or exc}"
        if not data:
            return "disconnect"
        self.events[counters.BAD_REQUEST] += 1
        return f"bad request: {len(data)} unexpected byte(s) on the control connection"
