"""QEMU's stream framing: each frame is preceded by its length, 4 bytes, big-endian. Pure: the
receive buffer and the parse, no socket.

QEMU's ``-netdev stream`` and ``-netdev socket,listen=|connect=`` (net/stream.c, net/socket.c,
reading with ``net_fill_rstate`` in net/net.c) put ``htonl(len)`` before every frame and nothing
else: no vnet header unless one is negotiated (we never do), no padding, no trailer. QEMU itself
closes a connection whose length exceeds its buffer ("oversized packet received"), as do we
beyond ``--max-frame``. (vde's own stream, ``vde_plug`` on stdin/stdout, uses a *2-byte*
length: a different protocol.)

``RecordReader`` owns one buffer of fixed size, at least two whole records long: the port reads
into its free end, ``parse`` hands out every complete record as a slice of it and moves the
incomplete tail (at most one record) to the front. A length is checked before anything is
waited for, so a peer that claims 4 GiB costs nothing: ``OversizedRecord`` is raised at once and
the port drops the connection. Lengths of 0 to 13 are framed correctly and only too short to be
frames: they are handed out like any record and the fabric counts them as runts.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

HEADER = struct.Struct(">I")
HEADER_LEN = HEADER.size
_unpack_length = HEADER.unpack_from
# Read this much per system call at least, so a busy link needs few of them (about 40 full-size
# frames). Each connection holds one such buffer: about what a datagram port's receive batch
# holds (64 slots of --max-frame bytes), and bounded with the ports by --max-ports.
MIN_BUFFER = 64 * 1024


class OversizedRecord(Exception):
    """A record claims more than ``--max-frame`` bytes: the stream cannot be trusted further."""

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length


def encode_header(length: int) -> bytes:
    """The 4-byte big-endian length that goes before a frame of ``length`` bytes."""
    return HEADER.pack(length)


class RecordReader:
    """Receive buffer plus record parser of one stream connection."""

    __slots__ = ("buf", "end", "max_frame", "view")

    def __init__(self, max_frame: int, size: int | None = None) -> None:
        self.max_frame = max_frame
        if size is None:
            size = max(MIN_BUFFER, 2 * (HEADER_LEN + max_frame))
        if size < HEADER_LEN + max_frame:
            raise ValueError("the buffer must hold a whole record")
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.end = 0  # bytes of data in buf, from its start

    @property
    def pending(self) -> int:
        """Bytes of an incomplete record waiting for the rest (0: at a record boundary)."""
        return self.end

    def space(self) -> memoryview:
        """Where the next read goes (never empty after ``parse``)."""
        return self.view[self.end :]

    def filled(self, count: int) -> None:
        """``count`` bytes were read into ``space()``."""
        self.end += count

    def parse(self, deliver: Callable[[memoryview], None]) -> int:
        """Call ``deliver(frame)`` for every complete record, in order; return how many.

        ``frame`` is a slice of the buffer, valid only during the call. Raises
        ``OversizedRecord`` for a length over ``max_frame`` (the records before it were
        delivered). The incomplete tail moves to the front of the buffer.
        """
        view = self.view
        end = self.end
        max_frame = self.max_frame
        offset = 0
        count = 0
        while end - offset >= HEADER_LEN:
            (length,) = _unpack_length(view, offset)
            if length > max_frame:
                self.end = 0
                raise OversizedRecord(length)
            start = offset + HEADER_LEN
            stop = start + length
            if stop > end:
                break
            deliver(view[start:stop])
            count += 1
            offset = stop
        if offset:
            rest = end - offset
            if rest:  # through a copy: the two ranges may overlap
                self.buf[:rest] = view[offset:end].tobytes()
            self.end = rest
        return count
