"""The ``--stream`` option value: text -> a frozen spec. Pure: no sockets, no lookups.

``--stream unix:PATH``
    Listen on the unix stream socket PATH (QEMU ``-netdev stream,addr.type=unix,addr.path=PATH``).
    Created with the control socket's ``--mode`` and ``--group``, removed on exit.

``--stream tcp:[ADDR:]PORT``
    Listen on TCP PORT (QEMU ``-netdev socket,connect=ADDR:PORT``, ``-netdev
    stream,addr.type=inet``). Without ADDR the listener binds 127.0.0.1 only: anybody who can
    reach the port can put frames on the LAN, so listening beyond the host is asked for
    explicitly (``tcp:0.0.0.0:PORT``). PORT 0 takes a free port (the log names it).

Every connection to a listener becomes one port, a member of the listener's VLANs (``vlans``,
from ``,vlan=N``/``,trunk=N,M`` after the address: ``config.py`` takes those off). Errors are
``ValueError`` with a message fit for ``umlswitch: error: argument --stream: ...``.

``--stream-connect unix:PATH`` and ``--stream-connect tcp:HOST:PORT`` (``parse_stream_connect``)
name a listener to connect to instead (passt, another umlswitch's ``--stream``, QEMU with
``-netdev stream,server=on``): the same spec, where HOST may also be a host name, resolved at
each connection attempt, or an IPv6 address in brackets.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from umlswitch.digits import is_decimal
from umlswitch.fabric.vlan import DEFAULT_MEMBERSHIP, Membership
from umlswitch.ports.unix.control import SUN_PATH_LEN

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class StreamSpec:
    """One listener: ``kind`` ``unix`` with ``path``, or ``tcp`` with ``host`` and ``port``."""

    kind: str
    path: str = ""
    host: str = LOOPBACK
    port: int = 0
    vlans: Membership = DEFAULT_MEMBERSHIP  # of every connection's port

    def __str__(self) -> str:
        """The option value that gives this spec back."""
        text = f"unix:{self.path}" if self.kind == "unix" else f"tcp:{self.host}:{self.port}"
        return ",".join([text, *self.vlans.words()])


def parse_stream(text: str) -> StreamSpec:
    """``unix:PATH`` or ``tcp:[ADDR:]PORT`` -> StreamSpec."""
    kind, sep, rest = text.partition(":")
    if kind == "unix" and sep:
        if not rest:
            raise ValueError("unix: needs a socket path, e.g. unix:/run/umlswitch/qemu.sock")
        if len(rest.encode()) >= SUN_PATH_LEN:
            raise ValueError(
                f"{rest!r} is too long for a unix socket (max {SUN_PATH_LEN - 1} bytes)"
            )
        return StreamSpec("unix", path=rest)
    if kind == "tcp" and sep:
        host, sep, port_text = rest.rpartition(":")
        if not sep:
            host = LOOPBACK
        try:
            host = str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError(
                f"{text!r}: the address must be an IPv4 address (e.g. tcp:127.0.0.1:5555), "
                f"not {host!r}"
            ) from None
        if not is_decimal(port_text) or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"{text!r}: the TCP port must be a number from 0 to 65535")
        return StreamSpec("tcp", host=host, port=int(port_text))
    raise ValueError(f"expected unix:PATH or tcp:[ADDR:]PORT, not {text!r}")


def parse_stream_connect(text: str) -> StreamSpec:
    """``unix:PATH`` or ``tcp:HOST:PORT`` (HOST an address or a name) -> StreamSpec."""
    kind, sep, rest = text.partition(":")
    if kind == "unix" and sep:
        return parse_stream(text)
    if kind == "tcp" and sep:
        host, sep, port_text = rest.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{text!r}: give the peer's address and port, e.g. tcp:127.0.0.1:5555")
        if not is_decimal(port_text) or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{text!r}: the TCP port must be a number from 1 to 65535")
        if host.startswith("[") and host.endswith("]"):  # an IPv6 address: tcp:[::1]:5555
            host = host[1:-1]
        if not host or any(c.isspace() or c in ",/[]" for c in host):
            raise ValueError(f"{text!r}: {host!r} is not a host name or an address")
        return StreamSpec("tcp", host=host, port=int(port_text))
    raise ValueError(f"expected unix:PATH or tcp:HOST:PORT, not {text!r}")


def target_of(spec: StreamSpec) -> str:
    """``unix:PATH`` or ``tcp:HOST:PORT`` (``tcp:[ADDR]:PORT`` for IPv6): a link's target."""
    if spec.kind == "unix":
        return f"unix:{spec.path}"
    host = f"[{spec.host}]" if ":" in spec.host else spec.host
    return f"tcp:{host}:{spec.port}"


def stream_conflicts(specs: Iterable[StreamSpec]) -> str | None:
    """Why these listeners cannot run side by side, or None: one path or TCP port twice."""
    paths: set[str] = set()
    ports: dict[int, list[str]] = {}
    for spec in specs:
        if spec.kind == "unix":
            if spec.path in paths:
                return f"--stream {spec} is given twice"
            paths.add(spec.path)
        elif spec.port:
            hosts = ports.setdefault(spec.port, [])
            if any(h == spec.host or "0.0.0.0" in (h, spec.host) for h in hosts):
                return f"--stream: two listeners on TCP port {spec.port}"
            hosts.append(spec.host)
    return None
