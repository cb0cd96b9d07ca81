"""The tap port: frames between the switch and the host's network stack through a tap device.

``open_tap`` attaches to an existing tap through ``/dev/net/tun`` (TUNSETIFF with IFF_TAP |
IFF_NO_PI, so each read and write is one raw frame). The preconfigured, persistent kind (``ip
tuntap add DEV mode tap user USER``) needs no privileges for its owner. A tap that does not exist
is created, non-persistent and DOWN, when the switch may (CAP_NET_ADMIN), as uml_switch does;
otherwise start-up fails with one line naming the command that makes it.

The fd is non-blocking and read in the batched style of the other ports, by the data-plane
thread: once readable, read until EAGAIN (at most ``BATCH`` frames a round). Writes never wait:
what the tap cannot take now waits in the port's backlog (``ports/base.py``); a frame sent while
the tap is down is dropped (EIO, ``egress_error``). When the device is deleted (``ip link del``),
Linux reports EPOLLERR and reads and writes fail with EBADFD: the port raises PortClosed and is
detached alone. It is not re-attached if the device comes back."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import pwd
import socket

from umlswitch import counters
from umlswitch.errors import StartupError
from umlswitch.fabric.fabric import Fabric
from umlswitch.fabric.frame import ETH_HEADER_LEN, MAX_MAX_FRAME
from umlswitch.listener import user_name
from umlswitch.ports.base import BATCH, Frame, Port, PortClosed, ReadArea, Source
from umlswitch.tap import ifreq, kind

log = logging.getLogger("umlswitch.tap")

TUN_PATH = "/dev/net/tun"
# A tap's MTU may be as large as 65535 bytes, so a frame read from it can be that plus a header and
# a VLAN tag. Reading into a buffer that large means a giant is measured, not truncated, before
# it is dropped (Linux returns only the bytes that fit).
READ_BUFFER = MAX_MAX_FRAME + ETH_HEADER_LEN + 4 + 1
# What reads and writes fail with once the device is gone (EBADFD on Linux 6.x; EBADF once our fd
# is closed).
_GONE = frozenset({errno.EBADFD, errno.EBADF, errno.ENODEV, errno.ENXIO})


class TapPort(Port):
    """One tap device, attached as port ``tap:DEV``."""

    kind = "tap"

    def __init__(self, port_id: int, device: str, fd: int, *, created: bool = False) -> None:
        super().__init__(port_id, f"tap:{device}")
        self.device = device
        self.fd = fd
        self.created = created  # made by us: non-persistent, it goes away when the fd is closed
        self._gone: str | None = None
        self._down_logged = False  # said once that frames are dropped while the tap is down

    def _send(self, frame: Frame) -> None:
        os.write(self.fd, frame)

    def egress_fd(self) -> int | None:
        return self.fd if self.fd >= 0 else None

    def _send_failed(self, exc: OSError) -> None:
        if exc.errno == errno.EIO:  # the interface is down: the kernel refuses the frame
            self.stats.drops[counters.EGRESS_ERROR] += 1
            if not self._down_logged:
                self._down_logged = True
                log.warning(
                    "port %d (%s): the tap is down; frames to it are dropped until it is brought "
                    "up (ip link set %s up)",
                    self.id,
                    self.name,
                    self.device,
                )
        elif exc.errno in _GONE:
            self.stats.drops[counters.EGRESS_ERROR] += 1
            self._mark_gone(f"write failed: {exc.strerror}")
        else:
            super()._send_failed(exc)

    def _mark_gone(self, reason: str) -> None:
        """Remember why the device is unusable and have the data plane end the port."""
        if self._gone is None:
            self._gone = reason
        if self.loop is not None:
            self.loop.port_gone(self, self._gone_message())

    def sources(self, fabric: Fabric, area: ReadArea) -> list[Source]:
        buf = bytearray(max(READ_BUFFER, fabric.max_frame + 1))
        view = memoryview(buf)
        buffers = [buf]
        readv = os.readv

        def read() -> None:
            fd = self.fd
            receive = fabric.receive  # the pipeline is re-composed between rounds only
            for _ in range(BATCH):
                if self._gone is not None:
                    break
                try:
                    size = readv(fd, buffers)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    self._mark_gone(f"read failed: {exc.strerror}")
                    break
                full = receive(self, view, size)
                if full:
                    self.held_by(full)
                    break
            self._down_logged = False  # it was readable, so it is up (or gone): say it again
            if self._gone is not None:
                self._closed_by_device()

        return [Source(self.fd, read, self)]

    def _closed_by_device(self) -> None:
        raise PortClosed(self._gone_message())

    def _gone_message(self) -> str:
        return (
            f"tap device '{self.device}' is gone ({self._gone}); it is not re-attached if it "
            "comes back: restart umlswitch to use it again"
        )

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        os.close(fd)


def _exists(device: str) -> bool:
    try:
        socket.if_nametoindex(device)
    except OSError:
        return False
    return True


def _is_up(raw_name: bytes) -> bool:
    """Whether the interface is up; True when that cannot be told (nothing to warn about)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            reply = fcntl.ioctl(sock, ifreq.SIOCGIFFLAGS, ifreq.pack_ifreq(raw_name))
    except OSError:
        return True
    return bool(ifreq.unpack_ifreq(reply)[1] & ifreq.IFF_UP)


def _owner(device: str) -> str:
    """Who may attach to an existing tap, from sysfs ("" when that cannot be read)."""
    try:
        with open(f"/sys/class/net/{device}/owner") as f:
            uid = int(f.read())
    except (OSError, ValueError):
        return ""
    if uid < 0:
        return " (it has no owner: only CAP_NET_ADMIN may attach)"
    try:
        return f" (it belongs to {pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f" (it belongs to uid {uid})"


def _open_error(device: str, path: str, exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return (
            f"-tap {device}: {path} does not exist; load the tun driver (modprobe tun) or create "
            f"the device node: mkdir -p {os.path.dirname(path)} && mknod {path} c 10 200 && "
            f"chmod 0666 {path}"
        )
    if exc.errno in (errno.ENODEV, errno.ENXIO):
        return (
            f"-tap {device}: cannot open {path}: {exc.strerror}; load the tun driver: modprobe tun"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        user = user_name(os.geteuid())
        return (
            f"-tap {device}: cannot open {path}: permission denied for user {user}; it must be "
            f"readable and writable by this user (it usually is mode 0666: chmod 0666 {path})"
        )
    return f"-tap {device}: cannot open {path}: {exc.strerror}"


def _attach_error(device: str, existed: bool, exc: OSError) -> str:
    user = user_name(os.geteuid())
    if exc.errno == errno.EPERM and not existed:
        return (
            f"-tap {device}: tap device '{device}' does not exist and user {user} may not create "
            f"it; create it with: ip tuntap add {device} mode tap user {user}"
        )
    if exc.errno == errno.EPERM:
        return (
            f"-tap {device}: user {user} may not attach to tap device '{device}'{_owner(device)}; "
            f"give it to this user: ip tuntap del {device} mode tap && "
            f"ip tuntap add {device} mode tap user {user}"
        )
    if exc.errno == errno.EBUSY:
        return (
            f"-tap {device}: tap device '{device}' is in use by another process (a UML guest, "
            "another switch, or -tap given twice); stop it or choose another tap"
        )
    if exc.errno == errno.EINVAL and existed:
        return (
            f"-tap {device}: '{device}' is not a tap device (it is {kind.describe(device)}); "
            "name a tap made with: "
            f"ip tuntap add NAME mode tap user {user}"
        )
    return f"-tap {device}: cannot attach to tap device '{device}': {exc.strerror}"


def open_tap(device: str, *, tun_path: str = TUN_PATH) -> TapPort:
    """Attach to tap ``device`` (creating it when it is missing and we may); StartupError if not.

    The port's id is assigned when the daemon attaches it to the fabric.
    """
    try:
        raw_name = ifreq.validate_name(device)
    except ifreq.InvalidName as exc:
        raise StartupError(f"-tap '{device}': not a valid interface name: {exc}") from None
    existed = _exists(device)
    try:
        fd = os.open(tun_path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise StartupError(_open_error(device, tun_path, exc)) from None
    try:
        fcntl.ioctl(fd, ifreq.TUNSETIFF, ifreq.pack_ifreq(raw_name, ifreq.TAP_FLAGS))
    except OSError as exc:
        os.close(fd)
        raise StartupError(_attach_error(device, existed, exc)) from None
    if not existed:
        log.warning(
            "created tap device '%s' (it did not exist); it is not persistent and is DOWN: the "
            "administrator must bring it up and address it (ip link set %s up && "
            "ip addr add ADDRESS/PREFIX dev %s)",
            device,
            device,
            device,
        )
    elif not _is_up(raw_name):
        log.warning(
            "tap device '%s' is DOWN: frames to it are dropped until it is brought up "
            "(ip link set %s up)",
            device,
            device,
        )
    return TapPort(0, device, fd, created=not existed)
