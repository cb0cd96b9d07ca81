"""One ``sendmmsg`` per port sends exactly the frames of the slots asked for, in order, whether
the slots are consecutive (written as two slice copies) or not (one by one)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from umlswitch.ports import vectorio

pytestmark = pytest.mark.skipif(not vectorio.available(), reason="libc has no sendmmsg/recvmmsg")


@pytest.fixture
def link() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
    )
    for sock in (a, b):
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
    a.connect(b.getsockname())
    b.connect(a.getsockname())
    yield a, b
    a.close()
    b.close()


def received(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(4096))
        except BlockingIOError:
            return got


@pytest.mark.parametrize(
    "indices", [[0, 1, 2, 3, 4, 5, 6, 7], [2, 3, 4], [5], [0, 2, 3, 7], [7, 6], [1, 3, 2]]
)
def test_the_frames_of_the_slots_asked_for_go_out_in_order(
    link: tuple[socket.socket, socket.socket], indices: list[int]
) -> None:
    a, b = link
    frames = [bytes([n]) * (60 + 37 * n) for n in range(8)]
    for data in frames:
        b.send(data)
    receiver = vectorio.BatchReceiver(1519, 8)
    assert receiver.receive(a.fileno()) == 8
    sender = vectorio.BatchSender(8)
    assert sender.send(a.fileno(), receiver.batch, indices) == len(indices)
    assert received(b) == [frames[i] for i in indices]
    # Again, after a send of other slots: nothing of the first send is left over.
    assert sender.send(a.fileno(), receiver.batch, [0, 1]) == 2
    assert received(b) == frames[:2]
