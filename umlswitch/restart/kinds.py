"""Per port kind: which descriptors a port owns, and the port rebuilt from them in a new process.

``describe(port, ...)`` gives a port's record for the state document (its kind's fields, its
descriptors as indexes into the bundle's descriptor list); ``rebuild(...)`` makes the same port
from that record and the inherited descriptors, without binding, connecting or closing anything.
The command line's ports (taps, UDP peers, overlays) travel with the listeners
(``static_descriptors``, ``adopt_static``), because the new process must not open them again.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from umlswitch.config import SwitchConfig
from umlswitch.listener import PeerCred
from umlswitch.ports.base import Port
from umlswitch.ports.overlay.vxlan import VxlanPort, VxlanSocket
from umlswitch.ports.overlay.vxvde import VxvdePort
from umlswitch.ports.stream.link import DownPort, LinkPort
from umlswitch.ports.stream.port import StreamPort
from umlswitch.ports.udp.mcast import McastPort
from umlswitch.ports.udp.ucast import UcastPort
from umlswitch.ports.unix.clients import ClientPort, SharedDataSocket, SharedPort
from umlswitch.tap.port import TapPort

Fd = int | socket.socket
Index = Callable[[Fd], int]  # a descriptor's place in the bundle (added once)


class CannotAdopt(Exception):
    """A record names a port this process cannot rebuild (its command line differs)."""


def _sock(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


def _address(value: bytes | str) -> dict[str, str]:
    return {"hex": value.hex()} if isinstance(value, bytes) else {"path": value}


def _unaddress(doc: dict[str, str]) -> bytes | str:
    return bytes.fromhex(doc["hex"]) if "hex" in doc else doc["path"]


def _peer(peer: PeerCred | None) -> list[int] | None:
    return None if peer is None else [peer.pid, peer.uid, peer.gid]


def _unpeer(doc: list[int] | None) -> PeerCred | None:
    return None if doc is None else PeerCred(*doc)


# --- ports that come and go: the control socket's clients, stream connections ---------------


def describe(port: Port, index: Index, connections: dict[int, Any]) -> dict[str, Any] | None:
    """The record of a client or stream port (None: a command-line port, or one not handed)."""
    if isinstance(port, ClientPort | SharedPort):
        conn = connections.get(port.id)
        if conn is None:
            return None  # still in its handshake: its client retries
        record: dict[str, Any] = {"control": index(conn.fileno())}
        if isinstance(port, ClientPort):
            record.update(kind="unix", data=index(port.sock), path=port.path, owner=port.owner)
        else:
            record.update(kind="unix-v0", address=_address(port.address))
        return record
    if isinstance(port, LinkPort | DownPort):
        return None  # a --stream-connect link: the new process connects anew
    if isinstance(port, StreamPort):
        unsent = b"" if port._unsent is None else bytes(port._unsent)
        carried = b"" if port.reader is None else bytes(port.reader.view[: port.reader.pending])
        return {
            "kind": "stream",
            "sock": index(port.sock),
            "unsent": unsent.hex(),
            "carried_in": carried.hex(),
        }
    return None


def rebuild(
    record: dict[str, Any],
    fds: list[int],
    shared: SharedDataSocket | None,
) -> tuple[Port, socket.socket | None]:
    """The port of ``record`` and, for a client, its control connection."""
    port_id, name = int(record["id"]), str(record["name"])
    kind = record["kind"]
    port: Port
    if kind == "unix":
        port = ClientPort(port_id, name, _sock(fds[record["data"]]), record.get("path"))
        port.owner = record.get("owner")
    elif kind == "unix-v0":
        if shared is None:
            raise CannotAdopt(f"port {port_id} is a v0 client, but there is no shared data socket")
        port = SharedPort(port_id, name, shared, _unaddress(record["address"]))
        shared.register(port)
    elif kind == "stream":
        port = StreamPort(port_id, name, _sock(fds[record["sock"]]))
        if record.get("unsent"):
            port._unsent = memoryview(bytes.fromhex(record["unsent"]))
        port.carried_in = bytes.fromhex(record.get("carried_in", ""))
    else:
        raise CannotAdopt(f"port {port_id}: unknown kind {kind!r}")
    port.peer = _unpeer(record.get("peer"))
    port.description = str(record.get("description", ""))
    control = _sock(fds[record["control"]]) if "control" in record else None
    return port, control


# --- the command line's ports ----------------------------------------------------------------


def static_descriptors(port: Port) -> tuple[list[Fd], dict[str, Any]]:
    """A command-line port's descriptors and what else its rebuilding needs."""
    if isinstance(port, McastPort):
        return [port.recv_sock, port.send_sock], {}
    if isinstance(port, UcastPort):
        remote = None if port.remote is None else list(port.remote[:2])
        return [port.recv_sock], {"remote": remote}
    if isinstance(port, TapPort):
        return [port.fd], {"created": port.created}
    if isinstance(port, VxvdePort):
        return [port.group_sock, port.peer_sock], {}
    if isinstance(port, VxlanPort):
        return [port.shared.sock], {"udp_port": port.shared.port}
    raise CannotAdopt(f"port {port.name}: its kind ({port.kind}) cannot be handed over")


def adopt_static(config: SwitchConfig, record: dict[str, Any], fds: list[int]) -> Port:
    """The command-line port of ``record`` (by name) around the inherited descriptors."""
    name, kind, places = record["name"], record["kind"], record["fds"]
    socks = [] if kind in ("tap", "vxlan") else [_sock(fds[i]) for i in places]
    for mspec in config.mcast:
        if mspec.name == name:
            return McastPort(mspec, socks[0], socks[1])
    for uspec in config.ucast:
        if uspec.name == name:
            remote = record.get("remote")
            return UcastPort(uspec, socks[0], None if remote is None else tuple(remote))
    for device in config.taps:
        if f"tap:{device}" == name:
            return TapPort(0, device, fds[places[0]], created=bool(record.get("created")))
    for vspec in config.vxvde:
        if vspec.name == name:
            return VxvdePort(vspec, socks[0], socks[1])
    for xspec in config.vxlan:
        if xspec.name == name:
            shared = _vxlan_sockets.get(fds[places[0]])
            if shared is None:
                shared = _vxlan_sockets[fds[places[0]]] = VxlanSocket(
                    _sock(fds[places[0]]), xspec.port
                )
            return VxlanPort(xspec, shared)
    raise CannotAdopt(
        f"the previous process had port {name} ({kind}), which this command line does not name"
    )


_vxlan_sockets: dict[int, VxlanSocket] = {}
