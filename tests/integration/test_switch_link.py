"""Two umlswitches in two network namespaces, joined by a veth pair and linked over TCP: switch A
listens (``--stream tcp:ADDR:PORT``), switch B connects (``--stream-connect tcp:ADDR:PORT``).
Both run the spanning tree, which sees the link (B's root is A, through the link's port).
Clients on each reach each other; when A is killed and started again, B re-links within 10 s
and the clients reach each other again."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.netns import entered_netns, ip, netns_name, netns_unavailable
from umlswitch.testing import SwitchProcess, SyncPort, attach_sync

pytestmark = pytest.mark.integration

MAC_A = "02:00:00:00:5e:0a"
MAC_B = "02:00:00:00:5e:0b"
ADDR_A, ADDR_B = "10.77.0.1", "10.77.0.2"
PORT = 5555
RELINK_TIMEOUT = 10.0
T = TypeVar("T")


@pytest.fixture
def two_netns() -> Iterator[tuple[str, str]]:
    """Namespaces ns1 (veth with ADDR_A) and ns2 (ADDR_B), one veth pair between them."""
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    names = (netns_name("umlsw-link"), netns_name("umlsw-link"))
    for name in names:
        ip("netns", "add", name)
    try:
        ip(
            "link",
            "add",
            "lkA",
            "netns",
            names[0],
            "type",
            "veth",
            "peer",
            "lkB",
            "netns",
            names[1],
        )
        for name, dev, addr in ((names[0], "lkA", ADDR_A), (names[1], "lkB", ADDR_B)):
            with entered_netns(name):
                ip("link", "set", "lo", "up")
                ip("addr", "add", f"{addr}/24", "dev", dev)
                ip("link", "set", dev, "up")
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def in_netns(name: str, make: Callable[[], T]) -> T:
    with entered_netns(name):
        return make()


def switch_in(name: str, directory: Path, *args: str) -> SwitchProcess:
    directory.mkdir(exist_ok=True)
    return SwitchProcess(
        "--stp", *args, directory=str(directory), launcher=["ip", "netns", "exec", name]
    )


def reach(a: SyncPort, b: SyncPort, tag: bytes, timeout: float) -> float:
    """Seconds until a broadcast from ``a`` reaches ``b`` and ``b``'s answer reaches ``a``."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        a.send(Ether(src=a.mac, dst="ff:ff:ff:ff:ff:ff") / IP() / ICMP() / Raw(tag))
        try:
            b.receive(timeout=0.5, match=lambda p: bytes(p).endswith(tag))
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
    b.send(Ether(src=b.mac, dst=a.mac) / IP() / ICMP() / Raw(tag + b" back"))
    a.receive(timeout=5, match=lambda p: bytes(p).endswith(tag + b" back"))
    return time.monotonic() - start


def link_port(switch: SwitchProcess) -> dict[str, object]:
    (port,) = [p for p in switch.counters()["ports"].values() if p["link"] is not None]
    return port


def test_two_switches_linked_over_tcp_are_one_lan_and_relink(
    tmp_path: Path, two_netns: tuple[str, str]
) -> None:
    ns1, ns2 = two_netns
    listen = ("--stream", f"tcp:{ADDR_A}:{PORT}", "--stp-priority", "4096")
    a_switch = switch_in(ns1, tmp_path / "a", *listen)
    b_switch = switch_in(ns2, tmp_path / "b", "--stream-connect", f"tcp:{ADDR_A}:{PORT}")
    try:
        a = in_netns(ns1, lambda: attach_sync(a_switch.control_path, mac=MAC_A))
        b = in_netns(ns2, lambda: attach_sync(b_switch.control_path, mac=MAC_B))
        with b:
            with a:
                reach(a, b, b"over the link", 40)
            port = link_port(b_switch)
            link = port["link"]
            assert isinstance(link, dict) and link["state"] == "connected"
            assert link["peer"] == f"{ADDR_A}:{PORT}" and link["reconnections"] == 0
            stp = port["stp"]
            assert isinstance(stp, dict) and stp["role"] == "root" and stp["bpdus"] > 0
            with b_switch.manage() as client:
                tree = client.json("fstp/print")
            assert tree["root"].startswith("4096.") and not tree["is_root"]

            a_switch.stop(sig=signal.SIGKILL)
            a_switch = switch_in(ns1, tmp_path / "a", *listen)
            started = time.monotonic()
            deadline = started + RELINK_TIMEOUT
            while link_port(b_switch)["link"]["state"] != "connected":  # type: ignore[index]
                assert time.monotonic() < deadline, b_switch.log
                time.sleep(0.1)
            a = in_netns(ns1, lambda: attach_sync(a_switch.control_path, mac=MAC_A))
            with a:
                reach(a, b, b"relinked", 40)
            link = link_port(b_switch)["link"]
            assert isinstance(link, dict) and link["reconnections"] == 1
            assert "link lost" in b_switch.log
            assert b_switch.counters()["info"]["events"]["link_lost"] == 1
    finally:
        a_switch.stop()
        b_switch.stop()
