"""The in-process tests' switch and clients: start ``daemon.serve`` in the test's nursery,
attach clients as UML does, find a client's port, and the MACs and frames the tests use.
"""

from __future__ import annotations

import functools
from pathlib import Path

import trio
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from umlswitch.config import SwitchConfig
from umlswitch.daemon import Switch, serve
from umlswitch.ports.unix.clients import ClientPort, SharedPort
from umlswitch.testing import wait_until

from .client import SwitchClient

BROADCAST = "ff:ff:ff:ff:ff:ff"
MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
MAC_C = "02:00:00:00:00:0c"
MAC_D = "02:00:00:00:00:0d"


def raw_mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def frame(src: str, dst: str, tag: str = "", size: int | None = None) -> bytes:
    """An ICMP echo from ``src`` to ``dst``; ``tag`` makes frames distinguishable."""
    packet = Ether(src=src, dst=dst) / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()
    packet = packet / Raw(tag.encode())
    if size is not None:
        packet = packet / Raw(b"\xa5" * (size - len(packet)))
    data = bytes(packet)
    assert size is None or len(data) == size
    return data


async def start_switch(nursery: trio.Nursery, tmp_path: Path, **options: object) -> Switch:
    config = SwitchConfig(control_path=str(tmp_path / "ctl"), **options)  # type: ignore[arg-type]
    switch: Switch = await nursery.start(
        functools.partial(serve, config, handle_signals=False, watch_stdin=False)
    )
    return switch


async def wait_attached(switch: Switch, count: int) -> None:
    """Wait until ``count`` ports are attached (the switch attaches just after its reply)."""
    await wait_until(lambda: len(switch.fabric.ports) == count, what=f"{count} ports attached")


def port_of(switch: Switch, client: SwitchClient) -> ClientPort | SharedPort:
    """The switch's port for ``client``, found by the client's full address."""
    for port in switch.fabric.ports.values():
        if isinstance(port, ClientPort):
            peer = port.sock.getpeername()
        else:
            assert isinstance(port, SharedPort)
            peer = port.address
        if peer == client.address:
            return port
    raise AssertionError(f"no port for {client.address!r}")


async def attach_many(switch: Switch, n: int) -> list[SwitchClient]:
    clients = [await SwitchClient.attach(switch.control_path) for _ in range(n)]
    await wait_attached(switch, n)
    return clients


async def attach_uml_like(switch: Switch, n: int) -> list[SwitchClient]:
    """``n`` clients whose data sockets are unconnected, as UML's: each holds at most
    net.unix.max_dgram_qlen frames (10 by default)."""
    clients = [await SwitchClient.attach(switch.control_path, connect=False) for _ in range(n)]
    await wait_attached(switch, n)
    return clients


def close_all(clients: list[SwitchClient]) -> None:
    for client in clients:
        client.close()
