"""The data-plane thread: its lifecycle, the command queue and barrier, crashes, and frames
through it (a burst arriving whole and in order, back-pressure and stalls across the thread).

These run the real loop in its real thread (no virtual clock), on real socket pairs: a port here
is a ``ClientPort`` on one end of a connected ``SOCK_DGRAM`` pair, the test holds the other end.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from umlswitch import dataplane
from umlswitch.config import SwitchConfig
from umlswitch.daemon import serve
from umlswitch.dataplane import DataPlaneCrashed
from umlswitch.fabric.fabric import Fabric
from umlswitch.ports.attachments import Attachments
from umlswitch.ports.base import STALL_TIMEOUT, PortClosed, ReadArea, Source
from umlswitch.ports.unix.clients import ClientPort

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
MAC_C = bytes.fromhex("020000000003")
BROADCAST = b"\xff" * 6


def frame(dst: bytes, src: bytes, payload: bytes = b"x" * 46) -> bytes:
    return dst + src + b"\x08\x00" + payload


NAMES = itertools.count()


def plane_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "umlswitch-dataplane" and t.is_alive()]


class Peer:
    """The test's end of a port's socket: bound, not connected, as a UML guest's (so the
    kernel's max_dgram_qlen bounds its queue, as for a guest)."""

    def __init__(self, sock: socket.socket, switch_side: bytes) -> None:
        self.sock = sock
        self.switch_side = switch_side
        sock.settimeout(5)

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.switch_side)

    async def recv(self) -> bytes:
        return await trio.to_thread.run_sync(self.sock.recv, 65536)

    def pending(self) -> list[bytes]:
        """What waits in the peer's queue now, without blocking."""
        got = []
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                got.append(self.sock.recv(65536))
        self.sock.settimeout(5)
        return got


@contextlib.contextmanager
def pairs(count: int) -> Iterator[list[tuple[ClientPort, Peer]]]:
    made = []
    try:
        for n in range(1, count + 1):
            tag = f"umlswitch-test-{os.getpid()}-{next(NAMES)}"
            ours_name, theirs_name = b"\0" + tag.encode() + b"-s", b"\0" + tag.encode() + b"-c"
            ours = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            theirs = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            ours.bind(ours_name)
            theirs.bind(theirs_name)
            ours.connect(theirs_name)
            ours.setblocking(False)
            made.append((ClientPort(n, f"pair:{n}", ours), Peer(theirs, ours_name)))
        yield made
    finally:
        for port, peer in made:
            port.close()
            peer.sock.close()


async def attach_all(
    nursery: trio.Nursery, attachments: Attachments, ports: list[ClientPort]
) -> dict[int, str]:
    """Attach and run each port; returns where each port's reason for ending will be put."""
    ended: dict[int, str] = {}

    async def life(port: ClientPort) -> str:
        await port.run(attachments.fabric)
        return "shutdown"

    async def run(port: ClientPort) -> None:
        ended[port.id] = await attachments.run(port, functools.partial(life, port))

    for port in ports:
        await attachments.attach(port)
        nursery.start_soon(run, port)
    plane = dataplane.plane_of(attachments.fabric)
    await trio.testing.wait_all_tasks_blocked()
    while len(plane.loop.attached()) < len(ports):  # each add_port was applied
        await trio.sleep(0.001)
    return ended


async def test_the_thread_runs_while_serving_and_is_joined_after() -> None:
    fabric = Fabric()
    assert not plane_threads()
    async with dataplane.running(fabric) as plane:
        assert plane.thread is not None and plane.thread.is_alive()
        assert plane_threads() == [plane.thread]
    assert not plane_threads()


async def test_call_runs_in_the_thread_between_rounds_and_returns_or_raises() -> None:
    async with dataplane.running(Fabric()) as plane:
        assert plane.thread is not None
        where = await plane.call(threading.get_ident)
        assert where == plane.thread.ident != threading.get_ident()
        assert await plane.call(lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(ZeroDivisionError):
            await plane.call(lambda: 1 / 0)
        # The thread lives on after a command raised: the error was the caller's.
        assert await plane.call(lambda: "still here") == "still here"


async def test_a_barrier_stops_the_thread_until_the_block_ends(nursery: trio.Nursery) -> None:
    fabric = Fabric()
    async with dataplane.running(fabric) as plane:
        with pairs(2) as made:
            (a, peer_a), (b, peer_b) = made
            await attach_all(nursery, Attachments(fabric), [a, b])
            async with plane.barrier():
                # Inside, trio is the fabric's only writer: the frame waits in A's socket.
                peer_a.send(frame(BROADCAST, MAC_A))
                await trio.sleep(0.05)
                assert a.stats.rx_frames == 0
                assert await plane.call(threading.get_ident) == threading.get_ident()  # inline
            assert await peer_b.recv() == frame(BROADCAST, MAC_A)
            assert a.stats.rx_frames == 1
            nursery.cancel_scope.cancel()


async def test_pause_stops_reading_every_socket_and_resume_reads_on(
    nursery: trio.Nursery,
) -> None:
    fabric = Fabric()
    async with dataplane.running(fabric) as plane:
        with pairs(2) as made:
            (a, peer_a), (b, peer_b) = made
            await attach_all(nursery, Attachments(fabric), [a, b])
            fds = await plane.descriptors()
            assert fds == {1: [a.sock.fileno()], 2: [b.sock.fileno()]}
            await plane.pause()
            peer_a.send(frame(BROADCAST, MAC_A))
            await trio.sleep(0.05)
            assert a.stats.rx_frames == 0 and a.sock.fileno() >= 0  # not read, not closed
            await plane.resume()
            assert await peer_b.recv() == frame(BROADCAST, MAC_A)
            nursery.cancel_scope.cancel()


async def test_a_burst_crosses_the_thread_whole_and_in_order(nursery: trio.Nursery) -> None:
    """A burst far larger than the receiver's socket queue: the backlog keeps the rest and the
    loop drains it on EPOLLOUT as the receiver reads; nothing lost, nothing reordered."""
    fabric = Fabric()
    async with dataplane.running(fabric):
        with pairs(2) as made:
            (a, peer_a), (b, peer_b) = made
            await attach_all(nursery, Attachments(fabric), [a, b])
            peer_b.send(frame(BROADCAST, MAC_B))  # B's address is learned
            assert await peer_a.recv() == frame(BROADCAST, MAC_B)
            burst = [frame(MAC_B, MAC_A, i.to_bytes(4, "big") * 12) for i in range(100)]
            for f in burst:
                peer_a.send(f)
            received = [await peer_b.recv() for _ in burst]
            assert received == burst
            assert b.stats.drops == {}
            assert b.stats.queue_high > 0  # the backlog did the work
            nursery.cancel_scope.cancel()


async def test_a_full_receiver_holds_its_sender_then_is_stalled_and_released(
    nursery: trio.Nursery,
) -> None:
    """A receiver that never reads: its backlog passes half its bound and holds the sender
    (the loop stops reading the sender's socket); STALL_TIMEOUT later it is stalled and the
    sender reads on, its frames to others unharmed."""
    fabric = Fabric(port_queue=16)
    events: list[tuple[str, dict[str, object]]] = []
    async with dataplane.running(fabric) as plane:
        plane.on_event = lambda name, **fields: events.append((name, fields))
        with pairs(3) as made:
            (a, peer_a), (b, peer_b), (c, peer_c) = made
            await attach_all(nursery, Attachments(fabric), [a, b, c])
            peer_b.send(frame(BROADCAST, MAC_B))
            peer_c.send(frame(BROADCAST, MAC_C))
            await trio.sleep(0.05)
            peer_a.pending()
            peer_b.pending()
            for i in range(60):  # far more than C's socket queue and backlog
                peer_a.send(frame(MAC_C, MAC_A, i.to_bytes(4, "big") * 12))
            with trio.fail_after(5):
                while c.stats.stalls == 0:
                    await trio.sleep(0.01)
            assert a.stats.paused >= 1
            assert ("stall", {"port": 3, "sender": 1}) in events
            peer_a.send(frame(MAC_B, MAC_A))  # A reads on: B still gets its frames
            assert await peer_b.recv() == frame(MAC_B, MAC_A)
            assert c.stats.drops["egress_full"] > 0  # a stalled receiver's backlog tail-drops
            nursery.cancel_scope.cancel()
    assert STALL_TIMEOUT < 1


async def test_a_port_whose_peer_is_gone_is_detached_through_trio(
    nursery: trio.Nursery,
) -> None:
    fabric = Fabric()
    async with dataplane.running(fabric) as plane:
        with pairs(1) as made:
            ((a, peer_a),) = made
            attachments = Attachments(fabric)
            ended = await attach_all(nursery, attachments, [a])

            # A source that reports its peer gone (as a stream port does on EOF).
            def gone() -> None:
                raise PortClosed("disconnect")

            def sources(fabric: Fabric, area: ReadArea) -> list[Source]:
                return [Source(a.sock, gone, a)]

            await plane.call(plane.loop.remove_port, a)
            a.sources = sources  # type: ignore[method-assign]
            await plane.call(plane.loop.add_port, a)
            peer_a.send(b"anything")
            with trio.fail_after(5):
                await a.detached.wait()
            assert 1 not in fabric.ports
            await trio.testing.wait_all_tasks_blocked()
            assert ended == {1: "disconnect"}


async def test_a_crash_in_the_thread_is_logged_and_ends_the_plane(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fabric = Fabric()

    def bug() -> None:
        raise RuntimeError("a bug in the data path")

    with pytest.RaisesGroup(DataPlaneCrashed, flatten_subgroups=True):
        async with dataplane.running(fabric) as plane:
            plane.apply(bug)  # posted: it runs in the thread, where nobody awaits it
            await trio.sleep_forever()
    assert not plane_threads()
    crash = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert crash and "a bug in the data path" in (crash[0].exc_text or "")


async def test_calls_after_a_crash_do_not_hang() -> None:
    fabric = Fabric()
    with pytest.RaisesGroup(DataPlaneCrashed, flatten_subgroups=True):
        async with dataplane.running(fabric) as plane:
            plane.apply(lambda: 1 / 0)
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True), trio.fail_after(2):
                    # The thread is gone: trio is the only writer, the call runs inline.
                    assert await plane.call(lambda: 42) == 42


async def start(nursery: trio.Nursery, tmp_path: Path, **options: object) -> object:
    config = SwitchConfig(control_path=str(tmp_path / "ctl"), **options)  # type: ignore[arg-type]
    return await nursery.start(
        functools.partial(serve, config, handle_signals=True, watch_stdin=False)
    )


async def test_sigterm_stops_and_joins_the_thread(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await start(nursery, tmp_path)
            assert len(plane_threads()) == 1
            os.kill(os.getpid(), signal.SIGTERM)
    assert not plane_threads()


async def test_the_shutdown_command_stops_and_joins_the_thread(tmp_path: Path) -> None:
    from umlswitch.mgmt.client import MgmtClient

    def shutdown() -> None:
        with MgmtClient(str(tmp_path / "ctl.mgmt")) as client:
            client.run("shutdown")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await start(nursery, tmp_path)
            assert len(plane_threads()) == 1
            await trio.to_thread.run_sync(shutdown)
    assert not plane_threads()
