"""The stream family's pure parts: ``--stream`` values, QEMU's length framing, and the egress
that completes a record sent in part (a real socketpair with a tiny buffer, no event loop)."""

from __future__ import annotations

import socket
import struct

import pytest

from umlswitch import counters
from umlswitch.config import parse_args
from umlswitch.fabric.batch import FrameBatch
from umlswitch.ports.stream.framing import (
    HEADER_LEN,
    OversizedRecord,
    RecordReader,
    encode_header,
)
from umlswitch.ports.stream.port import StreamPort
from umlswitch.ports.stream.spec import StreamSpec, parse_stream, stream_conflicts

# --- --stream values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("unix:/run/q.sock", StreamSpec("unix", path="/run/q.sock")),
        ("unix:rel/q.sock", StreamSpec("unix", path="rel/q.sock")),
        ("tcp:5555", StreamSpec("tcp", host="127.0.0.1", port=5555)),
        ("tcp:0", StreamSpec("tcp", host="127.0.0.1", port=0)),
        ("tcp:0.0.0.0:5555", StreamSpec("tcp", host="0.0.0.0", port=5555)),
        ("tcp:192.0.2.1:1", StreamSpec("tcp", host="192.0.2.1", port=1)),
    ],
)
def test_stream_values(text: str, spec: StreamSpec) -> None:
    assert parse_stream(text) == spec
    assert parse_stream(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("unix:", "needs a socket path"),
        ("unix:/" + "x" * 120, "too long"),
        ("tcp:", "TCP port"),
        ("tcp:65536", "TCP port"),
        ("tcp:host.example:80", "IPv4 address"),
        ("tcp:1.2.3:80", "IPv4 address"),
        ("udp:80", "expected unix:PATH or tcp:"),
        ("/run/q.sock", "expected unix:PATH"),
    ],
)
def test_bad_stream_values(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_stream(text)


def test_stream_conflicts() -> None:
    def specs(*texts: str) -> list[StreamSpec]:
        return [parse_stream(t) for t in texts]

    assert stream_conflicts(specs("unix:/a", "unix:/b", "tcp:1", "tcp:2", "tcp:0", "tcp:0")) is None
    assert stream_conflicts(specs("tcp:127.0.0.1:7", "tcp:127.0.0.2:7")) is None
    assert "given twice" in (stream_conflicts(specs("unix:/a", "unix:/a")) or "")
    assert "TCP port 7" in (stream_conflicts(specs("tcp:7", "tcp:127.0.0.1:7")) or "")
    assert "TCP port 7" in (stream_conflicts(specs("tcp:0.0.0.0:7", "tcp:127.0.0.2:7")) or "")


def test_the_command_line_takes_repeated_streams(capsys: pytest.CaptureFixture[str]) -> None:
    config = parse_args(["--stream", "unix:q.sock", "--stream", "tcp:5555"])
    assert config.streams == (StreamSpec("unix", path="q.sock"), StreamSpec("tcp", port=5555))
    assert config.absolute().streams[0].path.startswith("/")
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--stream", "tcp:5555", "--stream", "tcp:0.0.0.0:5555"])
    assert exit_info.value.code == 2
    assert "two listeners on TCP port 5555" in capsys.readouterr().err


# --- reading records -----------------------------------------------------------------------


def records(*frames: bytes) -> bytes:
    return b"".join(encode_header(len(f)) + f for f in frames)


def feed(reader: RecordReader, data: bytes, chunk: int) -> list[bytes]:
    """Feed ``data`` in pieces of ``chunk`` bytes; every frame handed out, copied."""
    out: list[bytes] = []
    for start in range(0, len(data), chunk):
        piece = data[start : start + chunk]
        space = reader.space()
        space[: len(piece)] = piece
        reader.filled(len(piece))
        reader.parse(lambda frame: out.append(bytes(frame)))
    return out


FRAMES = [b"", b"\x01" * 13, bytes(range(60)), b"\xaa" * 1514, b"z" * 14]


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5, 7, 64, 1000, 100_000])
def test_records_split_anywhere_come_out_whole_and_in_order(chunk: int) -> None:
    reader = RecordReader(1518)
    data = records(*FRAMES) * 3
    assert feed(reader, data, chunk) == FRAMES * 3
    assert reader.pending == 0


def test_a_length_of_zero_is_an_empty_record_not_an_error() -> None:
    reader = RecordReader(1518)
    assert feed(reader, encode_header(0) * 5 + records(b"x" * 20), 3) == [b""] * 5 + [b"x" * 20]


def test_an_incomplete_record_is_pending() -> None:
    reader = RecordReader(1518)
    assert feed(reader, records(b"a" * 100)[:50], 50) == []
    assert reader.pending == 50
    assert feed(reader, records(b"a" * 100)[50:], 50) == [b"a" * 100]
    assert reader.pending == 0


@pytest.mark.parametrize("length", [1519, 65536, 0xFFFFFFFF])
def test_a_length_over_max_frame_is_refused_before_its_bytes_arrive(length: int) -> None:
    reader = RecordReader(1518)
    before = len(reader.buf)
    out: list[bytes] = []
    reader.space()[:HEADER_LEN] = struct.pack(">I", length)
    reader.filled(HEADER_LEN)
    with pytest.raises(OversizedRecord) as exc_info:
        reader.parse(lambda frame: out.append(bytes(frame)))
    assert exc_info.value.length == length
    assert len(reader.buf) == before  # nothing was allocated for what the peer claimed


def test_frames_before_an_oversized_length_are_delivered() -> None:
    reader = RecordReader(1518)
    out: list[bytes] = []
    data = records(b"a" * 20, b"b" * 30) + struct.pack(">I", 5000)
    reader.space()[: len(data)] = data
    reader.filled(len(data))
    with pytest.raises(OversizedRecord):
        reader.parse(lambda frame: out.append(bytes(frame)))
    assert out == [b"a" * 20, b"b" * 30]


def test_the_buffer_holds_two_records_and_at_least_64_kib() -> None:
    assert len(RecordReader(1518).buf) >= 64 * 1024
    assert len(RecordReader(65535).buf) >= 2 * (65535 + HEADER_LEN)
    with pytest.raises(ValueError):
        RecordReader(65535, size=1000)


# --- egress: a record the kernel took only part of ----------------------------------------


def tiny_pair() -> tuple[socket.socket, socket.socket]:
    """A unix stream pair whose sending side takes only a few KiB at a time."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setblocking(False)
    return ours, theirs


def drain_peer(theirs: socket.socket) -> bytes:
    got = bytearray()
    while True:
        try:
            chunk = theirs.recv(1 << 20)
        except BlockingIOError:
            return bytes(got)
        if not chunk:
            return bytes(got)
        got += chunk


def parse_all(data: bytes) -> list[bytes]:
    reader = RecordReader(9000, size=len(data) + 9004)
    return feed(reader, data, len(data) or 1)


def run_until_sent(port: StreamPort, theirs: socket.socket) -> bytes:
    """Read the peer's end and let the port flush, until nothing waits (the drain task's job)."""
    received = bytearray()
    for _ in range(10_000):
        received += drain_peer(theirs)
        if port._idle():
            break
        port.flush_backlog()
    received += drain_peer(theirs)
    assert port._idle()
    return bytes(received)


def distinct_frames(count: int) -> list[bytes]:
    return [bytes([i % 251]) * (60 + (i * 37) % 1400) for i in range(count)]


def test_records_sent_in_part_are_completed_first_and_the_stream_stays_whole() -> None:
    ours, theirs = tiny_pair()
    port = StreamPort(1, "stream:1 test", ours)
    port.queue_limit = 10_000
    frames = distinct_frames(300)
    with ours, theirs:
        for frame in frames:
            port.send_nowait(frame)
        assert port.backlog  # the socket buffer could not take it all
        assert parse_all(run_until_sent(port, theirs)) == frames
    assert port.stats.tx_frames == len(frames)
    assert port.stats.drops == {}


def test_a_batch_goes_out_in_one_sendmsg_and_a_partial_record_is_completed() -> None:
    ours, theirs = tiny_pair()
    port = StreamPort(1, "stream:1 test", ours)
    port.queue_limit = 10_000
    frames = distinct_frames(64)
    batch = FrameBatch(1518, 64)
    for i, frame in enumerate(frames):
        batch.data[i * 1518 : i * 1518 + len(frame)] = frame
    batch.count = 64
    batch.lengths = [len(f) for f in frames]
    with ours, theirs:
        port.send_batch(batch, list(range(64)))
        assert port._unsent is not None or port.backlog
        port.send_batch(batch, [0, 1])  # behind what waits
        assert parse_all(run_until_sent(port, theirs)) == [*frames, frames[0], frames[1]]
    assert port.stats.tx_frames == 66


def test_a_full_backlog_drops_whole_frames_never_part_of_one() -> None:
    ours, theirs = tiny_pair()
    port = StreamPort(1, "stream:1 test", ours)
    port.queue_limit = 8
    frames = distinct_frames(200)
    with ours, theirs:
        for frame in frames:
            port.send_nowait(frame)
        got = parse_all(run_until_sent(port, theirs))
    dropped = port.stats.drops[counters.EGRESS_FULL]
    assert dropped > 0 and len(got) + dropped == len(frames)
    assert got == [f for f in frames if f in got]  # in order, each whole
    assert got[: len(got) - 8] == frames[: len(got) - 8]


def test_a_peer_gone_mid_record_is_an_egress_error_not_a_busy_loop() -> None:
    ours, theirs = tiny_pair()
    port = StreamPort(1, "stream:1 test", ours)
    with ours:
        for frame in distinct_frames(50):
            port.send_nowait(frame)
        theirs.close()
        for _ in range(100):
            port.flush_backlog()
            if port._idle():
                break
        assert port._idle()
    assert port.stats.drops[counters.EGRESS_ERROR] > 0
