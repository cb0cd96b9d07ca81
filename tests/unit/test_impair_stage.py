"""Impairment as stages of the pipeline, on any clock: ``ImpairControl`` given timers of a loop of
its own (here a hand-driven one: no trio) delays, releases and restores; a frame released late
that fills a receiver's backlog holds back the port that sent it; no class is ever swapped."""

from __future__ import annotations

import heapq
import socket
from collections.abc import Callable, Iterator

import pytest

from umlswitch.fabric.fabric import Fabric
from umlswitch.fabric.impair import Impairment
from umlswitch.impair_control import ImpairControl
from umlswitch.ports.base import Port

BROADCAST = b"\xff" * 6
QUEUE = 8


class HandTimers:
    """``fabric.timers.Timers`` driven by the test: ``advance`` makes the calls that are due."""

    def __init__(self) -> None:
        self.time = 0.0
        self._calls: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._number = 0

    def now(self) -> float:
        return self.time

    def call_at(self, when: float, callback: Callable[[], None]) -> object:
        self._number += 1
        heapq.heappush(self._calls, (when, self._number, callback))
        return self._number

    def cancel(self, handle: object) -> None:
        assert isinstance(handle, int)
        self._cancelled.add(handle)

    def advance(self, seconds: float) -> None:
        self.time += seconds
        while self._calls and self._calls[0][0] <= self.time:
            _, number, callback = heapq.heappop(self._calls)
            if number not in self._cancelled:
                callback()

    @property
    def pending(self) -> int:
        return sum(1 for _, n, _ in self._calls if n not in self._cancelled)


class SocketPort(Port):
    """A real port whose frames go to a datagram socketpair the test reads (or not)."""

    def __init__(self, port_id: int) -> None:
        super().__init__(port_id, f"pair:{port_id}")
        self.sock, self.peer_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.peer_sock.setblocking(False)
        self._send = self.sock.send  # type: ignore[method-assign, assignment]
        self.queue_limit = QUEUE

    def read_all(self) -> list[bytes]:
        got = []
        while True:
            try:
                got.append(self.peer_sock.recv(2000))
            except BlockingIOError:
                return got


@pytest.fixture
def switch() -> Iterator[tuple[Fabric, ImpairControl, HandTimers, SocketPort, SocketPort]]:
    fabric = Fabric(port_queue=QUEUE)
    timers = HandTimers()
    control = ImpairControl(fabric, timers)
    a, b = SocketPort(1), SocketPort(2)
    fabric.attach(a)
    fabric.attach(b)
    yield fabric, control, timers, a, b
    for port in (a, b):
        port.sock.close()
        port.peer_sock.close()


def frame(dst: bytes, src: bytes, number: int) -> bytes:
    return dst + src + b"\x88\xb5" + number.to_bytes(4, "big") + bytes(42)


MAC_A, MAC_B = bytes.fromhex("02000000000a"), bytes.fromhex("02000000000b")


Switch = tuple[Fabric, ImpairControl, HandTimers, SocketPort, SocketPort]


def test_delay_out_on_hand_driven_timers_and_back_to_the_plain_path(switch: Switch) -> None:
    fabric, control, timers, a, b = switch
    fabric.forward(b, frame(BROADCAST, MAC_B, 0))
    a.read_all()
    control.set(b, "out", Impairment(delay=0.010))
    assert list(fabric.stages) == ["impair-out"] and type(b) is SocketPort
    for n in range(1, 4):
        fabric.forward(a, frame(MAC_B, MAC_A, n))
    assert b.read_all() == [] and timers.pending == 1  # one timer for the first frame due
    timers.advance(0.005)
    assert b.read_all() == []
    timers.advance(0.005)
    assert [f[14:18] for f in b.read_all()] == [n.to_bytes(4, "big") for n in (1, 2, 3)]
    assert timers.pending == 0
    fabric.forward(a, frame(MAC_B, MAC_A, 4))
    control.set(b, "out", None)  # waiting frames go at once; the port is its own egress again
    assert len(b.read_all()) == 1 and not fabric.stages and fabric.egress_of(b) is b
    assert timers.pending == 0


def test_a_frame_released_late_that_fills_the_backlog_holds_back_its_sender(
    switch: Switch,
) -> None:
    fabric, control, timers, a, b = switch
    fabric.forward(b, frame(BROADCAST, MAC_B, 0))
    control.set(b, "out", Impairment(delay=0.010))
    while True:  # b's peer never reads: fill its socket queue
        try:
            b.sock.send(b"x" * 60)
        except BlockingIOError:
            break
    answers = [fabric.forward(a, frame(MAC_B, MAC_A, n)) for n in range(QUEUE)]
    assert all(answer == () for answer in answers)  # delayed: nobody is full yet
    assert a.holders() == set()
    timers.advance(0.010)  # released into b's backlog, past half of it
    assert len(b.backlog) == QUEUE and a.holders() == {b}
