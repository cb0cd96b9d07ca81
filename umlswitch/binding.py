"""Binding every socket the switch serves on, before the event loop starts (so that -daemon can
report a failure first): the control socket and the shared data socket, the management socket,
the --stream listeners, the command line's ports and the --pcap and --rc files; a stale socket
(nobody answers) reclaimed, a live one refused naming its server; access modes and groups.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import socket
import stat
import struct
from dataclasses import dataclass, field
from typing import BinaryIO

from umlswitch.capture import open_capture_file
from umlswitch.config import SwitchConfig
from umlswitch.digits import is_decimal
from umlswitch.errors import StartupError as StartupError  # re-exported
from umlswitch.fabric.vlan import Membership
from umlswitch.listener import LISTEN_BACKLOG
from umlswitch.mgmt.rcfile import read_rc_file
from umlswitch.ports.base import Port
from umlswitch.ports.overlay.vxlan import open_vxlan_ports
from umlswitch.ports.overlay.vxvde import open_vxvde_port
from umlswitch.ports.slirp.helper import SlirpUplink, find_program
from umlswitch.ports.stream.server import bind_tcp_listener, listener_name
from umlswitch.ports.udp.mcast import open_mcast_port
from umlswitch.ports.udp.ucast import open_ucast_port
from umlswitch.ports.unix.control import SUN_PATH_LEN
from umlswitch.systemd import NONE_INHERITED, Inherited
from umlswitch.tap.port import open_tap

log = logging.getLogger("umlswitch")


@dataclass
class BoundSockets:
    """Sockets bound before the event loop starts (so -daemon can report errors first)."""

    control: socket.socket
    control_path: str
    data: socket.socket | None = None
    data_path: str | None = None
    # path -> inode of the socket file we created, so we never unlink somebody else's file
    created: dict[str, int] = field(default_factory=dict)
    # ports opened at start-up from the command line (UDP peers, taps): attached once serving
    static_ports: list[Port] = field(default_factory=list)
    # the --vde directory, if the switch created it (removed on exit when empty)
    created_dir: str | None = None
    # the management socket (none with --no-mgmt) and the --pcap file
    mgmt: socket.socket | None = None
    mgmt_path: str | None = None
    capture_file: BinaryIO | None = None
    # the --stream listeners: (name, socket, VLANs), name unix:PATH or tcp:HOST:PORT (the port
    # bound), VLANs those of every connection's port
    streams: list[tuple[str, socket.socket, Membership]] = field(default_factory=list)
    # more control sockets, each for guests in VLANs: (socket, path, membership)
    vlan_controls: list[tuple[socket.socket, str, Membership]] = field(default_factory=list)
    rc_text: str | None = None  # the --rc file, read before the event loop starts
    slirp: SlirpUplink | None = None  # --slirp: the helper's private listener and directory

    def close(self) -> None:
        self.control.close()
        if self.slirp is not None:
            self.slirp.close()
        for _, listener, _ in self.streams:
            listener.close()
        for sock, _, _ in self.vlan_controls:
            sock.close()
        if self.data is not None:
            self.data.close()
        if self.mgmt is not None:
            self.mgmt.close()
        if self.capture_file is not None:
            self.capture_file.close()
        for port in self.static_ports:
            port.close()

    def unlink_created(self) -> None:
        for path, inode in self.created.items():
            try:
                if os.lstat(path).st_ino == inode:
                    os.unlink(path)
            except OSError:
                pass
        if self.created_dir is not None:
            with contextlib.suppress(OSError):  # not empty: somebody else's files; leave it
                os.rmdir(self.created_dir)


def _reclaim_if_stale(path: str, kind: int) -> None:
    """Remove a socket file nobody serves; refuse a live one or a file that is not a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError(f"'{path}' exists and is not a socket; remove it or choose another path")
    probe = socket.socket(socket.AF_UNIX, kind)
    try:
        probe.connect(path)
        server = _server_pid(probe)
    except ConnectionRefusedError:
        os.unlink(path)
        log.info("reclaimed stale socket '%s' (nobody was serving it)", path)
        return
    except OSError as exc:
        raise StartupError(f"cannot check existing socket '{path}': {exc.strerror}") from None
    finally:
        probe.close()
    raise StartupError(
        f"the socket '{path}' has another server attached to it{server}; stop that switch, or "
        "rerun with a different, unused path (-unix PATH)"
    )


def _server_pid(probe: socket.socket) -> str:
    """`` (pid N)``: who listens on the socket ``probe`` reached (SO_PEERCRED), if known."""
    try:
        creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return ""
    pid = struct.unpack("3i", creds)[0]
    if pid <= 0:  # a datagram socket has no peer credentials
        return ""
    return " (pid 1, systemd: a socket unit holds it)" if pid == 1 else f" (pid {pid})"


def _bind(path: str, kind: int, what: str) -> tuple[socket.socket, int]:
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise StartupError(
            f"cannot create {what} '{path}': directory '{directory}' does not exist "
            f"(create it with: mkdir -p {directory})"
        )
    if len(os.fsencode(path)) >= SUN_PATH_LEN:
        raise StartupError(
            f"{what} path '{path}' is too long for a unix socket (max {SUN_PATH_LEN - 1} bytes)"
        )
    _reclaim_if_stale(path, kind)
    sock = socket.socket(socket.AF_UNIX, kind)
    old_umask = os.umask(0o177)  # nobody else may connect before the mode is applied
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        hint = (
            "run as a user who may write there, or choose another path"
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
            else "choose another path"
        )
        raise StartupError(f"cannot create {what} '{path}': {exc.strerror}; {hint}") from None
    finally:
        os.umask(old_umask)
    return sock, os.lstat(path).st_ino


def dir_mode(mode: int) -> int:
    """A directory mode for socket mode ``mode``: search wherever read is allowed, setgid."""
    return 0o2000 | mode | ((mode & 0o444) >> 2)


def _group_id(name: str | None) -> int:
    if name is None:
        return -1
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        if is_decimal(name):
            return int(name)
        raise StartupError(f"--group {name}: no such group") from None


def _set_access(path: str, mode: int, gid: int) -> None:
    """chmod (and chgrp) a socket file or directory the switch created."""
    try:
        if gid != -1:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
    except OSError as exc:
        raise StartupError(
            f"cannot set the permissions of '{path}': {exc.strerror}; "
            "a group must be one the switch's user belongs to"
        ) from None


def _make_vde_dir(path: str) -> str | None:
    """Create the --vde directory (mode 02700, as vde_switch); return it if we created it."""
    try:
        os.mkdir(path, 0o2700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise StartupError(f"--vde '{path}' exists and is not a directory") from None
        return None
    except OSError as exc:
        raise StartupError(
            f"cannot create the --vde directory '{path}': {exc.strerror}; "
            "create its parent or choose another path"
        ) from None
    os.chmod(path, 0o2700)  # mkdir's mode is filtered by the umask
    return path


def _bind_mgmt(config: SwitchConfig, bound: BoundSockets, gid: int) -> None:
    """Bind the management socket, with the control socket's permissions."""
    path = config.mgmt_socket
    if path is None:
        return
    if config.mgmt_path is None and len(os.fsencode(path)) >= SUN_PATH_LEN:
        log.warning(
            "no management socket: '%s' is too long for a unix socket; name one with --mgmt PATH",
            path,
        )
        return
    mgmt, inode = _bind(path, socket.SOCK_STREAM, "management socket")
    bound.mgmt, bound.mgmt_path = mgmt, path
    bound.created[path] = inode
    _set_access(path, config.mode, gid)
    mgmt.listen(LISTEN_BACKLOG)
    mgmt.setblocking(False)


def _bind_streams(config: SwitchConfig, bound: BoundSockets, gid: int) -> None:
    """Bind the --stream listeners: unix ones as the control socket, TCP ones on their address."""
    for spec in config.streams:
        if spec.kind == "unix":
            sock, inode = _bind(spec.path, socket.SOCK_STREAM, "stream socket")
            bound.created[spec.path] = inode
            bound.streams.append((listener_name(spec, sock), sock, spec.vlans))
            _set_access(spec.path, config.mode, gid)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        else:
            sock = bind_tcp_listener(spec)
            bound.streams.append((listener_name(spec, sock), sock, spec.vlans))


def bind_sockets(config: SwitchConfig, inherited: Inherited = NONE_INHERITED) -> BoundSockets:
    """Bind the control socket (and the shared data socket, if any); open the start-up ports.

    Sockets systemd passed (``inherited``, see ``umlswitch.systemd``) are served as they are:
    neither bound, nor chmod'ed, nor removed on exit.
    """
    created_dir = _make_vde_dir(config.vde_dir) if config.vde_dir else None
    try:
        if inherited.control is not None:
            control, created = inherited.control, {}
        else:
            control, inode = _bind(config.control_path, socket.SOCK_STREAM, "control socket")
            created = {config.control_path: inode}
    except BaseException:
        if created_dir is not None:
            os.rmdir(created_dir)
        raise
    bound = BoundSockets(control, config.control_path, created=created)
    bound.created_dir = created_dir
    try:
        gid = _group_id(config.group)
        if created_dir is not None:
            _set_access(created_dir, dir_mode(config.mode), gid)
        if inherited.control is None:
            _set_access(config.control_path, config.mode, gid)
            control.listen(LISTEN_BACKLOG)
        control.setblocking(False)
        if inherited.data is not None:
            inherited.data.setblocking(False)
            bound.data, bound.data_path = inherited.data, config.data_path
        elif config.data_path is not None:
            data, inode = _bind(config.data_path, socket.SOCK_DGRAM, "data socket")
            data.setblocking(False)
            bound.data, bound.data_path = data, config.data_path
            bound.created[config.data_path] = inode
            _set_access(config.data_path, config.mode, gid)
        if inherited.mgmt is not None:
            inherited.mgmt.setblocking(False)
            bound.mgmt, bound.mgmt_path = inherited.mgmt, config.mgmt_socket
        else:
            _bind_mgmt(config, bound, gid)
        if inherited.control is not None:
            passed = [s.getsockname() for s in (control, inherited.mgmt, inherited.data) if s]
            log.info("socket activation: serving %s, passed by systemd", ", ".join(passed))
        for path, vlans in config.vlan_controls:
            sock, inode = _bind(path, socket.SOCK_STREAM, "control socket")
            bound.vlan_controls.append((sock, path, vlans))
            bound.created[path] = inode
            _set_access(path, config.mode, gid)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        if config.rc is not None:
            bound.rc_text = read_rc_file(config.rc)
        if config.pcap is not None:
            try:
                bound.capture_file = open_capture_file(config.pcap)
            except OSError as exc:
                raise StartupError(
                    f"--pcap {config.pcap}: cannot write the capture file: {exc.strerror}; "
                    "choose another path"
                ) from None
        _bind_streams(config, bound, gid)
        if config.slirp is not None:
            bound.slirp = SlirpUplink(config.slirp, find_program(), max_frame=config.max_frame)
        bound.static_ports.extend(open_mcast_port(spec) for spec in config.mcast)
        bound.static_ports.extend(open_ucast_port(spec) for spec in config.ucast)
        bound.static_ports.extend(open_vxlan_ports(config.vxlan))
        bound.static_ports.extend(open_vxvde_port(spec) for spec in config.vxvde)
        bound.static_ports.extend(open_tap(name) for name in config.taps)
    except BaseException:
        bound.close()
        bound.unlink_created()
        raise
    return bound
