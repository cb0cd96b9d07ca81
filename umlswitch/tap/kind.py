"""What kind of network interface a name is, for the error that says it is not a tap.

A tun/tap device has ``/sys/class/net/DEV/tun_flags`` (IFF_TUN or IFF_TAP, IFF_MULTI_QUEUE);
anything else is named by its driver, as ``ethtool -i`` reports it (ETHTOOL_GDRVINFO through
SIOCETHTOOL): ``veth``, ``bridge``, ``vxlan``, ``virtio_net``... The answer only feeds an
error message, so every failure to tell falls back to "another kind of interface".
"""

from __future__ import annotations

import ctypes
import fcntl
import socket
import struct

from umlswitch.tap import ifreq

SIOCETHTOOL = 0x8946  # <linux/sockios.h>
ETHTOOL_GDRVINFO = 0x00000003  # <linux/ethtool.h>
_DRVINFO_SIZE = 196  # struct ethtool_drvinfo: cmd, driver[32], version[32], fw[32], bus[32]...
IFF_MULTI_QUEUE = 0x0100  # <linux/if_tun.h>
UNKNOWN = "another kind of interface"


def describe(device: str, *, sysfs: str = "/sys/class/net") -> str:
    """`device`'s kind in a few words: "a tun device", "a multi-queue tap", "a veth interface"."""
    try:
        with open(f"{sysfs}/{device}/tun_flags") as f:
            flags = int(f.read(), 16)
    except (OSError, ValueError):
        driver = _driver(device)
        return f"a {driver} interface" if driver else UNKNOWN
    if flags & ifreq.IFF_TUN:
        return "a tun device (layer 3, no ethernet frames)"
    if flags & IFF_MULTI_QUEUE:
        return "a multi-queue tap"
    return UNKNOWN


def _driver(device: str) -> str:
    """The interface's driver name (ETHTOOL_GDRVINFO), or "" when the kernel does not say."""
    info = ctypes.create_string_buffer(struct.pack("=I", ETHTOOL_GDRVINFO), _DRVINFO_SIZE)
    request = struct.pack(
        f"{ifreq.IFNAMSIZ}sP", device.encode()[: ifreq.MAX_NAME_LEN], ctypes.addressof(info)
    ).ljust(ifreq.IFREQ_SIZE, b"\0")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock, SIOCETHTOOL, request)
    except OSError:
        return ""
    return info.raw[4:36].split(b"\0", 1)[0].decode("ascii", "replace")
