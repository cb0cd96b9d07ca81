"""A stream connection as a port: QEMU's length-prefixed frames over a unix or TCP socket.

**Ingress** (in the data-plane thread) reads as much as the socket has into the connection's
``RecordReader`` (``framing.py``) and forwards every complete record; partial records simply
wait for the next read. A length over ``--max-frame`` drops the connection (``stream_oversize``,
logged), as QEMU does: after a bad length nothing that follows can be trusted. EOF or a
connection error ends the port; EOF in the middle of a record is counted (``stream_truncated``)
and logged.

**Egress** frames every frame with its length and sends header and frame in one ``sendmsg``
(a batch from the fabric: one ``sendmsg`` for all of it). A stream socket, unlike a datagram
one, may take *part* of what it is given. The base class's backlog holds whole frames, so the
stream port keeps the unsent rest of a record apart, in ``_unsent``, and completes it before
anything else goes out:

* ``_send`` first finishes ``_unsent``; while it cannot, it raises ``BlockingIOError``, so the
  new frame waits in the backlog behind it, as behind any full queue;
* a record the kernel took only part of counts as sent (its first bytes are on the wire: it must
  be completed, it can no longer be dropped); its rest goes to ``_unsent`` and the data plane
  is asked to poll for room;
* ``flush_backlog`` (the data plane's call when the socket is writable) finishes ``_unsent``
  first and goes on to the backlog only once it is gone; ``_idle`` keeps the polling on while
  ``_unsent`` is not empty, even with the backlog empty.

So the byte stream is always whole records in order; ``_unsent`` is at most one record and is
not part of the backlog's bounds. A peer that stops reading fills the socket buffer, then the
backlog, which holds its senders back and, past its bound, drops (``egress_full``), exactly as
for a datagram port. A send error other than "try later" (the peer is gone) is counted
(``egress_error``); the ingress loop sees the end of the connection and detaches the port.
"""

from __future__ import annotations

import socket

from umlswitch import counters
from umlswitch.fabric.batch import FrameBatch
from umlswitch.fabric.fabric import Fabric
from umlswitch.listener import PeerCred
from umlswitch.ports.base import BATCH, Frame, Port, PortClosed, ReadArea, Source, ratelog
from umlswitch.ports.stream.framing import HEADER, HEADER_LEN, OversizedRecord, RecordReader

_pack_length = HEADER.pack
NOSIGNAL = socket.MSG_NOSIGNAL


class StreamPort(Port):
    """One stream connection (QEMU ``-netdev stream`` or ``socket,connect=``)."""

    kind = "stream"
    stp_edge = True  # a guest: an edge port of the spanning tree (forwards at once)

    def __init__(
        self,
        port_id: int,
        name: str,
        sock: socket.socket,
        *,
        peer_cred: PeerCred | None = None,
    ) -> None:
        super().__init__(port_id, name)
        sock.setblocking(False)
        self.sock = sock
        self.peer = peer_cred  # SO_PEERCRED of a unix client, shown by port/print
        self._unsent: memoryview | None = None  # the rest of a record sent only in part
        # the start of a record read but not complete (a restart hands it over: restart/kinds.py)
        self.reader: RecordReader | None = None
        self.carried_in = b""  # what the previous process had read of an incomplete record
        self._sendmsg = sock.sendmsg

    # --- egress -------------------------------------------------------------------------

    def _send(self, frame: Frame) -> None:
        if self._unsent is not None and not self._finish_record():
            raise BlockingIOError
        header = _pack_length(len(frame))
        sent = self._sendmsg((header, frame), (), NOSIGNAL)
        if sent < HEADER_LEN + len(frame):
            self._keep_rest(header, frame, sent)

    def _keep_rest(self, header: bytes, frame: Frame, sent: int) -> None:
        """The kernel took ``sent`` bytes of this record: keep the rest, to go out first."""
        self._unsent = memoryview(header + bytes(frame))[sent:]
        self.backlog_started()  # the drain task completes it once the socket has room

    def _finish_record(self) -> bool:
        """Send the rest of a record sent in part; True once nothing of it is left."""
        unsent = self._unsent
        assert unsent is not None
        try:
            sent = self.sock.send(unsent, NOSIGNAL)
        except BlockingIOError:
            return False
        except OSError:
            self._unsent = None  # the connection is broken: nothing more will go out
            raise
        if sent < len(unsent):
            self._unsent = unsent[sent:]
            return False
        self._unsent = None
        return True

    def _idle(self) -> bool:
        return self._unsent is None and not self.backlog

    def flush_backlog(self) -> None:
        unsent = self._unsent
        if unsent is not None:
            before = len(unsent)
            try:
                done = self._finish_record()
            except OSError as exc:
                self._send_failed(exc)
                done = True
            if not done:
                if self._unsent is not None and len(self._unsent) < before:
                    self.stalled = False  # it reads again
                return
        super().flush_backlog()

    def send_batch(self, batch: FrameBatch, indices: list[int]) -> bool:
        """All frames of the batch in one ``sendmsg`` (headers and frames as one vector)."""
        frame = batch.frame
        if len(indices) == 1 or self.backlog or self._unsent is not None:
            return super().send_batch(batch, indices)
        frames = [frame(index) for index in indices]
        headers = [_pack_length(len(f)) for f in frames]
        parts: list[Frame] = []
        for header, f in zip(headers, frames, strict=True):
            parts.append(header)
            parts.append(f)
        try:
            sent = self._sendmsg(parts, (), NOSIGNAL)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._send_failed(exc)
            self.stats.drops[counters.EGRESS_ERROR] += len(frames) - 1
            return False
        stats = self.stats
        full = False
        for position, f in enumerate(frames):
            size = HEADER_LEN + len(f)
            if sent >= size:
                sent -= size
            elif sent > 0:
                self._keep_rest(headers[position], f, sent)
                sent = 0
            else:
                full = self._enqueue(f)
                continue
            stats.tx_frames += 1
            stats.tx_bytes += len(f)
        return full

    def egress_fd(self) -> socket.socket:
        return self.sock

    # --- ingress ------------------------------------------------------------------------

    def sources(self, fabric: Fabric, area: ReadArea) -> list[Source]:
        reader = self.reader = RecordReader(fabric.max_frame)
        if self.carried_in:  # the part of a record the process before a restart had read
            reader.space()[: len(self.carried_in)] = self.carried_in
            reader.filled(len(self.carried_in))
            self.carried_in = b""
        recv_into = self.sock.recv_into
        holders = self.holders

        def deliver(frame: memoryview) -> None:
            full = fabric.forward(self, frame)  # looked up each time: stages re-compose it
            if full:
                self.held_by(full)

        def read() -> None:
            # At most BATCH reads a round; a round stops early once the port is held.
            for _ in range(BATCH):
                try:
                    count = recv_into(reader.space())
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    raise PortClosed(f"connection error: {exc.strerror or exc}") from None
                if not count:
                    self._ended(reader.pending)
                reader.filled(count)
                try:
                    reader.parse(deliver)
                except OversizedRecord as exc:
                    self._oversized(exc.length, fabric.max_frame)
                if holders():
                    return

        return [Source(self.sock, read, self)]

    def _ended(self, pending: int) -> None:
        if not pending:
            raise PortClosed("disconnect")
        self.stats.drops[counters.STREAM_TRUNCATED] += 1
        ratelog.warning(
            f"{counters.STREAM_TRUNCATED}:{self.id}",
            "port %d (%s): the peer closed the connection in the middle of a frame "
            "(%d byte(s) of it read, dropped: %s)",
            self.id,
            self.name,
            pending,
            counters.STREAM_TRUNCATED,
        )
        raise PortClosed(f"disconnect in the middle of a frame ({pending} byte(s) of it read)")

    def _oversized(self, length: int, max_frame: int) -> None:
        self.stats.drops[counters.STREAM_OVERSIZE] += 1
        ratelog.warning(
            f"{counters.STREAM_OVERSIZE}:{self.id}",
            "port %d (%s): a frame length of %d bytes exceeds --max-frame %d; closing the "
            "connection (%s)",
            self.id,
            self.name,
            length,
            max_frame,
            counters.STREAM_OVERSIZE,
        )
        raise PortClosed(f"oversized frame length {length} (--max-frame {max_frame})")

    def close(self) -> None:
        self.sock.close()
