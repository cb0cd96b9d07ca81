"""Live capture: frames streamed as pcap to a management session while they pass
(``pcap/stream``, ``umlswitch capture``, the Wireshark extcap).

A ``LiveCapture`` is a capture sink like the ``--pcap`` file's (``umlswitch.capture``), built for
a reader that may be slow or go away:

* ``record`` (called by the fabric, possibly from the data-plane thread) appends the frame and
  its timestamp to a ``collections.deque`` holding at most ``max_frames``; a frame that finds it
  full is not captured and ``dropped`` counts it. No lock, no wake-up, no blocking per frame.
* The session's task takes what is queued every ``FLUSH_INTERVAL`` and writes it to the reader
  (one ``send`` per batch). While the reader does not read, the queue fills and frames are
  dropped from the capture; the switch's traffic is never held.
* The reader closing its end (EOF or a send error) ends this capture only.

Several live captures and the ``--pcap`` file run at once (``capture.CaptureSinks``).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Awaitable, Callable

import trio

from umlswitch.capture import CaptureSinks, pcap_global_header, pcap_record, watches
from umlswitch.fabric.fabric import FabricPort

log = logging.getLogger("umlswitch.capture")

DEFAULT_MAX_FRAMES = 2048  # frames queued for one reader (at most 2048 * --max-frame bytes)
FLUSH_INTERVAL = 0.02  # seconds between two writes to the reader: the latency a frame sees

Send = Callable[[bytes], Awaitable[None]]


class LiveCapture:
    """One reader's capture: the bounded queue the fabric appends to."""

    def __init__(
        self,
        port: int | None = None,
        *,
        max_frames: int = DEFAULT_MAX_FRAMES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.port = port
        self.max_frames = max_frames
        self.captured = 0  # frames queued (data plane)
        self.dropped = 0  # frames not captured: the reader fell behind (data plane)
        self.sent = 0  # frames written to the reader (trio)
        self.started_at = clock()
        self._clock = clock
        self._queue: collections.deque[tuple[float, bytes]] = collections.deque()

    def offer(
        self, frame: bytes | memoryview, ingress_id: int, egress: tuple[FabricPort, ...]
    ) -> None:
        if watches(self.port, ingress_id, egress):
            self.record(frame)

    def record(self, frame: bytes | memoryview) -> None:
        """Queue a copy of ``frame`` with its time, or count it dropped. Any thread."""
        if len(self._queue) >= self.max_frames:
            self.dropped += 1
            return
        self._queue.append((self._clock(), bytes(frame)))
        self.captured += 1

    @property
    def queued(self) -> int:
        return len(self._queue)

    def take(self) -> bytes:
        """The queued frames as pcap records, oldest first (trio side)."""
        queue = self._queue
        records: list[bytes] = []
        while queue:
            timestamp, frame = queue.popleft()
            records.append(pcap_record(timestamp, frame))
        self.sent += len(records)
        return b"".join(records)

    def info(self) -> dict[str, object]:
        return {
            "port": self.port,
            "captured": self.captured,
            "sent": self.sent,
            "dropped": self.dropped,
            "queued": self.queued,
        }


class LiveCaptures:
    """The running live captures of a switch, sharing the fabric's capture slot."""

    def __init__(self, sinks: CaptureSinks) -> None:
        self.sinks = sinks
        self.running: list[LiveCapture] = []

    async def stream(self, send: Send, port: int | None = None) -> LiveCapture:
        """Capture (``port``'s frames, or every port's) and ``send`` them as a pcap stream
        until cancelled or ``send`` fails (OSError: the reader went away). Returns the capture
        with its counts."""
        live = LiveCapture(port)
        which = "every port" if port is None else f"port {port}"
        self.running.append(live)
        self.sinks.add(live)
        log.info("live capture of %s started", which)
        try:
            await send(pcap_global_header())
            while True:
                await trio.sleep(FLUSH_INTERVAL)
                data = live.take()
                if data:
                    await send(data)
        finally:
            self.sinks.remove(live)
            self.running.remove(live)
            log.info(
                "live capture of %s ended: %d frame(s) sent, %d dropped (reader too slow)",
                which,
                live.sent,
                live.dropped + live.queued,
            )
