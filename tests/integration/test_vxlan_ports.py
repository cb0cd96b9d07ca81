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
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.conftest import free_udp_port
from tests.integration.frames import BROADCAST, frame, mac
from tests.netns import ip
from umlswitch import counters
from umlswitch.fabric.frame import format_mac
from umlswitch.mgmt.client import MgmtClient
from umlswitch.ports.overlay.wire import pack_header
from umlswitch.testing import attach_sync, fence_frame, frames_before_fence_sync, wait_until_sync

pytestmark = pytest.mark.integration

VXVDE_GROUP = "239.0.0.1"


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


def before_fence(sock: socket.socket, fence: bytes) -> list[tuple[bytes, tuple[str, int]]]:
    """The datagrams (and their senders) that reach ``sock`` before ``fence`` (the fence frame
    as ``sock`` gets it: with its VXLAN header)."""
    senders = []

    def receive(timeout: float) -> bytes:
        sock.settimeout(timeout)
        data, sender = sock.recvfrom(65536)
        senders.append(sender)
        return data

    return list(zip(frames_before_fence_sync(receive, fence), senders, strict=False))


def port_doc(ctl: str, port: int) -> Any:
    with MgmtClient(ctl + ".mgmt") as mgmt:
        return mgmt.json(f"port/print {port}")["ports"][0]


# --- --vxlan with a peer list --------------------------------------------------------------------


def test_vxlan_peers_flood_learn_and_unicast(start_switch, ctl, udp):
    port = free_udp_port()
    switch_process = start_switch("--vxlan", f"42@127.0.0.2+127.0.0.3:{port},local=127.0.0.1")
    assert f"port 1 attached: vxlan:42@127.0.0.2+127.0.0.3:{port}" in switch_process.log
    peer2, peer3 = udp("127.0.0.2", port), udp("127.0.0.3", port)
    switch = ("127.0.0.1", port)
    header = pack_header(42)
    with attach_sync(ctl, mac=mac(1)) as client:
        switch_process.wait_for_log("port 2 attached")
        # broadcast: one datagram to every peer (head-end replication), from the VXLAN port
        hello = frame(BROADCAST, mac(1))
        client.send(hello)
        assert peer2.recvfrom(65536) == (header + hello, switch)
        assert peer3.recvfrom(65536) == (header + hello, switch)
        # a peer's frame reaches the client; its source is learned behind that peer only
        reply = frame(mac(1), mac(2))
        peer2.sendto(header + reply, switch)
        assert client.receive_bytes() == reply
        back = frame(mac(2), mac(1), b"back".ljust(46, b"."))
        client.send(back)
        assert peer2.recvfrom(65536) == (header + back, switch)
        fence = header + client.send_fence()  # flooded to both peers
        assert before_fence(peer2, fence) == []
        assert before_fence(peer3, fence) == []
        # unknown unicast goes to every peer again
        unknown = frame(mac(9), mac(1))
        client.send(unknown)
        fence = header + client.send_fence()
        assert [data for data, _ in before_fence(peer2, fence)] == [header + unknown]
        assert [data for data, _ in before_fence(peer3, fence)] == [header + unknown]

        # what is not a frame of this segment is dropped, counted and logged
        intruder = udp("127.0.0.4", 0)
        intruder.sendto(header + frame(BROADCAST, mac(66)), switch)
        peer2.sendto(pack_header(43) + frame(BROADCAST, mac(2)), switch)
        peer2.sendto(b"\x08\0\0", switch)
        peer2.sendto(b"\x0c" + header[1:] + frame(BROADCAST, mac(2)), switch)
        peer2.sendto(header + frame(BROADCAST, mac(2), b"x" * 3000), switch)
        # peer2's fence reaches the switch's socket after all of them
        fence = fence_frame(mac(2))
        peer2.sendto(header + fence, switch)
        assert frames_before_fence_sync(client.receive_bytes, fence) == []
        switch_process.wait_for_log("(vxlan_bad_flags)")
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
    log = switch_process.log
    assert "not a peer of 127.0.0.2+127.0.0.3 (wrong_source)" in log
    assert f"VNI 43 (UDP port {port} carries VNI 42) (vxlan_wrong_vni)" in log
    assert f"{format_mac(mac(2))} is behind VTEP 127.0.0.2:{port}" in log
    with MgmtClient(ctl + ".mgmt") as mgmt:
        text = "\n".join(mgmt.run("port/print 1").lines or ())
    assert f"VTEP 127.0.0.2:{port}: 1 MAC(s)\n  {format_mac(mac(2))}" in text


def test_segments_on_one_udp_port_share_a_socket(start_switch, ctl, udp):
    port = free_udp_port()
    switch_process = start_switch(
        "--vxlan",
        f"42@127.0.0.2:{port},local=127.0.0.1",
        "--vxlan",
        f"43@127.0.0.3:{port},local=127.0.0.1",
    )
    peer2, peer3 = udp("127.0.0.2", port), udp("127.0.0.3", port)
    switch = ("127.0.0.1", port)
    with attach_sync(ctl) as client:
        switch_process.wait_for_log("port 3 attached")
        for vni, peer, n in ((42, peer2, 2), (43, peer3, 3)):
            peer.sendto(pack_header(vni) + frame(BROADCAST, mac(n)), switch)
            assert client.receive_bytes() == frame(BROADCAST, mac(n))
        # VNI 43 from segment 42's peer: it is not a peer of 43's
        peer2.sendto(pack_header(43) + frame(BROADCAST, mac(2)), switch)
        # the segment that reads the socket goes; the other one reads it from then on
        with MgmtClient(ctl + ".mgmt") as mgmt:
            mgmt.run("port/remove 1")
        switch_process.wait_for_log("port 1 (vxlan:42@")
        peer3.sendto(pack_header(43) + frame(BROADCAST, mac(3)), switch)
        assert client.receive_bytes() == frame(BROADCAST, mac(3))
        peer2.sendto(pack_header(42) + frame(BROADCAST, mac(2)), switch)
        switch_process.wait_for_log("(vxlan_wrong_vni)")
        # peer3's fence comes through the shared socket after peer2's frame
        fence = fence_frame(mac(3))
        peer3.sendto(pack_header(43) + fence, switch)
        assert frames_before_fence_sync(client.receive_bytes, fence) == []
        drops = port_doc(ctl, 2)["drops"]
        assert (drops[counters.WRONG_SOURCE], drops[counters.VXLAN_WRONG_VNI]) == (1, 1)


def test_remote_entries_age_with_the_switch(start_switch, ctl, udp):
    port = free_udp_port()
    start_switch("--aging", "1", "--vxlan", f"42@127.0.0.2:{port},local=127.0.0.1")
    peer = udp("127.0.0.2", port)
    peer.sendto(pack_header(42) + frame(BROADCAST, mac(2)), ("127.0.0.1", port))
    vtep = f"127.0.0.2:{port}"
    wait_until_sync(
        lambda: port_doc(ctl, 1)["vteps"] == {vtep: [format_mac(mac(2))]},
        10,
        f"{format_mac(mac(2))} learned behind {vtep}",
    )
    # forgotten after --aging, as local MACs
    wait_until_sync(lambda: port_doc(ctl, 1)["vteps"] == {vtep: []}, 10, "the entry aging out")
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


def test_vxvde_learns_endpoints_and_honours_goodbyes(vxvde_netns, start_switch, ctl):
    port = free_udp_port()
    switch_process = start_switch("--vxvde", f"{VXVDE_GROUP},port={port},vni=5")
    assert f"port 1 attached: vxvde:5@{VXVDE_GROUP}:{port}" in switch_process.log
    header = pack_header(5)
    endpoint = VxvdeEndpoint(VXVDE_GROUP, port)
    try:
        with attach_sync(ctl, mac=mac(1)) as client:
            switch_process.wait_for_log("port 2 attached")
            # a broadcast goes to the group, from the switch's own (peer) port
            hello = frame(BROADCAST, mac(1))
            client.send(hello)
            endpoint.mcast.settimeout(2)
            data, switch = endpoint.mcast.recvfrom(65536)
            assert data == header + hello and switch[1] != port
            # the endpoint answers unicast, as vxvde does once it has learned
            endpoint.uni.sendto(header + frame(mac(1), mac(2)), switch)
            assert client.receive_bytes() == frame(mac(1), mac(2))
            # now the switch knows where mac(2) is: unicast to the endpoint's own port
            client.send(frame(mac(2), mac(1)))
            fence = header + client.send_fence(dst=mac(2))  # the same way, after it
            [(data, sender)] = before_fence(endpoint.uni, fence)
            assert data == header + frame(mac(2), mac(1)) and sender[1] == switch[1]
            # and nothing more to the group: no second hello, no copy of the unicast
            fence = header + client.send_fence()
            assert before_fence(endpoint.mcast, fence) == []
            doc = port_doc(ctl, 1)
            vtep = f"{endpoint.address[0]}:{endpoint.address[1]}"
            assert doc["vteps"] == {vtep: [format_mac(mac(2))]}
            # the endpoint leaves: what was behind it is forgotten, mac(2) is flooded again
            endpoint.uni.sendto(header, endpoint.group)
            switch_process.wait_for_log(f"{vtep} left (goodbye); forgot 1 MAC(s)")
            # the goodbye reached the switch's group socket after the echoes of its broadcasts
            doc = port_doc(ctl, 1)
            assert doc["drops"][counters.OWN_ECHO] == 2  # hello and the fence, looped back
            assert doc["vteps"] == {}
            client.send(frame(mac(2), mac(1)))
            fence = header + client.send_fence()
            from_switch = [
                data for data, src in before_fence(endpoint.mcast, fence) if src[1] == switch[1]
            ]
            assert from_switch == [header + frame(mac(2), mac(1))]  # (and our own goodbye)
            # another network on the same group and port is not ours
            endpoint.uni.sendto(pack_header(6) + frame(BROADCAST, mac(3)), endpoint.group)
            switch_process.wait_for_log("VNI 6, not 5 (vxlan_wrong_vni)")
            fence = fence_frame(mac(3))  # ours, after it, through the same socket of the switch
            endpoint.uni.sendto(header + fence, endpoint.group)
            assert frames_before_fence_sync(client.receive_bytes, fence) == []
        # the switch says goodbye when it stops
        assert switch_process.stop() == 0
        endpoint.mcast.settimeout(5)
        heard: list[tuple[bytes, int]] = []
        while (header, switch[1]) not in heard:
            data, sender = endpoint.mcast.recvfrom(65536)
            heard.append((data, sender[1]))
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
