"""UDP peers (UML eth0=mcast / eth0=ucast, QEMU -netdev socket) share a segment with daemon clients.

A Python UDP socket plays the UML guest: for mcast it does what UML does (SO_REUSEADDR, bound to
group:port, joined, loopback on, sending from group port), for ucast it binds its own port and
sends to the switch's. Multicast tests run in a private network namespace (the ``netns`` fixture,
tests/netns.py) with a route for 224.0.0.0/4 on lo; the host's routing is never touched.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.integration.conftest import free_udp_port
from tests.integration.frames import BROADCAST, frame, mac
from tests.netns import ip, netns_unavailable, private_netns
from umlswitch import counters
from umlswitch.config import parse_args
from umlswitch.daemon import Switch, serve
from umlswitch.testing import (
    attach_sync,
    fence_frame,
    frames_before_fence_sync,
    wait_until,
)

pytestmark = pytest.mark.integration

GROUP = "239.192.168.1"


# --- peers --------------------------------------------------------------------------------------


class McastGuest:
    """A socket set up as UML's eth0=mcast sets up its one socket (PROTOCOLS.md §1d)."""

    def __init__(self, group: str, port: int) -> None:
        self.group = (group, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        self.sock.bind(self.group)
        mreq = socket.inet_aton(group) + socket.inet_aton("0.0.0.0")
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        self.senders: list[tuple[str, int]] = []

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.group)

    def receive_bytes(self, timeout: float = 2.0) -> bytes:
        """The next datagram; its sender goes to ``senders``."""
        self.sock.settimeout(timeout)
        data, sender = self.sock.recvfrom(65536)
        self.senders.append(sender)
        return data

    def before_fence(self, fence: bytes) -> list[tuple[bytes, tuple[str, int]]]:
        """The datagrams (and their senders) that came before ``fence``."""
        self.senders = []
        frames = frames_before_fence_sync(self.receive_bytes, fence)
        return list(zip(frames, self.senders, strict=False))  # senders has the fence's too


@pytest.fixture
def udp(sockets: list[socket.socket]) -> Callable[..., socket.socket]:
    """Factory: ``udp(port=0)``, a UDP socket on 127.0.0.1 (a ucast peer)."""

    def make(port: int = 0) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sockets.append(sock)
        sock.bind(("127.0.0.1", port))
        sock.settimeout(2)
        return sock

    return make


@pytest.fixture
def uml_mcast(sockets: list[socket.socket]) -> Callable[[int], McastGuest]:
    """Factory: ``uml_mcast(port)``, a guest on GROUP:port set up as UML's eth0=mcast."""

    def make(port: int) -> McastGuest:
        guest = McastGuest(GROUP, port)
        sockets.append(guest.sock)
        return guest

    return make


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "umlswitch", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=10,
    )


def route_multicast_on_lo() -> None:
    """In the test's own namespace: let lo carry multicast, as a host's LAN interface does."""
    ip("link", "set", "lo", "multicast", "on")
    ip("route", "add", "224.0.0.0/4", "dev", "lo")


@pytest.fixture
def mcast_netns(netns: str) -> str:
    """This test (and all it starts) runs in a private namespace where multicast works on lo."""
    route_multicast_on_lo()
    return netns


# --- mcast ---------------------------------------------------------------------------------------


def test_mcast_guests_and_daemon_clients_share_one_segment(
    mcast_netns, start_switch, ctl, uml_mcast
):
    switch = start_switch("-mcast", f"{GROUP}:41102")
    assert f"port 1 attached: mcast:{GROUP}:41102" in switch.log
    uml1, uml2 = uml_mcast(41102), uml_mcast(41102)
    with attach_sync(ctl, mac=mac(2)) as a, attach_sync(ctl, mac=mac(3)) as b:
        switch.wait_for_log("port 3 attached")
        # a guest on the group reaches every daemon client, byte for byte
        hello = frame(BROADCAST, mac(1), b"from uml1".ljust(46, b"."))
        uml1.send(hello)
        assert a.receive_bytes() == hello
        assert b.receive_bytes() == hello
        # a daemon client reaches every guest on the group, once, from the switch's own port
        reply = frame(mac(1), mac(2), b"to uml1".ljust(46, b"."))
        a.send(reply)
        fence = a.send_fence()
        for uml in (uml1, uml2):
            got = [data for data, _ in uml.before_fence(fence)]
            assert got.count(reply) == 1, got
        # unicast to mac(1), learned on the mcast port
        assert frames_before_fence_sync(b.receive_bytes, fence) == []


@pytest.mark.parametrize("options", ["", ",if=127.0.0.1,ttl=2"], ids=["defaults", "if-and-ttl"])
def test_mcast_echoes_are_not_forwarded_again(mcast_netns, start_switch, ctl, uml_mcast, options):
    switch = start_switch("-mcast", f"{GROUP}:41104{options}")
    uml = uml_mcast(41104)
    with attach_sync(ctl, mac=mac(2)) as a, attach_sync(ctl, mac=mac(3)) as b:
        switch.wait_for_log("port 3 attached")
        # The switch's own frame loops back from the group: it must not come back to the clients.
        flood = frame(BROADCAST, mac(2), b"flood".ljust(46, b"."))
        a.send(flood)
        assert uml.receive_bytes() == flood  # sent to the group: its echo is back at the switch
        # the guest's fence reaches the switch's group socket after that echo
        fence = fence_frame(mac(1))
        uml.send(fence)
        assert frames_before_fence_sync(b.receive_bytes, fence) == [flood]
        assert frames_before_fence_sync(a.receive_bytes, fence) == []
        assert uml.before_fence(fence) == []  # (the guest's own fence, looped back at once)
        # A guest's frame is not sent back to the group: the guest hears only its own loopback.
        own = frame(BROADCAST, mac(1), b"uml".ljust(46, b"."))
        uml.send(own)
        assert a.receive_bytes() == own  # the switch is done with it: a fence can follow
        fence = a.send_fence()
        assert [sender[1] for data, sender in uml.before_fence(fence) if data == own] == [41104]


# --- ucast ---------------------------------------------------------------------------------------


def test_ucast_peer_exchanges_frames_both_ways(start_switch, ctl, udp):
    peer = udp()
    peer_port = peer.getsockname()[1]
    local = free_udp_port()
    switch = start_switch("-ucast", f"{local}:127.0.0.1:{peer_port}")
    assert f"port 1 attached: ucast:{local}->127.0.0.1:{peer_port}" in switch.log
    with attach_sync(ctl) as client:
        switch.wait_for_log("port 2 attached")
        hello = frame(BROADCAST, mac(1))
        peer.sendto(hello, ("127.0.0.1", local))
        assert client.receive_bytes() == hello
        reply = frame(mac(1), mac(2))
        client.send(reply)
        assert peer.recvfrom(65536) == (reply, ("127.0.0.1", local))


def test_ucast_drops_and_logs_datagrams_from_anyone_else(start_switch, ctl, udp):
    peer, intruder = udp(), udp()
    peer_port, intruder_port = peer.getsockname()[1], intruder.getsockname()[1]
    local = free_udp_port()
    switch = start_switch("-ucast", f"{local}:127.0.0.1:{peer_port}")
    with attach_sync(ctl) as client:
        switch.wait_for_log("port 2 attached")
        intruder.sendto(frame(BROADCAST, mac(66)), ("127.0.0.1", local))
        switch.wait_for_log("wrong_source")
        assert f"from 127.0.0.1:{intruder_port}, not the peer 127.0.0.1:{peer_port}" in switch.log
        # the real peer still gets through, and its frame is the first the client gets
        peer.sendto(frame(BROADCAST, mac(1)), ("127.0.0.1", local))
        assert frames_before_fence_sync(client.receive_bytes, frame(BROADCAST, mac(1))) == []


def test_ucast_any_takes_the_first_sender_as_the_peer(start_switch, ctl, udp):
    peer, other = udp(), udp()
    peer_port = peer.getsockname()[1]
    local = free_udp_port()
    switch = start_switch("-ucast", f"{local}:any:{peer_port}")
    assert f"port 1 attached: ucast:{local}->any:{peer_port}" in switch.log
    with attach_sync(ctl) as client:
        switch.wait_for_log("port 2 attached")
        peer.sendto(frame(BROADCAST, mac(1)), ("127.0.0.1", local))
        assert client.receive_bytes() == frame(BROADCAST, mac(1))
        assert f"the peer is 127.0.0.1:{peer_port}" in switch.log
        client.send(frame(mac(1), mac(2)))
        assert peer.recv(65536) == frame(mac(1), mac(2))
        other.sendto(frame(BROADCAST, mac(3)), ("127.0.0.1", local))
        switch.wait_for_log("wrong_source")
        # the peer's fence comes through the switch's socket after the other's frame
        fence = fence_frame(mac(1))
        peer.sendto(fence, ("127.0.0.1", local))
        assert frames_before_fence_sync(client.receive_bytes, fence) == []


def test_ucast_runts_giants_and_an_absent_peer_are_not_fatal(start_switch, ctl, udp):
    local, peer_port = free_udp_port(), free_udp_port()
    switch = start_switch("-ucast", f"{local}:127.0.0.1:{peer_port}")
    with attach_sync(ctl) as client:
        switch.wait_for_log("port 2 attached")
        for _ in range(5):  # nobody listens on the peer's port yet
            client.send(frame(BROADCAST, mac(2)))
        peer = udp(peer_port)
        peer.sendto(b"\x01" * 5, ("127.0.0.1", local))
        peer.sendto(frame(BROADCAST, mac(1), b"x" * 3000), ("127.0.0.1", local))
        peer.sendto(b"", ("127.0.0.1", local))
        hello = frame(BROADCAST, mac(1))
        peer.sendto(hello, ("127.0.0.1", local))
        # hello is the first frame the client gets: the runts and the giant before it are gone
        assert frames_before_fence_sync(client.receive_bytes, hello) == []
        client.send(frame(mac(1), mac(2)))
        received = []
        with contextlib.suppress(TimeoutError):
            while frame(mac(1), mac(2)) not in received:
                received.append(peer.recv(65536))
        assert frame(mac(1), mac(2)) in received
    assert "dropped runt frame of 5 bytes" in switch.log
    assert "dropped runt frame of 0 bytes" in switch.log
    assert "dropped giant frame of 3014 bytes" in switch.log
    assert switch.process.poll() is None


async def test_ucast_drops_are_counted(tmp_path: Path, udp):
    """The counters behind the log lines, read from the daemon's live objects (in-process)."""
    peer, intruder, absent = udp(), udp(), udp()
    local, local_any = free_udp_port(), free_udp_port()
    config = parse_args(
        [
            "-unix",
            str(tmp_path / "ctl"),
            "-ucast",
            f"{local}:127.0.0.1:{peer.getsockname()[1]}",
            "-ucast",
            f"{local_any}:any:{absent.getsockname()[1]}",
        ]
    )
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            switch: Switch = await nursery.start(
                partial(serve, config, handle_signals=False, watch_stdin=False)
            )
            fixed, learning = switch.fabric.ports[1], switch.fabric.ports[2]
            intruder.sendto(frame(BROADCAST, mac(66)), ("127.0.0.1", local))
            peer.sendto(b"runt", ("127.0.0.1", local))
            peer.sendto(frame(BROADCAST, mac(1)), ("127.0.0.1", local))
            await wait_until(
                lambda: (
                    fixed.stats.rx_frames >= 2
                    and learning.stats.tx_frames + sum(learning.stats.drops.values()) >= 1
                ),
                what="the three datagrams read and the broadcast sent on",
            )
            assert fixed.stats.drops == {counters.WRONG_SOURCE: 1, counters.RUNT: 1}
            # the flooded broadcast found no peer yet on the "any" port
            assert learning.stats.drops == {counters.NO_PEER: 1}
            switch.shutdown()


# --- start-up and command line --------------------------------------------------------------------


def test_ucast_port_in_use_is_one_clear_line(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run_cli("-unix", str(tmp_path / "ctl"), "-ucast", f"{port}:127.0.0.1:9")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"-ucast {port}:127.0.0.1:9: cannot bind 0.0.0.0:{port}" in result.stderr
    assert "is in use" in result.stderr
    assert not (tmp_path / "ctl").exists()


@pytest.mark.parametrize(
    "route, spec, message",
    [
        (True, f"{GROUP}:41106,if=10.99.99.99", "is 10.99.99.99 the address of an interface"),
        (False, f"{GROUP}:41106", "ip route add 224.0.0.0/4 dev IFACE"),
    ],
    ids=["no-such-interface-address", "no-multicast-route"],
)
def test_mcast_join_failure_is_one_clear_line(tmp_path, route, spec, message):
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with private_netns():
        if route:
            route_multicast_on_lo()
        result = run_cli("-unix", str(tmp_path / "ctl"), "-mcast", spec)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"umlswitch: -mcast {GROUP}:41106")
    assert message in result.stderr


def test_help_and_bad_specs():
    result = run_cli("--help")
    assert "-mcast [GROUP:PORT" in result.stdout
    assert "-ucast LOCALPORT:REMOTEHOST:REMOTEPORT" in result.stdout
    result = run_cli("-mcast", "10.0.0.1:1102")
    assert result.returncode == 2
    assert "argument -mcast/--mcast: 10.0.0.1 is not a multicast group" in result.stderr
    result = run_cli("-ucast", "1102:127.0.0.1")
    assert result.returncode == 2
    assert "expected LOCALPORT:REMOTEHOST:REMOTEPORT" in result.stderr
