"""VXLAN overlay ports (--vxlan, --vxvde) of the real daemon, with Python sockets as remote VTEPs.

The unicast tests need only loopback: the switch listens on 127.0.0.1 and its peers are sockets
bound to 127.0.0.2 and 127.0.0.3 on the same UDP port. The vxvde test runs in a private network
namespace with a multicast route on lo (tests/netns.py), where a Python socket pair plays a
vdeplug4 endpoint. Counters and the VTEP listing are read from the management socket.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.client import Client, frame, mac
from tests.netns import ip
from umlswitch import counters
from umlswitch.fabric.frame import format_mac
from umlswitch.mgmt.client import MgmtClient
from umlswitch.ports.overlay.wire import pack_header

pytestmark = pytest.mark.integration

BROADCAST = b"\xff" * 6
VXVDE_GROUP = "239.0.0.1"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def udp(sockets: list[socket.socket]) -> Callable[[str, int], socket.socket]:
    """Factory: ``udp(host, port)``, a UDP socket bound there (a remote VTEP)."""

    def make(host: str, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sockets.append(sock)
        sock.bind((host, port))
        sock.settimeout(2)
        return sock

    return make


def recv_all(sock: socket.socket, quiet: float = 0.3) -> list[tuple[bytes, tuple[str, int]]]:
    """Every datagram (and its sender) until nothing has come for ``quiet`` seconds."""
    got = []
    sock.settimeout(quiet)
    while len(got) < 100:
        try:
            got.append(sock.recvfrom(65536))
        except TimeoutError:
            break
    return got


def port_doc(ctl: str, port: int) -> Any:
    with MgmtClient(ctl + ".mgmt") as mgmt:
        return mgmt.json(f"port/print {port}")["ports"][0]


# --- --vxlan with a peer list --------------------------------------------------------------------


def test_vxlan_peers_flood_learn_and_unicast(start_daemon, ctl, udp):
    port = free_udp_port()
    daemon = start_daemon("-unix", ctl, "--vxlan", f"42@127.0.0.2+127.0.0.3:{port},local=127.0.0.1")
    assert f"port 1 attached: vxlan:42@127.0.0.2+127.0.0.3:{port}" in daemon.log
    peer2, peer3 = udp("127.0.0.2", port), udp("127.0.0.3", port)
    switch = ("127.0.0.1", port)
    header = pack_header(42)
    with Client(ctl) as client:
        daemon.wait_for("port 2 attached")
        # broadcast: one datagram to every peer (head-end replication), from the VXLAN port
        hello = frame(BROADCAST, mac(1))
        client.send(hello)
        assert peer2.recvfrom(65536) == (header + hello, switch)
        assert peer3.recvfrom(65536) == (header + hello, switch)
        # a peer's frame reaches the client; its source is learned behind that peer only
        reply = frame(mac(1), mac(2))
        peer2.sendto(header + reply, switch)
        assert client.recv() == reply
        back = frame(mac(2), mac(1), b"back".ljust(46, b"."))
        client.send(back)
        assert peer2.recvfrom(65536) == (header + back, switch)
        assert recv_all(peer3) == []
        # unknown unicast goes to every peer again
        unknown = frame(mac(9), mac(1))
        client.send(unknown)
        assert [data for data, _ in recv_all(peer2)] == [header + unknown]
        assert [data for data, _ in recv_all(peer3)] == [header + unknown]

        # what is not a frame of this segment is dropped, counted and logged
        intruder = udp("127.0.0.4", 0)
        intruder.sendto(header + frame(BROADCAST, mac(66)), switch)
        peer2.sendto(pack_header(43) + frame(BROADCAST, mac(2)), switch)
        peer2.sendto(b"\x08\0\0", switch)
        peer2.sendto(b"\x0c" + header[1:] + frame(BROADCAST, mac(2)), switch)
        peer2.sendto(header + frame(BROADCAST, mac(2), b"x" * 3000), switch)
        daemon.wait_for("(vxlan_bad_flags)")
        assert client.recv_all() == []
        doc = port_doc(ctl, 1)
        assert doc["kind"] == "vxlan"
        drops = {reason: n for reason, n in doc["drops"].items() if n}
        assert drops == {
            counters.WRONG_SOURCE: 1,
            counters.VXLAN_WRONG_VNI: 1,
            counters.VXLAN_SHORT: 1,
            counters.VXLAN_BAD_FLAGS: 1,
            counters.GIANT: 1,
        }
        # the management console lists the peers and the MACs behind each
        assert doc["vteps"] == {
            f"127.0.0.2:{port}": [format_mac(mac(2))],
            f"127.0.0.3:{port}": [],
        }
    log = daemon.log
    assert "not a peer of 127.0.0.2+127.0.0.3 (wrong_source)" in log
    assert f"VNI 43 (UDP port {port} carries VNI 42) (vxlan_wrong_vni)" in log
    assert f"{format_mac(mac(2))} is behind VTEP 127.0.0.2:{port}" in log
    with MgmtClient(ctl + ".mgmt") as mgmt:
        text = "\n".join(mgmt.run("port/print 1").lines or ())
    assert f"VTEP 127.0.0.2:{port}: 1 MAC(s)\n  {format_mac(mac(2))}" in text


def test_segments_on_one_udp_port_share_a_socket(start_daemon, ctl, udp):
    port = free_udp_port()
    daemon = start_daemon(
        "-unix",
        ctl,
        "--vxlan",
        f"42@127.0.0.2:{port},local=127.0.0.1",
        "--vxlan",
        f"43@127.0.0.3:{port},local=127.0.0.1",
    )
    peer2, peer3 = udp("127.0.0.2", port), udp("127.0.0.3", port)
    switch = ("127.0.0.1", port)
    with Client(ctl) as client:
        daemon.wait_for("port 3 attached")
        for vni, peer, n in ((42, peer2, 2), (43, peer3, 3)):
            peer.sendto(pack_header(vni) + frame(BROADCAST, mac(n)), switch)
            assert client.recv() == frame(BROADCAST, mac(n))
        # VNI 43 from segment 42's peer: it is not a peer of 43's
        peer2.sendto(pack_header(43) + frame(BROADCAST, mac(2)), switch)
        # the segment that reads the socket goes; the other one reads it from then on
        with MgmtClient(ctl + ".mgmt") as mgmt:
            mgmt.run("port/remove 1")
        daemon.wait_for("port 1 (vxlan:42@")
        peer3.sendto(pack_header(43) + frame(BROADCAST, mac(3)), switch)
        assert client.recv() == frame(BROADCAST, mac(3))
        peer2.sendto(pack_header(42) + frame(BROADCAST, mac(2)), switch)
        daemon.wait_for("(vxlan_wrong_vni)")
        assert client.recv_all() == []
        drops = port_doc(ctl, 2)["drops"]
        assert (drops[counters.WRONG_SOURCE], drops[counters.VXLAN_WRONG_VNI]) == (1, 1)


def test_remote_entries_age_with_the_switch(start_daemon, ctl, udp):
    port = free_udp_port()
    start_daemon("-unix", ctl, "--aging", "1", "--vxlan", f"42@127.0.0.2:{port},local=127.0.0.1")
    peer = udp("127.0.0.2", port)
    peer.sendto(pack_header(42) + frame(BROADCAST, mac(2)), ("127.0.0.1", port))
    vtep = f"127.0.0.2:{port}"
    deadline = time.monotonic() + 10
    while port_doc(ctl, 1)["vteps"] != {vtep: [format_mac(mac(2))]}:
        assert time.monotonic() < deadline, port_doc(ctl, 1)
        time.sleep(0.05)
    while port_doc(ctl, 1)["vteps"] != {vtep: []}:  # forgotten after --aging, as local MACs
        assert time.monotonic() < deadline, port_doc(ctl, 1)
        time.sleep(0.2)
    assert port_doc(ctl, 1)["macs"] == 0


# --- --vxvde -------------------------------------------------------------------------------------


class VxvdeEndpoint:
    """The two sockets of a vdeplug4 vxvde endpoint (PROTOCOLS.md §1e)."""

    def __init__(self, group: str, port: int) -> None:
        self.group = (group, port)
        self.mcast = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.mcast.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.mcast.bind(self.group)
        mreq = socket.inet_aton(group) + socket.inet_aton("0.0.0.0")
        self.mcast.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        self.uni = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Bound to 127.0.0.1: on lo, multicast from an unbound socket has the source 0.0.0.0.
        self.uni.bind(("127.0.0.1", 0))
        self.address = ("127.0.0.1", self.uni.getsockname()[1])

    def close(self) -> None:
        self.mcast.close()
        self.uni.close()


@pytest.fixture
def vxvde_netns(netns: str) -> str:
    """A private namespace where lo carries multicast."""
    ip("link", "set", "lo", "multicast", "on")
    ip("route", "add", "224.0.0.0/4", "dev", "lo")
    return netns


def test_vxvde_learns_endpoints_and_honours_goodbyes(vxvde_netns, start_daemon, ctl):
    port = free_udp_port()
    daemon = start_daemon("-unix", ctl, "--vxvde", f"{VXVDE_GROUP},port={port},vni=5")
    assert f"port 1 attached: vxvde:5@{VXVDE_GROUP}:{port}" in daemon.log
    header = pack_header(5)
    endpoint = VxvdeEndpoint(VXVDE_GROUP, port)
    try:
        with Client(ctl) as client:
            daemon.wait_for("port 2 attached")
            # a broadcast goes to the group, from the switch's own (peer) port
            hello = frame(BROADCAST, mac(1))
            client.send(hello)
            [(data, switch)] = recv_all(endpoint.mcast)
            assert data == header + hello and switch[1] != port
            # the endpoint answers unicast, as vxvde does once it has learned
            endpoint.uni.sendto(header + frame(mac(1), mac(2)), switch)
            assert client.recv() == frame(mac(1), mac(2))
            # now the switch knows where mac(2) is: unicast to the endpoint's own port
            client.send(frame(mac(2), mac(1)))
            [(data, sender)] = recv_all(endpoint.uni)
            assert data == header + frame(mac(2), mac(1)) and sender[1] == switch[1]
            assert recv_all(endpoint.mcast) == []
            doc = port_doc(ctl, 1)
            vtep = f"{endpoint.address[0]}:{endpoint.address[1]}"
            assert doc["vteps"] == {vtep: [format_mac(mac(2))]}
            assert doc["drops"][counters.OWN_ECHO] == 1  # our broadcast, looped back
            # the endpoint leaves: what was behind it is forgotten, mac(2) is flooded again
            endpoint.uni.sendto(header, endpoint.group)
            daemon.wait_for(f"{vtep} left (goodbye); forgot 1 MAC(s)")
            assert port_doc(ctl, 1)["vteps"] == {}
            client.send(frame(mac(2), mac(1)))
            from_switch = [data for data, src in recv_all(endpoint.mcast) if src[1] == switch[1]]
            assert from_switch == [header + frame(mac(2), mac(1))]  # (and our own goodbye)
            # another network on the same group and port is not ours
            endpoint.uni.sendto(pack_header(6) + frame(BROADCAST, mac(3)), endpoint.group)
            daemon.wait_for("VNI 6, not 5 (vxlan_wrong_vni)")
            assert client.recv_all() == []
        # the switch says goodbye when it stops
        assert daemon.stop() == 0
        assert (header, switch[1]) in [
            (data, sender[1]) for data, sender in recv_all(endpoint.mcast)
        ]
    finally:
        endpoint.close()


# --- start-up and command line -------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "umlswitch", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=10,
    )


def test_vxlan_port_in_use_is_one_clear_line(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run_cli(
            "-unix", str(tmp_path / "ctl"), "--vxlan", f"42@127.0.0.2:{port},local=127.0.0.1"
        )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"--vxlan 42@127.0.0.2:{port},local=127.0.0.1: cannot bind 127.0.0.1:{port}" in (
        result.stderr
    )
    assert "(by a VXLAN device of this host (ip -d link show type vxlan)" in result.stderr
    assert not (tmp_path / "ctl").exists()


def test_help_and_bad_specs():
    result = run_cli("--help")
    assert "--vxlan VNI@DEST[:PORT][,local=ADDR][,ttl=N]" in result.stdout
    assert "--vxvde [GROUP[,port=N][,vni=N][,ttl=N]]" in result.stdout
    result = run_cli("--vxlan", "42@10.0.0.2,10.0.0.3")
    assert result.returncode == 2
    assert "argument --vxlan: '42@10.0.0.2,10.0.0.3': expected local=... or ttl=..." in (
        result.stderr
    )
