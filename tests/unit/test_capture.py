"""Packet capture: the pcap format (read back by scapy), the bounded queue, the fabric's hook."""

from __future__ import annotations

import io
import struct
import threading
from pathlib import Path

import pytest
import trio
import trio.testing
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from tests.fakes import FakePort
from umlswitch.capture import (
    Capture,
    CaptureBusy,
    CaptureControl,
    open_capture_file,
    pcap_global_header,
    pcap_record,
)
from umlswitch.fabric.fabric import Fabric
from umlswitch.testing import wait_until

A, B, C = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"


def frame(src: str, dst: str, payload: bytes = b"x" * 46) -> bytes:
    return bytes(Ether(src=src, dst=dst, type=0x88B5)) + payload


def test_global_header_is_classic_libpcap_ethernet():
    magic, major, minor, zone, sigfigs, snaplen, network = struct.unpack(
        "=IHHiIII", pcap_global_header()
    )
    assert (magic, major, minor, zone, sigfigs) == (0xA1B2C3D4, 2, 4, 0, 0)
    assert (snaplen, network) == (65535, 1)


def test_record_header_splits_the_timestamp_and_keeps_both_lengths():
    record = pcap_record(1700000000.25, b"\x01" * 100, snaplen=60)
    assert struct.unpack("=IIII", record[:16]) == (1700000000, 250000, 60, 100)
    assert record[16:] == b"\x01" * 60


def test_a_capture_file_reads_back_with_scapy(tmp_path: Path):
    path = tmp_path / "x.pcap"
    file = open_capture_file(str(path))
    frames = [frame(A, B), frame(B, A, b"y" * 100)]
    file.write(b"".join(pcap_record(1.5 + i, f) for i, f in enumerate(frames)))
    file.close()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    packets = rdpcap(str(path))
    assert [bytes(p) for p in packets] == frames
    assert [float(p.time) for p in packets] == [1.5, 2.5]


def test_record_queues_until_the_bound_then_counts_drops():
    capture = Capture(io.BytesIO(), "mem", max_queued_bytes=150, clock=lambda: 7.0)
    for _ in range(4):
        capture.record(memoryview(frame(A, B)))  # 60 bytes each: two fit
    assert (capture.captured, capture.dropped, capture.queued) == (2, 2, 2)
    capture._write(capture._take())
    assert capture.written == 2
    capture.record(frame(A, B))  # room again once the writer took the queue
    assert (capture.captured, capture.dropped) == (3, 2)


def test_fabric_captures_every_frame_it_receives():
    fabric = Fabric()
    ports = [FakePort(i) for i in (1, 2, 3)]
    for port in ports:
        fabric.attach(port)
    capture = Capture(io.BytesIO(), "mem")
    fabric.capture = capture
    sent = [frame(A, B), frame(B, A), frame(C, "ff:ff:ff:ff:ff:ff"), b"runt"]
    fabric.forward(ports[0], sent[0])
    fabric.forward(ports[1], sent[1])
    fabric.forward(ports[2], sent[2])
    fabric.forward(ports[0], sent[3])
    assert [f for _, f in capture._take()] == sent  # the runt too: it came in
    assert ports[0].sent == [sent[1], sent[2]]  # forwarding is unchanged


def test_fabric_captures_one_port_in_both_directions():
    fabric = Fabric()
    ports = [FakePort(i) for i in (1, 2, 3)]
    for port in ports:
        fabric.attach(port)
    a_to_all, b_to_a, c_to_b = frame(A, "ff:ff:ff:ff:ff:ff"), frame(B, A), frame(C, B)
    fabric.forward(ports[1], frame(B, "ff:ff:ff:ff:ff:ff"))  # learn B on port 2
    capture = Capture(io.BytesIO(), "mem", port=1)
    fabric.capture = capture
    fabric.forward(ports[0], a_to_all)  # from port 1
    fabric.forward(ports[1], b_to_a)  # to port 1 (A learned there)
    fabric.forward(ports[2], c_to_b)  # between ports 3 and 2: not port 1's
    assert [f for _, f in capture._take()] == [a_to_all, b_to_a]
    assert ports[1].sent[-1] == c_to_b


def test_detached_ports_keep_counting_in_the_totals():
    fabric = Fabric()
    port = FakePort(1)
    fabric.attach(port)
    fabric.attach(FakePort(2))
    fabric.forward(port, frame(A, B))
    fabric.forward(port, b"runt")
    fabric.detach(1)
    assert (fabric.departed.rx_frames, fabric.departed.drops["runt"]) == (2, 1)


async def test_capture_control_writes_and_closes_on_stop(tmp_path: Path):
    path = tmp_path / "run.pcap"
    fabric = Fabric()
    ports = [FakePort(1), FakePort(2)]
    for port in ports:
        fabric.attach(port)
    control = CaptureControl(fabric)
    async with trio.open_nursery() as nursery:
        await nursery.start(control.run)
        capture = control.start(open_capture_file(str(path)), str(path))
        assert fabric.capture is capture
        with pytest.raises(CaptureBusy):
            control.start(io.BytesIO(), "second")
        fabric.forward(ports[0], frame(A, B))
        # the writer flushes while the capture runs
        await wait_until(lambda: capture.written == 1, what="the first frame written")
        assert len(rdpcap(str(path))) == 1
        fabric.forward(ports[1], frame(B, A))
        assert await control.stop() is capture
        assert fabric.capture is None and control.current is None
        assert capture.file.closed and capture.written == 2
        assert await control.stop() is None
        nursery.cancel_scope.cancel()
    assert [bytes(p) for p in rdpcap(str(path))] == [frame(A, B), frame(B, A)]


class FailingFile(io.BytesIO):
    def write(self, data: object) -> int:
        raise OSError(28, "No space left on device")


async def test_a_write_error_stops_the_capture_not_the_switch():
    fabric = Fabric()
    port = FakePort(1)
    fabric.attach(port)
    fabric.attach(FakePort(2))
    control = CaptureControl(fabric)
    async with trio.open_nursery() as nursery:
        await nursery.start(control.run)
        capture = control.start(FailingFile(), "full-disk")
        fabric.forward(port, frame(A, B))
        await wait_until(lambda: control.current is None, what="the capture stopped")
        assert capture.error == "No space left on device"
        assert fabric.capture is None
        fabric.forward(port, frame(A, B))  # forwarding goes on
        nursery.cancel_scope.cancel()


def test_record_from_another_thread_loses_and_duplicates_nothing() -> None:
    """The data plane records while the writer takes: every frame is taken once or counted."""
    capture = Capture(io.BytesIO(), "mem.pcap", max_queued_bytes=64 * 100)
    frames = [frame(A, B) for _ in range(20000)]

    def record_all() -> None:
        for data in frames:
            capture.record(data)

    recorder = threading.Thread(target=record_all)
    taken: list[tuple[float, bytes]] = []
    recorder.start()
    while recorder.is_alive():
        taken += capture._take()
    recorder.join()
    taken += capture._take()
    assert capture.captured == len(taken) and capture.captured + capture.dropped == len(frames)
    assert capture.queued == 0 and capture._bytes_in == capture._bytes_out
