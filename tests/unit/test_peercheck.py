"""The netlink (sock_diag / unix_diag) messages of the peer-ownership check, without a kernel.

``peercheck.encode_query`` builds the request and ``peercheck.decode_reply`` reads the kernel's
answer; only root-only tests reach them through the daemon, so their bytes are checked here
against messages captured from a real kernel, and the decoder against hostile ones: a reply cut
short or whose lengths lie must give an OSError that says so (the server handles OSError as "the
kernel cannot tell" and refuses the client), never another exception, a wrong answer or a loop
that does not end.

How the captured messages were made (root, Linux 6.18, x86-64, little-endian): a script bound an
AF_UNIX datagram socket A to an abstract name, connected a second one, B, to it, sent
``encode_query(inode of B, UDIAG_SHOW_PEER)`` and ``encode_query(inode of A, UDIAG_SHOW_UID)`` on
a NETLINK_SOCK_DIAG socket exactly as ``peercheck.query`` does, and printed ``request.hex()`` and
``nl.recv(65536).hex()``; likewise for an AF_UNIX stream socket, for inode 1 (no such socket),
and with ``seq=7`` and ``UDIAG_SHOW_UID | UDIAG_SHOW_PEER`` for a datagram socket that a process
running as user nobody (uid 65534) had bound. The last header field of a reply is the netlink
port id the kernel gave the asking socket (the script's pid), which the decoder ignores.
"""

from __future__ import annotations

import errno
import signal
import socket
import struct
from collections.abc import Iterator
from types import FrameType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from umlswitch.ports.unix.peercheck import (
    UDIAG_SHOW_PEER,
    UDIAG_SHOW_UID,
    UnixSocketInfo,
    decode_reply,
    encode_query,
)


def hexbytes(*fields: str) -> bytes:
    """Bytes from hex fields written apart, so each field of a captured message can be named."""
    return bytes.fromhex("".join(fields))


# --- captured requests --------------------------------------------------------------------

# nlmsghdr: length 40, type 20 (SOCK_DIAG_BY_FAMILY), flags 1 (NLM_F_REQUEST), seq, pid 0;
# unix_diag_req: AF_UNIX, protocol 0, pad, states 0xffffffff (all), inode, show, no cookie.
REQUEST_PEER_OF_B = hexbytes(
    "28000000", "1400", "0100", "01000000", "00000000",
    "01", "00", "0000", "ffffffff", "26b92600", "04000000", "ffffffff", "ffffffff",
)  # fmt: skip
REQUEST_UID_OF_A = hexbytes(
    "28000000", "1400", "0100", "01000000", "00000000",
    "01", "00", "0000", "ffffffff", "25b92600", "40000000", "ffffffff", "ffffffff",
)  # fmt: skip
REQUEST_NOBODYS = hexbytes(
    "28000000", "1400", "0100", "07000000", "00000000",
    "01", "00", "0000", "ffffffff", "70b62600", "44000000", "ffffffff", "ffffffff",
)  # fmt: skip
REQUEST_INODE_1 = hexbytes(
    "28000000", "1400", "0100", "01000000", "00000000",
    "01", "00", "0000", "ffffffff", "01000000", "40000000", "ffffffff", "ffffffff",
)  # fmt: skip

# --- captured replies ---------------------------------------------------------------------

# nlmsghdr (length 48, type 20, flags 0, seq, port id); unix_diag_msg: family AF_UNIX, type,
# state, pad, inode, cookie; then attributes (nla_len, nla_type, value, padding to 4 bytes).
REPLY_PEER_OF_B = hexbytes(
    "30000000", "1400", "0000", "01000000", "d7600000",
    "01", "02", "01", "00", "26b92600", "f7890100", "00000000",  # SOCK_DGRAM, inode 2537766
    "0800", "0200", "25b92600",  # UNIX_DIAG_PEER: inode 2537765 (A)
    "0500", "0600", "00", "000000",  # UNIX_DIAG_SHUTDOWN (not asked for, skipped): 0, padding
)  # fmt: skip
REPLY_UID_OF_A = hexbytes(
    "30000000", "1400", "0000", "01000000", "d7600000",
    "01", "02", "01", "00", "25b92600", "f8890100", "00000000",  # SOCK_DGRAM, inode 2537765
    "0500", "0600", "00", "000000",  # UNIX_DIAG_SHUTDOWN
    "0800", "0700", "00000000",  # UNIX_DIAG_UID: 0 (root)
)  # fmt: skip
REPLY_STREAM = hexbytes(
    "30000000", "1400", "0000", "01000000", "d7600000",
    "01", "01", "07", "00", "29b92600", "f9890100", "00000000",  # SOCK_STREAM, inode 2537769
    "0500", "0600", "00", "000000",
    "0800", "0700", "00000000",
)  # fmt: skip
REPLY_NOBODYS = hexbytes(
    "30000000", "1400", "0000", "07000000", "28620000",
    "01", "02", "07", "00", "70b62600", "146f0100", "00000000",  # SOCK_DGRAM, inode 2537072
    "0500", "0600", "00", "000000",
    "0800", "0700", "feff0000",  # UNIX_DIAG_UID: 65534 (nobody); no peer: not connected
)  # fmt: skip
# NLMSG_ERROR (type 2, length 60): error -2 (ENOENT), then the request it answers, echoed.
REPLY_NO_SUCH_SOCKET = hexbytes("3c000000", "0200", "0000", "01000000", "d7600000", "feffffff")
REPLY_NO_SUCH_SOCKET += REQUEST_INODE_1

CAPTURED_REPLIES = [REPLY_PEER_OF_B, REPLY_UID_OF_A, REPLY_STREAM, REPLY_NOBODYS]
CAPTURED_NAMES = ["peer of B", "uid of A", "stream", "nobody's", "no such socket"]


@pytest.mark.parametrize(
    ("inode", "show", "seq", "captured"),
    [
        (2537766, UDIAG_SHOW_PEER, 1, REQUEST_PEER_OF_B),
        (2537765, UDIAG_SHOW_UID, 1, REQUEST_UID_OF_A),
        (2537072, UDIAG_SHOW_UID | UDIAG_SHOW_PEER, 7, REQUEST_NOBODYS),
        (1, UDIAG_SHOW_UID, 1, REQUEST_INODE_1),
    ],
)
def test_requests_are_byte_for_byte_what_the_kernel_answered(
    inode: int, show: int, seq: int, captured: bytes
) -> None:
    assert encode_query(inode, show, seq) == captured


@pytest.mark.parametrize(
    ("reply", "info"),
    [
        (REPLY_PEER_OF_B, UnixSocketInfo(2537766, socket.SOCK_DGRAM, peer_inode=2537765)),
        (REPLY_UID_OF_A, UnixSocketInfo(2537765, socket.SOCK_DGRAM, uid=0)),
        (REPLY_STREAM, UnixSocketInfo(2537769, socket.SOCK_STREAM, uid=0)),
        (REPLY_NOBODYS, UnixSocketInfo(2537072, socket.SOCK_DGRAM, uid=65534)),
    ],
)
def test_captured_replies_decode_to_the_socket_asked_about(
    reply: bytes, info: UnixSocketInfo
) -> None:
    assert decode_reply(reply) == info


def test_a_netlink_error_is_an_oserror_with_the_kernels_errno() -> None:
    with pytest.raises(OSError, match="sock_diag: No such file or directory") as raised:
        decode_reply(REPLY_NO_SUCH_SOCKET)
    assert raised.value.errno == errno.ENOENT


# --- hostile replies ----------------------------------------------------------------------


def _give_up(signum: int, frame: FrameType | None) -> None:
    raise TimeoutError("decode_reply did not return within a second")


@pytest.fixture
def one_second() -> Iterator[None]:
    """Fail, rather than hang, if the decoder loops without end."""
    previous = signal.signal(signal.SIGALRM, _give_up)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


HEADER = struct.Struct("=IHHII")


def message(body: bytes, msg_type: int = 20, length: int | None = None) -> bytes:
    """A netlink message around ``body``; ``length`` overrides what its header claims."""
    claimed = HEADER.size + len(body) if length is None else length
    return HEADER.pack(claimed, msg_type, 0, 1, 0) + body


def attribute(attr_type: int, value: bytes, length: int | None = None) -> bytes:
    """A netlink attribute, padded to 4 bytes; ``length`` overrides its nla_len."""
    claimed = 4 + len(value) if length is None else length
    return struct.pack("=HH", claimed, attr_type) + value + bytes(-len(value) % 4)


DIAG_MSG = REPLY_UID_OF_A[16:32]  # unix_diag_msg of a datagram socket
UID, PEER, SHUTDOWN = 7, 2, 6

HOSTILE = {
    "empty": b"",
    "shorter than a header": REPLY_UID_OF_A[:15],
    "a header and nothing else": message(b""),
    "unix_diag_msg cut short": message(DIAG_MSG[:10]),
    "length says more than came": REPLY_UID_OF_A[:40],
    "length 0xffffffff": message(DIAG_MSG, length=0xFFFFFFFF),
    "length 0": message(DIAG_MSG, length=0),
    "length smaller than unix_diag_msg": message(DIAG_MSG, length=20),
    "attribute of length 0": message(DIAG_MSG + attribute(UID, b"", length=0) + bytes(8)),
    "attribute of length 2": message(DIAG_MSG + attribute(SHUTDOWN, b"", length=2) + bytes(8)),
    "attribute longer than the message": message(
        DIAG_MSG + attribute(UID, b"\0\0\0\0", length=0xFFFF)
    ),
    "uid attribute without its value": message(DIAG_MSG + attribute(UID, b"")),
    "uid attribute with half a value": message(DIAG_MSG + attribute(UID, b"\xfe\xff")),
    # A uid with no value must not be read from the next attribute's header (here: uid 0).
    "uid attribute followed by another": message(
        DIAG_MSG + attribute(UID, b"") + attribute(SHUTDOWN, b"\0")
    ),
    "peer attribute without its value": message(DIAG_MSG + attribute(PEER, b"")),
    "error message without its error code": message(b"", msg_type=2),
    "error code 0 (an acknowledgement, not an answer)": message(b"\0\0\0\0", msg_type=2),
    "positive error code": message(struct.pack("=i", 5), msg_type=2),
    "NLMSG_DONE instead of an answer": message(DIAG_MSG, msg_type=3),
}


@pytest.mark.usefixtures("one_second")
@pytest.mark.parametrize("reply", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_malformed_reply_is_an_oserror_that_names_sock_diag(reply: bytes) -> None:
    with pytest.raises(OSError, match="sock_diag: ") as raised:
        decode_reply(reply)
    assert raised.value.errno, "an errno the server's log can show"


@pytest.mark.usefixtures("one_second")
@pytest.mark.parametrize("reply", [*CAPTURED_REPLIES, REPLY_NO_SUCH_SOCKET], ids=CAPTURED_NAMES)
def test_every_reply_cut_short_is_an_oserror(reply: bytes) -> None:
    for size in range(len(reply)):
        with pytest.raises(OSError, match="sock_diag: "):
            decode_reply(reply[:size])


@pytest.mark.usefixtures("one_second")
def test_ten_thousand_attributes_are_walked_quickly() -> None:
    many = b"".join(attribute(SHUTDOWN, b"\0") for _ in range(10_000))
    reply = message(DIAG_MSG + many + attribute(UID, b"\x39\x30\0\0"))
    assert decode_reply(reply) == UnixSocketInfo(2537765, socket.SOCK_DGRAM, uid=12345)


def _decodes_or_refuses(data: bytes) -> None:
    try:
        info = decode_reply(data)
    except OSError as exc:
        assert str(exc.strerror).startswith("sock_diag: ")
    else:
        assert isinstance(info, UnixSocketInfo)


@settings(max_examples=300, deadline=1000)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_give_an_oserror(data: bytes) -> None:
    _decodes_or_refuses(data)


@settings(max_examples=300, deadline=1000)
@given(
    reply=st.sampled_from(CAPTURED_REPLIES),
    changes=st.lists(st.tuples(st.integers(0, 47), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_captured_replies_with_bytes_changed_decode_or_give_an_oserror(
    reply: bytes, changes: list[tuple[int, int]]
) -> None:
    data = bytearray(reply)
    for offset, value in changes:
        data[offset] = value
    _decodes_or_refuses(bytes(data))
