"""Back-pressure is an answer, not a side channel: a port's send says "full" once its backlog is
past half its bound, and forwarding returns the receivers that said so (``Fabric.forward``,
``forward_batch``); the ingress loop holds the sender for them (``Port.held_by``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from umlswitch.fabric.batch import FrameBatch
from umlswitch.fabric.fabric import NO_RECEIVERS, Fabric
from umlswitch.fabric.queues import QueueBudget
from umlswitch.ports.base import Port

QUEUE = 8
BROADCAST = b"\xff" * 6


class SocketPort(Port):
    """A real port whose frames go to one end of a datagram socketpair nobody reads."""

    def __init__(self, port_id: int, sock: socket.socket) -> None:
        super().__init__(port_id, f"pair:{port_id}")
        self.sock = sock
        self._send = sock.send  # type: ignore[method-assign, assignment]
        self.queue_limit = QUEUE


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(3)]
    for ours, _ in made:
        ours.setblocking(False)
    yield made
    for ours, theirs in made:
        ours.close()
        theirs.close()


def mac(n: int) -> bytes:
    return bytes([2, 0, 0, 0, 0, n])


def frame(dst: bytes, src: bytes) -> bytes:
    return dst + src + b"\x88\xb5" + bytes(46)


def fill_socket(port: SocketPort) -> int:
    """Send until the kernel queue is full; how many the kernel took."""
    taken = 0
    while True:
        try:
            port.sock.send(b"x" * 60)
        except BlockingIOError:
            return taken
        taken += 1


def test_send_says_full_once_the_backlog_is_past_half_its_bound(pairs: list) -> None:
    port = SocketPort(1, pairs[0][0])
    assert port.send_nowait(frame(BROADCAST, mac(9))) is False  # the kernel took it
    fill_socket(port)
    answers = [port.send_nowait(frame(BROADCAST, mac(9))) for _ in range(QUEUE + 2)]
    # Backlog depth 1..3 is under half of 8; 4..8 is past it; then full, dropped: still "full".
    assert answers == [False, False, False] + [True] * 7
    assert len(port.backlog) == QUEUE and port.stats.drops["egress_full"] == 2
    port.stalled = True  # a stalled receiver holds nobody
    assert port.send_nowait(frame(BROADCAST, mac(9))) is False


def test_send_batch_answers_for_its_last_frame(pairs: list) -> None:
    port = SocketPort(1, pairs[0][0])
    batch = FrameBatch(64, 8)
    data = frame(BROADCAST, mac(9))
    for i in range(8):
        batch.data[i * 64 : i * 64 + len(data)] = data
    batch.lengths, batch.count = [len(data)] * 8, 8
    assert port.send_batch(batch, [0, 1]) is False
    fill_socket(port)
    assert port.send_batch(batch, [0, 1, 2]) is False  # 3 queued
    assert port.send_batch(batch, [3]) is True  # 4: half of 8


def test_forwarding_returns_the_receivers_that_said_full(pairs: list) -> None:
    fabric = Fabric(port_queue=QUEUE)
    a, b, c = (SocketPort(i + 1, pairs[i][0]) for i in range(3))
    for port in (a, b, c):
        fabric.attach(port)
    assert fabric.forward(a, frame(BROADCAST, mac(1))) is NO_RECEIVERS
    assert fabric.forward(b, frame(mac(1), mac(2))) is NO_RECEIVERS  # learns b
    fill_socket(b)
    answers = [fabric.forward(a, frame(mac(2), mac(1))) for _ in range(5)]
    assert answers[:3] == [NO_RECEIVERS] * 3
    assert answers[3] == (b,) and answers[4] == (b,)
    assert fabric.forward(c, frame(mac(1), mac(3))) is NO_RECEIVERS  # a still reads
    # The loop holds the sender for them; the receiver releases it once drained to an eighth.
    a.held_by(answers[3])
    assert a.holders() == {b}
    pairs[1][1].setblocking(False)
    while True:
        try:
            pairs[1][1].recv(100)
        except BlockingIOError:
            break
    b.flush_backlog()
    assert not b.backlog and a.holders() == set()


def test_forward_batch_returns_the_receivers_that_said_full(pairs: list) -> None:
    fabric = Fabric(port_queue=QUEUE)
    a, b = SocketPort(1, pairs[0][0]), SocketPort(2, pairs[1][0])
    fabric.attach(a)
    fabric.attach(b)
    fabric.forward(b, frame(BROADCAST, mac(2)))
    batch = FrameBatch(64, 8)
    data = frame(mac(2), mac(1))
    for i in range(8):
        batch.data[i * 64 : i * 64 + len(data)] = data
    batch.lengths, batch.count = [len(data)] * 2, 2
    assert fabric.forward_batch(a, batch) is NO_RECEIVERS
    fill_socket(b)
    batch.lengths, batch.count = [len(data)] * 5, 5
    assert fabric.forward_batch(a, batch) == (b,)


def test_the_budget_names_no_sender() -> None:
    assert not hasattr(QueueBudget(), "sender")
