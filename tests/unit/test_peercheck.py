"""The netlink (sock_diag / unix_diag) messages of the peer-ownership check, without a kernel.

``peercheck.encode_query`` builds the request and ``peercheck.decode_reply`` reads the kernel's
answer; only root-only tests reach them through the daemon, so their bytes are checked here
against messages captured from a real kernel.

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
import socket

import pytest

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
