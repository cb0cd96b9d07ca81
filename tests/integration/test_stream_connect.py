"""``--stream-connect``: the switch connects to a stream listener (here the test's own, speaking
QEMU's framing as passt or another switch's ``--stream`` does), forwards both ways, and when the
peer goes away keeps the port number, says ``retrying in N s`` in ``port/print``, and
reconnects once the peer listens again; ``port/remove`` ends the link."""

from __future__ import annotations

import os
import socket

import pytest
import trio
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from umlswitch.fabric.vlan import Membership
from umlswitch.mgmt.views import port_lines, ports_doc
from umlswitch.ports.stream.framing import HEADER
from umlswitch.ports.stream.spec import parse_stream_connect
from umlswitch.testing import attach, run_switch, wait_until
from umlswitch.testing.switch import RunningSwitch

pytestmark = pytest.mark.integration

PEER = "02:00:00:00:5d:01"  # behind the listener
LOCAL = "02:00:00:00:5d:02"  # a daemon client of the switch


async def read_record(conn: trio.socket.SocketType, buffer: bytearray) -> bytes:
    """The next frame the switch sends on ``conn`` (4-byte length, then the frame)."""
    while True:
        if len(buffer) >= 4:
            (length,) = HEADER.unpack_from(buffer)
            if len(buffer) >= 4 + length:
                frame = bytes(buffer[4 : 4 + length])
                del buffer[: 4 + length]
                return frame
        data = await conn.recv(65536)
        assert data, "the switch closed the link"
        buffer += data


async def read_frame_from(conn: trio.socket.SocketType, src: str, buffer: bytearray) -> bytes:
    with trio.fail_after(5):
        while True:
            frame = await read_record(conn, buffer)
            if Ether(frame).src == src:
                return frame


def link_doc(switch: RunningSwitch, port_id: int) -> dict[str, object]:
    """The link's part of port/print; empty while one of its ports leaves and the next one is
    attached (the data plane applies the two one after the other)."""
    if port_id not in switch.switch.fabric.ports:
        return {}
    (doc,) = ports_doc(switch.switch, port_id)["ports"]
    link: dict[str, object] = doc["link"]
    return link


async def exchange(switch: RunningSwitch, conn: trio.socket.SocketType, tag: bytes) -> None:
    """A frame each way between the listener's side and a daemon client."""
    buffer = bytearray()
    async with attach(switch.control_path, mac=LOCAL) as local:
        out = bytes(Ether(src=PEER, dst="ff:ff:ff:ff:ff:ff") / IP() / ICMP() / Raw(tag))
        await conn.send(HEADER.pack(len(out)) + out)
        got = await local.receive(match=lambda p: bytes(p).endswith(tag), timeout=5)
        assert got.src == PEER
        await local.send(local.ether(dst=PEER) / IP() / ICMP() / Raw(tag + b" back"))
        back = await read_frame_from(conn, LOCAL, buffer)
        assert back.endswith(tag + b" back") and Ether(back).dst == PEER


async def test_a_link_forwards_keeps_its_number_and_reconnects(tmp_path) -> None:
    path = tmp_path / "peer.sock"
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(str(path))
    listener.listen()
    spec = parse_stream_connect(f"unix:{path}")
    async with run_switch(tmp_path, stream_connects=(spec,)) as switch:
        (link,) = switch.switch.links
        assert link.port_id == 1
        with trio.fail_after(5):
            conn, _ = await listener.accept()
        with conn:
            await wait_until(lambda: link_doc(switch, 1).get("state") == "connected", what="up")
            await exchange(switch, conn, b"first connection")
            doc = link_doc(switch, 1)
            assert doc["reconnections"] == 0 and str(doc["peer"]).startswith(f"pid={os.getpid()} ")
            assert PEER in switch.mac_table()
        # the peer goes away: the number stays, its MACs go, port/print says it retries
        await wait_until(
            lambda: str(link_doc(switch, 1).get("state")).startswith("retrying in"), what="retrying"
        )
        assert PEER not in switch.mac_table()
        assert 1 in switch.switch.fabric.ports
        lines = port_lines(ports_doc(switch.switch, 1))
        assert any(line.startswith(f" link unix:{path} retrying in ") for line in lines), lines
        with trio.fail_after(10):  # back-off 1 s, then 2 s
            conn, _ = await listener.accept()
        with conn:
            await wait_until(lambda: link_doc(switch, 1).get("state") == "connected", what="again")
            assert link_doc(switch, 1)["reconnections"] == 1
            await exchange(switch, conn, b"second connection")
            # port/remove ends the link: no more connections
            removed = switch.switch.remove_port(1)
            assert removed is not None
            with trio.fail_after(5):
                await removed.wait()
        await wait_until(lambda: link.state == "removed", what="the link removed")
        assert 1 not in switch.switch.fabric.ports
        with trio.move_on_after(2.5) as quiet:
            await listener.accept()
        assert quiet.cancelled_caught, "a removed link connected again"
    listener.close()


async def test_a_link_keeps_its_vlans_stp_and_storm_settings_across_reconnections(
    tmp_path,
) -> None:
    path = tmp_path / "peer.sock"
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(str(path))
    listener.listen()
    spec = parse_stream_connect(f"unix:{path}")
    name = f"stream-connect:unix:{path}"
    async with run_switch(
        tmp_path, stream_connects=(spec,), vlans=((name, Membership(7)),), stp=True
    ) as switch:
        vlans = switch.switch.fabric.vlans
        guard = switch.switch.guard
        assert guard.stp is not None
        assert vlans.membership(1) == Membership(7)
        assert not guard.stp.ports[1].edge  # a link takes part in the spanning tree
        for connection in range(3):
            with trio.fail_after(10):
                conn, _ = await listener.accept()
            await wait_until(lambda: link_doc(switch, 1).get("state") == "connected", what="up")
            assert vlans.membership(1) == Membership(7)
            if connection == 0:  # as the console's fstp/setcost and port/setstormlimit do
                guard.stp.set_port(1, switch.switch.fabric.now, cost=42)
                guard.set_storm_limit(1, 500)
            else:
                assert guard.stp.ports[1].cost == 42 and guard.storm_limit(1) == 500
            conn.close()
            await wait_until(
                lambda: link_doc(switch, 1).get("state") not in (None, "connected"), what="down"
            )
            # the port that holds the number while the link is down is attached in the link's
            # VLAN by the data plane a moment after the state says so
            await wait_until(lambda: vlans.membership(1) == Membership(7), what="VLAN 7 kept")
            assert guard.stp.ports[1].cost == 42 and guard.storm_limit(1) == 500
    listener.close()


async def test_a_tcp_link_to_an_ipv6_address(tmp_path) -> None:
    listener = trio.socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        await listener.bind(("::1", 0))
    except OSError as exc:
        listener.close()
        pytest.skip(f"no IPv6 loopback: {exc.strerror}")
    listener.listen()
    port = listener.getsockname()[1]
    spec = parse_stream_connect(f"tcp:[::1]:{port}")
    async with run_switch(tmp_path, stream_connects=(spec,)) as switch:
        with trio.fail_after(5):
            conn, _ = await listener.accept()
        with conn:
            await wait_until(lambda: link_doc(switch, 1).get("state") == "connected", what="up")
            doc = link_doc(switch, 1)
            assert doc["target"] == f"tcp:[::1]:{port}"
            assert doc["peer"] == f"[::1]:{port}"
            await exchange(switch, conn, b"over IPv6")
    listener.close()
