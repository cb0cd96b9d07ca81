"""End-to-end: UML guests on umlswitches in several hosts, joined by the VXLAN overlay.

Each "host" is a network namespace with one veth on a shared ethernet (a bridge in a namespace of
its own, ``Underlay``), addressed 192.168.77.N/24 with a multicast route. A switch and its UML
guests share their host's namespace (UML's data sockets are abstract unix sockets); the test
process enters each namespace in turn to start them (tests/netns.py ``entered_netns``). On the
other end of the overlay: the Linux kernel's own VXLAN device on a bridge, other umlswitches (by
peer list and by multicast group, and a full mesh that must not loop), and Debian's
``vde_plug vxvde://``. Guests are 10.0.0.N with MAC 02:00:00:00:00:0N (tests/e2e/uml.py).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from tests.netns import entered_netns, ip, netns_name, netns_unavailable
from umlswitch.mgmt.client import MgmtClient

from .test_uml_guests import assert_no_loss
from .uml import (
    BOOT_TIMEOUT,
    Guest,
    GuestPool,
    Switch,
    Switches,
    ip_for,
    mac_for,
    ping_command,
    switch_label,
)

pytestmark = pytest.mark.e2e

VNI = 42
GROUP = "239.1.1.42"
HOST_SIDE_IP = "10.0.0.254"  # the kernel bridge's or the vxvde tap's address on the overlay


def underlay_ip(host: int) -> str:
    return f"192.168.77.{host}"


class Underlay:
    """Hosts (network namespaces) on one ethernet segment: a bridge in a namespace of its own."""

    def __init__(self, count: int) -> None:
        self.lan = netns_name("umlsw-lan")
        self.hosts: list[str] = []
        ip("netns", "add", self.lan)
        try:
            ip("-n", self.lan, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
            ip("-n", self.lan, "link", "set", "br0", "up")
            for n in range(1, count + 1):
                host = netns_name("umlsw-host")
                ip("netns", "add", host)
                self.hosts.append(host)
                ip("-n", self.lan, "link", "add", f"h{n}", "type", "veth", "peer", "name", "eth0")
                ip("-n", self.lan, "link", "set", "eth0", "netns", host)
                ip("-n", self.lan, "link", "set", f"h{n}", "master", "br0", "up")
                ip("-n", host, "link", "set", "lo", "up")
                ip("-n", host, "addr", "add", f"{underlay_ip(n)}/24", "dev", "eth0")
                ip("-n", host, "link", "set", "eth0", "up")
                ip("-n", host, "route", "add", "224.0.0.0/4", "dev", "eth0")
        except BaseException:
            self.close()
            raise

    def host(self, n: int) -> str:
        """The namespace of host ``n`` (1-based)."""
        return self.hosts[n - 1]

    def close(self) -> None:
        for name in [*self.hosts, self.lan]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@pytest.fixture
def underlay() -> Iterator[Any]:
    """Factory: ``underlay(count)``, hosts 1..count on one segment; deleted at teardown."""
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    if switch_label() != "umlswitch":
        pytest.skip(f"{switch_label()} has no VXLAN overlay")
    made: list[Underlay] = []

    def make(count: int) -> Underlay:
        made.append(Underlay(count))
        return made[-1]

    yield make
    for each in made:
        each.close()


def start_switch(switch: Switches, host: str, *args: str) -> Switch:
    """A umlswitch in namespace ``host``."""
    with entered_netns(host):
        return switch(False, *args)


def boot(pool: GuestPool, placed: Sequence[tuple[str, Switch, Sequence[str]]]) -> list[Guest]:
    """Boot one guest per (host namespace, switch, commands), in parallel; each waits for all."""
    first = len(pool.guests) + 1
    names = [f"g{first + i}" for i in range(len(placed))]
    batch = []
    for index, (host, sw, commands) in enumerate(placed, first):
        guest = Guest(index, pool.workdir, pool.uml_dir, sw.ctl, commands, names)
        pool.guests.append(guest)  # the pool takes it down at teardown
        batch.append(guest)
        with entered_netns(host):
            guest.start()
    for guest in batch:
        guest.wait_up(BOOT_TIMEOUT)
    return batch


def host_ping(host: str, target: str) -> None:
    with entered_netns(host):
        result = subprocess.run(
            ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", target],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 0 and " 0% packet loss" in result.stdout, (
        result.stdout + result.stderr
    )


def overlay_port(sw: Switch) -> Any:
    """The switch's first port (the overlay: it is opened at start-up) as management shows it."""
    with MgmtClient(f"{sw.ctl}.mgmt") as mgmt:
        return mgmt.json("port/print 1")["ports"][0]


def pings_to_the_others(count: int) -> list[list[str]]:
    return [
        [ping_command(ip_for(j)) for j in range(1, count + 1) if j != i]
        for i in range(1, count + 1)
    ]


def test_guest_and_linux_kernel_vxlan_ping_each_other(
    underlay: Any, switch: Switches, guests: GuestPool
) -> None:
    hosts = underlay(2)
    a, b = hosts.host(1), hosts.host(2)
    sw = start_switch(switch, a, "--vxlan", f"{VNI}@{underlay_ip(2)}")
    # host B: the kernel's VXLAN device (static remote A, as an all-zeros FDB entry) on a bridge
    ip(
        *("-n", b, "link", "add", "vx0", "type", "vxlan", "id", str(VNI), "dstport", "4789"),
        *("remote", underlay_ip(1), "local", underlay_ip(2), "dev", "eth0"),
    )
    ip("-n", b, "link", "add", "br0", "type", "bridge")
    ip("-n", b, "link", "set", "vx0", "master", "br0", "up")
    ip("-n", b, "addr", "add", f"{HOST_SIDE_IP}/24", "dev", "br0")
    ip("-n", b, "link", "set", "br0", "up")

    (g1,) = boot(guests, [(a, sw, [ping_command(HOST_SIDE_IP)])])
    assert_no_loss(g1.result(0))
    host_ping(b, g1.ip)

    # the kernel learned the guest behind our switch; we learned the bridge behind the kernel
    fdb = subprocess.run(
        ["bridge", "-n", b, "fdb", "show", "dev", "vx0"], capture_output=True, text=True
    )
    assert f"{g1.mac} dst {underlay_ip(1)}" in fdb.stdout, fdb.stdout
    bridge_mac = ip("-n", b, "-br", "link", "show", "br0").split()[2]
    port = overlay_port(sw)
    [(vtep, macs)] = port["vteps"].items()
    assert vtep == f"{underlay_ip(2)}:4789" and bridge_mac in macs
    assert not any(port["drops"].values()), port["drops"]
    sw.check_alive()


def test_three_switches_on_a_multicast_group(
    underlay: Any, switch: Switches, guests: GuestPool
) -> None:
    hosts = underlay(3)
    switches = [start_switch(switch, hosts.host(n), "--vxlan", f"{VNI}@{GROUP}") for n in (1, 2, 3)]
    placed = [
        (hosts.host(n), sw, pings)
        for n, sw, pings in zip((1, 2, 3), switches, pings_to_the_others(3), strict=True)
    ]
    for guest in boot(guests, placed):
        for result in guest.results():
            assert_no_loss(result)
    for n, sw in enumerate(switches, 1):
        vteps = overlay_port(sw)["vteps"]
        expected = {f"{underlay_ip(m)}:4789": [mac_for(m)] for m in (1, 2, 3) if m != n}
        assert vteps == expected
        sw.check_alive()


def test_full_unicast_mesh_does_not_loop(
    underlay: Any, switch: Switches, guests: GuestPool
) -> None:
    hosts = underlay(3)
    switches = []
    for n in (1, 2, 3):
        peers = "+".join(underlay_ip(m) for m in (1, 2, 3) if m != n)
        switches.append(start_switch(switch, hosts.host(n), "--vxlan", f"{VNI}@{peers}"))
    placed = [
        (hosts.host(n), sw, pings)
        for n, sw, pings in zip((1, 2, 3), switches, pings_to_the_others(3), strict=True)
    ]
    for guest in boot(guests, placed):
        for result in guest.results():
            assert_no_loss(result)
    # Each guest sent 6 echo requests and a few ARP (and IPv6) frames: a forwarding loop would
    # have sent each broadcast round the mesh for ever, thousands of frames per second.
    for sw in switches:
        port = overlay_port(sw)
        assert port["rx_frames"] < 200 and port["tx_frames"] < 200, port
        assert len(port["vteps"]) == 2
        assert "moved here" not in sw.log_path.read_text()
        sw.check_alive()


@pytest.mark.skipif(shutil.which("vde_plug") is None, reason="needs vde_plug (Debian vdeplug)")
def test_vde_plug_vxvde_reaches_a_guest(underlay: Any, switch: Switches, guests: GuestPool) -> None:
    hosts = underlay(2)
    a, b = hosts.host(1), hosts.host(2)
    sw = start_switch(switch, a, "--vxvde")
    ip("-n", b, "tuntap", "add", "vtap0", "mode", "tap")
    ip("-n", b, "addr", "add", f"{HOST_SIDE_IP}/24", "dev", "vtap0")
    ip("-n", b, "link", "set", "vtap0", "up")
    with entered_netns(b):
        plug = subprocess.Popen(
            ["vde_plug", "vxvde://239.0.0.1", "tap://vtap0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        (g1,) = boot(guests, [(a, sw, [ping_command(HOST_SIDE_IP)])])
        assert_no_loss(g1.result(0))
        host_ping(b, g1.ip)
        tap_mac = ip("-n", b, "-br", "link", "show", "vtap0").split()[2]
        [(vtep, macs)] = overlay_port(sw)["vteps"].items()
        assert vtep.startswith(f"{underlay_ip(2)}:") and macs == [tap_mac]
    finally:
        plug.terminate()
        try:
            plug.wait(5)
        except subprocess.TimeoutExpired:
            plug.kill()
            plug.wait(5)
    sw.check_alive()
