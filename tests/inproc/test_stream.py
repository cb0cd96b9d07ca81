"""Stream ports (``--stream``) in the real daemon, inside the test: QEMU-style clients made by
the harness (``attach(..., transport="stream")``) beside UML-style ones."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
import trio
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from umlswitch.mgmt import views
from umlswitch.ports.stream.framing import HEADER
from umlswitch.ports.stream.port import StreamPort
from umlswitch.ports.stream.spec import StreamSpec, parse_stream
from umlswitch.testing import attach, run_switch, wait_until
from umlswitch.testing.stream import stream_address

A, B, C = "02:00:00:00:5a:01", "02:00:00:00:5a:02", "02:00:00:00:5a:03"


async def test_stream_clients_and_daemon_clients_share_one_lan(tmp_path: Path) -> None:
    streams = (parse_stream(f"unix:{tmp_path}/q.sock"), parse_stream("tcp:0"))
    async with run_switch(tmp_path, streams=streams) as switch:
        unix_address, tcp_address = switch.stream_addresses
        assert unix_address == f"unix:{tmp_path}/q.sock"
        assert tcp_address.startswith("tcp:127.0.0.1:") and not tcp_address.endswith(":0")
        async with (
            attach(unix_address, mac=A, transport="stream") as a,
            attach(tcp_address, mac=B, transport="stream") as b,
            attach(switch.control_path, mac=C) as c,
        ):
            await wait_until(lambda: len(switch.switch.fabric.ports) == 3)
            await a.send(a.ether() / IP() / ICMP())  # broadcast from the unix stream client
            assert (await b.receive(match=ICMP)).src == A
            assert (await c.receive(match=ICMP)).src == A
            await b.send(b.ether(dst=A) / IP() / ICMP() / Raw(b"x" * 1400))  # A is learned
            assert len(await a.receive_bytes(match=ICMP)) == 14 + 20 + 8 + 1400
            await c.send(c.ether(dst=B) / IP() / ICMP() / Raw(b"to b"))  # so is B now
            got = await b.receive(match=ICMP)
            assert got.src == C and bytes(got[Raw]) == b"to b"
            assert await c.collect(0.2, match=ICMP) == []  # unicast, not flooded
            assert await a.collect(0.2, match=ICMP) == []
            names = {p.name.split(" ")[0]: p for p in switch.switch.fabric.ports.values()}
            docs = {d["name"]: d for d in views.ports_doc(switch.switch)["ports"]}
            unix_port = next(p for p in names.values() if "pid=" in p.name and "stream" in p.name)
            doc = docs[unix_port.name]
            assert doc["kind"] == "stream" and doc["peer"]["pid"] == os.getpid()
            tcp_doc = next(
                d for d in docs.values() if d["name"].startswith("stream") and not d["peer"]
            )
            assert tcp_doc["name"].split(" ")[1].startswith("127.0.0.1:")
            assert tcp_doc["rx_frames"] == 1 and tcp_doc["tx_frames"] == 2
        await wait_until(lambda: not switch.switch.fabric.ports)
        assert switch.mac_table() == {}
    assert not os.path.exists(f"{tmp_path}/q.sock")  # removed on exit


async def test_a_tcp_listener_is_on_loopback_unless_an_address_is_given(tmp_path: Path) -> None:
    streams = (parse_stream("tcp:0"), parse_stream("tcp:0.0.0.0:0"))
    async with run_switch(tmp_path, streams=streams) as switch:
        loopback, everywhere = (s.listener.getsockname()[0] for s in switch.switch.streams)
        assert (loopback, everywhere) == ("127.0.0.1", "0.0.0.0")


async def test_the_unix_listener_gets_mode_and_group_and_goes_on_exit(tmp_path: Path) -> None:
    path = tmp_path / "q.sock"
    async with run_switch(
        tmp_path, streams=(StreamSpec("unix", path=str(path)),), mode=0o660, group="0"
    ):
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == 0
    assert not path.exists()


async def test_a_stale_unix_stream_socket_is_reclaimed(tmp_path: Path) -> None:
    path = tmp_path / "q.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # a killed switch's socket: nobody listens
    async with (
        run_switch(tmp_path, streams=(StreamSpec("unix", path=str(path)),)) as switch,
        attach(str(path), transport="stream"),
    ):
        await wait_until(lambda: len(switch.switch.fabric.ports) == 1)


async def test_a_receiver_that_reads_slowly_gets_every_frame_whole_and_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The switch's writes to a TCP peer with a tiny window are partial: records stay whole."""
    partial_writes = 0
    keep_rest = StreamPort._keep_rest

    def counting(self: StreamPort, header: bytes, frame: bytes | memoryview, sent: int) -> None:
        nonlocal partial_writes
        partial_writes += 1
        keep_rest(self, header, frame, sent)

    monkeypatch.setattr(StreamPort, "_keep_rest", counting)
    async with run_switch(tmp_path, streams=(parse_stream("tcp:0"),), port_queue=1000) as switch:
        family, target = stream_address(switch.stream_addresses[0])
        slow = trio.socket.socket(family, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with slow:
            await slow.connect(target)
            async with attach(switch.control_path, mac=A) as a:
                # teach the switch the slow peer's MAC
                hello = bytes(Ether(src=B, dst=A) / IP() / ICMP())
                await slow.send(HEADER.pack(len(hello)) + hello)
                await a.receive(match=ICMP)
                frames = [
                    bytes(Ether(src=A, dst=B, type=0x88B5) / Raw(bytes([i]) * (50 + 7 * i)))
                    for i in range(200)
                ]
                (stream_port,) = (
                    p for p in switch.switch.fabric.ports.values() if isinstance(p, StreamPort)
                )
                # a small send buffer on the switch's side too: most writes are partial
                stream_port.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                for frame in frames:
                    await a.send(frame)
                await wait_until(lambda: stream_port.stats.queued > 0)
                data = bytearray()
                expected = sum(len(f) + 4 for f in frames)
                with trio.fail_after(10):
                    while len(data) < expected:
                        await trio.sleep(0.002)  # read slowly
                        data += await slow.recv(2048)
        got = []
        while data:
            (length,) = HEADER.unpack_from(data)
            got.append(bytes(data[4 : 4 + length]))
            del data[: 4 + length]
        assert got == frames
        assert partial_writes > 0  # the case this test is about did happen


async def test_port_remove_closes_a_stream_connection(tmp_path: Path) -> None:
    async with run_switch(tmp_path, streams=(parse_stream("tcp:0"),)) as switch:
        family, target = stream_address(switch.stream_addresses[0])
        with trio.socket.socket(family, socket.SOCK_STREAM) as peer:
            await peer.connect(target)
            await wait_until(lambda: len(switch.switch.fabric.ports) == 1)
            (port_id,) = switch.switch.fabric.ports
            detached = switch.switch.remove_port(port_id)
            assert detached is not None
            with trio.fail_after(5):
                await detached.wait()
                assert await peer.recv(10) == b""
            assert not switch.switch.fabric.ports
            assert switch.switch.remove_port(port_id) is None
