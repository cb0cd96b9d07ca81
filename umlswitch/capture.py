"""Packet capture to a classic libpcap file (LINKTYPE_ETHERNET), without stalling forwarding.

The fabric holds at most one capture sink (``Fabric.capture``; None when off, which costs the
plain path nothing: the fabric composes its capture stage in only while one runs): a
``Capture``, a live capture (``umlswitch.livecapture``), or ``CaptureSinks`` when several run at
once. The fabric offers it every frame (``offer``); a capture of one port keeps those from and to
that port and calls ``record``, which only appends the frame and a timestamp to a bounded
in-memory queue; when the queue holds ``max_queued_bytes``, the frame is not captured and
``dropped`` counts it. ``record`` never blocks and may be called from another thread than the
writer's (the data plane's): the queue is a ``deque`` (whose appends and pops are atomic), and
each counter has one writer (the recorder counts bytes in, the writer bytes out). A writer task
wakes every ``FLUSH_INTERVAL`` seconds, takes what is queued and writes it in a worker thread, one
``write`` per batch on an unbuffered file, so ``tcpdump -r`` and ``tshark -r`` can read the file
while it grows. A full disk or another write error stops the capture (``error`` says why); it
never stops the switch.

``CaptureControl`` starts and stops captures at run time (``--pcap FILE``, ``pcap/start``,
``pcap/stop``) and owns the writer tasks.

File format (https://wiki.wireshark.org/Development/LibpcapFileFormat): a 24-byte global header
(magic 0xa1b2c3d4 in host byte order: microsecond timestamps; version 2.4; snaplen 65535;
network 1 = Ethernet), then per frame a 16-byte record header (seconds, microseconds, captured
length, original length) and the frame as it was received: no FCS, no padding.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import BinaryIO

import trio

from umlswitch.fabric.fabric import CaptureSink, Fabric, FabricPort
from umlswitch.taskhost import TaskHost

log = logging.getLogger("umlswitch.capture")

PCAP_MAGIC = 0xA1B2C3D4  # microsecond timestamps
PCAP_VERSION = (2, 4)
LINKTYPE_ETHERNET = 1
SNAPLEN = 65535  # every frame the switch accepts fits (--max-frame is at most 65535)
FILE_MODE = 0o600  # captures hold other people's traffic

DEFAULT_MAX_QUEUED_BYTES = 8 << 20
FLUSH_INTERVAL = 0.05  # seconds between writes: what a reader of the growing file waits at most
CLOSE_TIMEOUT = 2.0  # seconds the final flush may take on stop

_GLOBAL_HEADER = struct.Struct("=IHHiIII")
_RECORD_HEADER = struct.Struct("=IIII")


def pcap_global_header(snaplen: int = SNAPLEN) -> bytes:
    """The 24-byte header that opens every pcap file."""
    major, minor = PCAP_VERSION
    return _GLOBAL_HEADER.pack(PCAP_MAGIC, major, minor, 0, 0, snaplen, LINKTYPE_ETHERNET)


def pcap_record(timestamp: float, frame: bytes, snaplen: int = SNAPLEN) -> bytes:
    """One record: the 16-byte record header and the frame (cut to ``snaplen``)."""
    usec_total = math.floor(timestamp * 1_000_000)
    seconds, usec = divmod(usec_total, 1_000_000)
    kept = frame[:snaplen]
    return _RECORD_HEADER.pack(seconds, usec, len(kept), len(frame)) + kept


def open_capture_file(path: str) -> BinaryIO:
    """Create (or truncate) ``path`` with mode 0600 and write the pcap header; OSError if not."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    file = os.fdopen(fd, "wb", buffering=0)
    try:
        file.write(pcap_global_header())
    except BaseException:
        file.close()
        raise
    return file


def watches(port: int | None, ingress_id: int, egress: tuple[FabricPort, ...]) -> bool:
    """Whether a capture of ``port`` (None: every port) keeps a frame received on
    ``ingress_id`` and sent to ``egress``."""
    return port is None or port == ingress_id or any(p.id == port for p in egress)


class CaptureSinks:
    """The fabric's capture slot shared by every running capture: the ``--pcap`` file and any
    number of live ones. With one capture the fabric offers frames to it directly; with more, to
    this fan-out. Changed from the trio thread only; the tuple is replaced, never changed in place,
    so the data plane always iterates a whole one."""

    def __init__(self, fabric: Fabric) -> None:
        self.fabric = fabric
        self.sinks: tuple[CaptureSink, ...] = ()

    def add(self, sink: CaptureSink) -> None:
        self.sinks = (*self.sinks, sink)
        self._install()

    def remove(self, sink: CaptureSink) -> None:
        self.sinks = tuple(s for s in self.sinks if s is not sink)
        self._install()

    def _install(self) -> None:
        sinks = self.sinks
        self.fabric.capture = None if not sinks else sinks[0] if len(sinks) == 1 else self

    def offer(
        self, frame: bytes | memoryview, ingress_id: int, egress: tuple[FabricPort, ...]
    ) -> None:
        for sink in self.sinks:
            sink.offer(frame, ingress_id, egress)


class Capture:
    """One capture: the queue the fabric appends to, and the writer that empties it.

    ``port`` None captures every frame the switch receives; a port number captures the frames
    received from that port and the frames sent to it.
    """

    def __init__(
        self,
        file: BinaryIO,
        path: str,
        *,
        port: int | None = None,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.file = file
        self.path = path
        self.port = port
        self.max_queued_bytes = max_queued_bytes
        self.started_at = clock()
        self.captured = 0  # frames queued for writing (written by the recorder only)
        self._refused = 0  # frames not captured because the writer fell behind (recorder)
        self._abandoned = 0  # frames queued but never written (writer)
        self.written = 0  # frames written to the file
        self.bytes_written = len(pcap_global_header())
        self.error: str | None = None
        self._clock = clock
        self._queue: deque[tuple[float, bytes]] = deque()
        self._bytes_in = 0  # bytes ever queued (the recorder's)
        self._bytes_out = 0  # bytes ever taken off the queue (the writer's)

    def offer(
        self, frame: bytes | memoryview, ingress_id: int, egress: tuple[FabricPort, ...]
    ) -> None:
        """The fabric's call: ``record`` the frame if it is one this capture watches."""
        if watches(self.port, ingress_id, egress):
            self.record(frame)

    def record(self, frame: bytes | memoryview) -> None:
        """The hot path: queue a copy of ``frame`` with its timestamp, or count a drop. Never
        blocks; safe to call from another thread than the writer's."""
        size = len(frame)
        if self._bytes_in - self._bytes_out + size > self.max_queued_bytes:
            self._refused += 1
            return
        self._bytes_in += size
        self._queue.append((self._clock(), bytes(frame)))
        self.captured += 1

    def restore_counters(self, captured: int, written: int, dropped: int) -> None:
        """Carry on the counts of the same capture in the process before a restart."""
        self.captured, self.written, self._refused = captured, written, dropped

    @property
    def dropped(self) -> int:
        """Frames not captured: refused while the writer fell behind, or never written."""
        return self._refused + self._abandoned

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _take(self) -> list[tuple[float, bytes]]:
        """What is queued now, oldest first (a frame recorded meanwhile waits for the next)."""
        queue = self._queue
        batch = [queue.popleft() for _ in range(len(queue))]
        self._bytes_out += sum(len(frame) for _, frame in batch)
        return batch

    def _write(self, batch: list[tuple[float, bytes]]) -> None:
        """Write a batch in one ``write`` (in a worker thread)."""
        data = b"".join(pcap_record(ts, frame) for ts, frame in batch)
        self.file.write(data)
        self.written += len(batch)
        self.bytes_written += len(data)

    async def _flush(self, *, abandon_on_cancel: bool = False) -> None:
        batch = self._take()
        if batch:
            await trio.to_thread.run_sync(self._write, batch, abandon_on_cancel=abandon_on_cancel)

    async def run(self) -> None:
        """Write what is queued every FLUSH_INTERVAL until cancelled; then flush and close.

        Returns early (and closes the file) if writing fails; ``error`` says why.
        """
        try:
            while True:
                await trio.sleep(FLUSH_INTERVAL)
                await self._flush()
        except OSError as exc:
            self.error = exc.strerror or str(exc)
            log.error("capture to '%s' stopped: %s", self.path, self.error)
        finally:
            with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                if self.error is None:
                    try:
                        await self._flush(abandon_on_cancel=True)
                    except OSError as exc:
                        self.error = exc.strerror or str(exc)
                        log.error("capture to '%s': final write failed: %s", self.path, self.error)
            self._abandoned += len(self._take())  # whatever the final flush did not write
            self.file.close()

    def info(self) -> dict[str, object]:
        """What ``pcap/showinfo`` shows."""
        return {
            "file": self.path,
            "port": self.port,
            "captured": self.captured,
            "written": self.written,
            "dropped": self.dropped,
            "queued": self.queued,
            "bytes": self.bytes_written,
            "error": self.error,
        }


class CaptureBusy(Exception):
    """A capture is already running."""


class CaptureControl(TaskHost):
    """Starts and stops the switch's capture; runs the writer tasks in its own nursery."""

    def __init__(self, fabric: Fabric, *, max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES):
        self.fabric = fabric
        self.sinks = CaptureSinks(fabric)  # shared with the live captures (livecapture.py)
        self.max_queued_bytes = max_queued_bytes
        self.current: Capture | None = None  # the running capture (None when off)
        self.last: Capture | None = None  # the running capture, or the one that ran last
        super().__init__()
        self._scopes: dict[Capture, tuple[trio.CancelScope, trio.Event]] = {}

    def _detach(self, capture: Capture) -> None:
        if self.current is capture:
            self.current = None
            self.sinks.remove(capture)

    def _stopped(self) -> None:
        """The writer tasks have ended (a running capture was stopped cleanly)."""
        if self.current is not None:
            self._detach(self.current)

    def start(self, file: BinaryIO, path: str, port: int | None = None) -> Capture:
        """Capture to ``file`` (opened by ``open_capture_file``) from now on."""
        if self.current is not None:
            raise CaptureBusy(f"a capture to '{self.current.path}' is running")
        nursery = self._running_nursery()
        capture = Capture(file, path, port=port, max_queued_bytes=self.max_queued_bytes)
        scope = trio.CancelScope()
        done = trio.Event()
        self._scopes[capture] = (scope, done)
        nursery.start_soon(self._writer, capture, scope, done)
        self.current = self.last = capture
        self.sinks.add(capture)
        which = "every port" if port is None else f"port {port}"
        log.info("capturing %s to '%s'", which, path)
        return capture

    async def stop(self) -> Capture | None:
        """Stop the running capture; return once its file is complete and closed."""
        capture = self.current
        if capture is None:
            return None
        self._detach(capture)
        scope, done = self._scopes[capture]
        scope.cancel()
        await done.wait()
        return capture

    async def _writer(self, capture: Capture, scope: trio.CancelScope, done: trio.Event) -> None:
        try:
            with scope:
                await capture.run()
        finally:
            self._detach(capture)  # if the writer failed: stop capturing
            del self._scopes[capture]
            done.set()
            log.info(
                "capture to '%s' closed: %d frame(s) written, %d dropped%s",
                capture.path,
                capture.written,
                capture.dropped,
                f" ({capture.error})" if capture.error else "",
            )
