"""Prove that a frame did *not* arrive, at once, and wait for a condition without sleeping.

A switch keeps the order of the frames one port sends to another. So to show that a frame sent
earlier was dropped, send a *fence* after it from the same port, and read each receiver up to the
fence: whatever came before it is all that will ever come of what was sent before it. No
timeout is waited out, and a frame that does arrive is caught however slow the machine is.

    await guest.send(frame_that_must_be_dropped)
    (before,) = await guest.fence(victim)
    assert not before

A receiver that is not a harness port (a UDP peer, a VXLAN endpoint, a raw socket) is read up
to a fence with ``frames_before_fence_sync`` / ``frames_before_fence``, the fence sent with
``port.send_fence()`` (or any frame the receiver must get next, e.g. a peer's own frame after the
ones that must be dropped):

    fence = guest.send_fence()
    assert frames_before_fence_sync(receive_from_peer, fence) == [expected]

``wait_until`` / ``wait_until_sync`` poll a predicate (a counter, a table size) with a deadline,
for what no frame can fence: state the switch changes after the last frame.
"""

from __future__ import annotations

import itertools
import os
import struct
import time
from collections.abc import Awaitable, Callable

import trio

# IEEE 802 "local experimental" ethertype 2; the payload is a marker and a per-fence token.
FENCE_ETHERTYPE = 0x88B6
FENCE_MARK = b"umlswitch-fence"
BROADCAST = b"\xff" * 6
_fence_numbers = itertools.count(1)


def fence_frame(src: bytes, dst: bytes = BROADCAST) -> bytes:
    """A fence frame from ``src`` to ``dst`` (broadcast by default), unique to this call."""
    token = struct.pack("!IQ", os.getpid(), next(_fence_numbers))
    return dst + src + struct.pack("!H", FENCE_ETHERTYPE) + FENCE_MARK + token + bytes(20)


def is_fence(raw: bytes, fence: bytes) -> bool:
    """Whether ``raw`` is ``fence`` as delivered (the switch may pad or keep it as is)."""
    return raw[: len(fence)] == fence


class FenceNotDelivered(AssertionError):
    """The fence itself did not arrive: the receiver is not reachable from the sender at all."""


def check_fence_arrived(arrived: bool, timeout: float) -> None:
    if not arrived:
        raise FenceNotDelivered(
            f"the fence frame did not arrive within {timeout} s: the receiver is not reachable "
            "from the sender (another VLAN? a unicast fence to a MAC the switch has not learnt?)"
        )


def frames_before_fence_sync(
    receive: Callable[[float], bytes], fence: bytes, timeout: float = 5.0
) -> list[bytes]:
    """Call ``receive`` up to ``fence``; the raw frames that came before it, in order.

    ``receive(seconds)`` returns the receiver's next frame, or raises TimeoutError once
    ``seconds`` have passed without one (``SyncPort.receive_bytes`` does). ``fence`` is the frame
    as this receiver gets it: behind a tunnel header, pass the header too (the receiver's frame
    only has to start with ``fence``, so padding added on the way is allowed).
    FenceNotDelivered if the fence does not come within ``timeout``."""
    before: list[bytes] = []
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            raw = receive(remaining)
        except TimeoutError:
            break
        if is_fence(raw, fence):
            return before
        before.append(raw)
    check_fence_arrived(False, timeout)
    return before


async def frames_before_fence(
    receive: Callable[[], Awaitable[bytes]], fence: bytes, timeout: float = 5.0
) -> list[bytes]:
    """``frames_before_fence_sync`` in trio: ``receive()`` awaits the receiver's next frame (this
    function bounds the wait)."""
    before: list[bytes] = []
    with trio.move_on_after(timeout):
        while True:
            raw = await receive()
            if is_fence(raw, fence):
                return before
            before.append(raw)
    check_fence_arrived(False, timeout)
    return before


async def wait_until(
    predicate: Callable[[], bool], timeout: float = 5.0, what: str = "the condition"
) -> None:
    """Return as soon as ``predicate()`` holds; AssertionError naming ``what`` after ``timeout``."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.002)
        return
    raise AssertionError(f"{what} did not hold within {timeout} s")


def wait_until_sync(
    predicate: Callable[[], bool], timeout: float = 5.0, what: str = "the condition"
) -> None:
    """``wait_until`` for blocking code."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        time.sleep(0.002)
