"""The first bundle of a restart: the sockets bound at start-up, and the command line's ports.

The old process sends its control, management and shared data sockets, the control sockets of
VLANs, the ``--stream`` listeners and the descriptors of its taps, UDP peers and overlays, with
the socket files it created (path and inode, so that whoever stops last removes them). The new
process makes its ``BoundSockets`` of them (``adopt``): nothing is bound, unlinked or closed.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import TYPE_CHECKING, Any

from umlswitch.config import SwitchConfig
from umlswitch.listener import LISTEN_BACKLOG
from umlswitch.restart import kinds
from umlswitch.restart.document import UnreadableState
from umlswitch.restart.kinds import CannotAdopt, Fd

if TYPE_CHECKING:
    from umlswitch.binding import BoundSockets


class Descriptors:
    """The descriptors of one bundle, each added once, by their place in it."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def index(self, fd: Fd) -> int:
        number = fd if isinstance(fd, int) else fd.fileno()
        if number in self.fds:
            return self.fds.index(number)
        self.fds.append(number)
        return len(self.fds) - 1


def export(sockets: BoundSockets, static_ids: set[int]) -> tuple[dict[str, Any], list[int]]:
    """The startup document and its descriptors (the static ports still attached only)."""
    fds = Descriptors()
    doc: dict[str, Any] = {
        "control": fds.index(sockets.control),
        "control_path": sockets.control_path,
        "data": None if sockets.data is None else fds.index(sockets.data),
        "data_path": sockets.data_path,
        "mgmt": None if sockets.mgmt is None else fds.index(sockets.mgmt),
        "mgmt_path": sockets.mgmt_path,
        "vlan_controls": {path: fds.index(sock) for sock, path, _ in sockets.vlan_controls},
        "streams": {name: fds.index(sock) for name, sock, _ in sockets.streams},
        "created": sockets.created,
        "created_dir": sockets.created_dir,
        "static": [],
    }
    for port in sockets.static_ports:
        if port.id not in static_ids:
            continue
        descriptors, extra = kinds.static_descriptors(port)
        places = [fds.index(fd) for fd in descriptors]
        doc["static"].append({"name": port.name, "kind": port.kind, "fds": places, **extra})
    return doc, fds.fds


def _listener(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    if sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM:
        # SO_PEERCRED of a listening socket is recorded by listen(): listen again so that
        # "another server attached (pid N)" names this process, not the one before.
        sock.listen(LISTEN_BACKLOG)
    return sock


def adopt(config: SwitchConfig, doc: dict[str, Any], fds: list[int]) -> BoundSockets:
    """The new process's ``BoundSockets``, made of the old one's descriptors."""
    from umlswitch.binding import BoundSockets

    try:
        bound = BoundSockets(_listener(fds[doc["control"]]), doc["control_path"])
        if doc.get("data") is not None:
            bound.data, bound.data_path = _listener(fds[doc["data"]]), doc["data_path"]
        if doc.get("mgmt") is not None:
            bound.mgmt, bound.mgmt_path = _listener(fds[doc["mgmt"]]), doc["mgmt_path"]
        bound.created = {path: int(inode) for path, inode in doc["created"].items()}
        bound.created_dir = doc.get("created_dir")
        vlan_controls = dict(config.vlan_controls)
        for path, place in doc["vlan_controls"].items():
            if path not in vlan_controls:
                raise CannotAdopt(f"the previous process served control socket {path}, not named")
            bound.vlan_controls.append((_listener(fds[place]), path, vlan_controls[path]))
        stream_vlans = {f"unix:{s.path}": s.vlans for s in config.streams if s.kind == "unix"}
        tcp_vlans = [s.vlans for s in config.streams if s.kind != "unix"]
        for name, place in doc["streams"].items():
            vlans = stream_vlans.get(name) or (tcp_vlans.pop(0) if tcp_vlans else None)
            if vlans is None:
                raise CannotAdopt(f"the previous process had stream listener {name}, not named")
            bound.streams.append((name, _listener(fds[place]), vlans))
        for record in doc["static"]:
            bound.static_ports.append(kinds.adopt_static(config, record, fds))
    except (KeyError, TypeError, IndexError) as exc:
        raise UnreadableState(f"the startup document lacks {exc}") from None
    except OSError as exc:
        raise UnreadableState(f"an inherited descriptor is unusable: {exc.strerror}") from None
    return bound


def close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
