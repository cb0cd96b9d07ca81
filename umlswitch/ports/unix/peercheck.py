"""Verify that the data socket a control client names is its own (no aiming frames elsewhere).

A control request names the client's data socket, and the switch then sends that socket frames.
Without a check a client could name another user's socket, or a system daemon's datagram socket,
and have the switch aim traffic at it. After connecting a socket to the named address, the switch
asks the kernel's socket diagnostics (NETLINK_SOCK_DIAG, ``unix_diag``) which socket it is
connected to, and refuses the client unless that socket

* is a datagram socket,
* was created by the same uid as the control connection's peer (``SO_PEERCRED``) — root gets no
  exemption, and
* is held by the peer process itself, when the switch may read ``/proc/PID/fd`` (always as root;
  for another user's process otherwise not, and then the uid check stands alone).

The netlink message packing and parsing are pure functions; ``query`` does the I/O.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
UDIAG_SHOW_PEER = 0x04
UDIAG_SHOW_UID = 0x40
UNIX_DIAG_PEER = 2
UNIX_DIAG_UID = 7
NO_COOKIE = 0xFFFFFFFF

_NLMSGHDR = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBHIIIII")  # family, protocol, pad, states, ino, show, cookie[2]
_MSG = struct.Struct("=BBBBIII")  # family, type, state, pad, ino, cookie[2]
_ATTR = struct.Struct("=HH")


@dataclass(frozen=True)
class UnixSocketInfo:
    inode: int
    type: int
    uid: int | None = None
    peer_inode: int | None = None


def encode_query(inode: int, show: int, seq: int = 1) -> bytes:
    """A sock_diag request for the unix socket with ``inode``."""
    body = _REQ.pack(socket.AF_UNIX, 0, 0, 0xFFFFFFFF, inode, show, NO_COOKIE, NO_COOKIE)
    return (
        _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0)
        + body
    )


def decode_reply(data: bytes) -> UnixSocketInfo:
    """Parse the answer to ``encode_query``; raise OSError for a netlink error, and for a reply
    that is cut short or whose lengths do not add up (EPROTO: the kernel cannot tell)."""
    if len(data) < _NLMSGHDR.size:
        raise _malformed(f"{len(data)} bytes, shorter than a netlink header")
    length, msg_type, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data)
    if not _NLMSGHDR.size <= length <= len(data):
        raise _malformed(f"its header claims {length} bytes, {len(data)} came")
    if msg_type == NLMSG_ERROR:
        if length < _NLMSGHDR.size + 4:
            raise _malformed("an error message without its error code")
        (error,) = struct.unpack_from("=i", data, _NLMSGHDR.size)
        if error >= 0:
            raise _malformed(f"an error message with error code {error} instead of an answer")
        raise OSError(-error, f"sock_diag: {os.strerror(-error)}")
    if msg_type != SOCK_DIAG_BY_FAMILY:
        raise _malformed(f"unexpected netlink message type {msg_type}")
    if length < _NLMSGHDR.size + _MSG.size:
        raise _malformed(f"{length} bytes, too short for unix_diag_msg")
    _family, sock_type, _state, _pad, inode, _c0, _c1 = _MSG.unpack_from(data, _NLMSGHDR.size)
    uid = peer = None
    offset = _NLMSGHDR.size + _MSG.size
    while offset + _ATTR.size <= length:
        attr_len, attr_type = _ATTR.unpack_from(data, offset)
        if not _ATTR.size <= attr_len <= length - offset:
            raise _malformed(f"the attribute at byte {offset} claims {attr_len} bytes")
        if attr_type in (UNIX_DIAG_UID, UNIX_DIAG_PEER):
            if attr_len < _ATTR.size + 4:
                raise _malformed(f"attribute {attr_type} at byte {offset} has no 4-byte value")
            (value,) = struct.unpack_from("=I", data, offset + _ATTR.size)
            if attr_type == UNIX_DIAG_UID:
                uid = value
            else:
                peer = value
        offset += (attr_len + 3) & ~3
    return UnixSocketInfo(inode, sock_type, uid, peer)


def _malformed(what: str) -> OSError:
    return OSError(errno.EPROTO, f"sock_diag: malformed reply: {what}")


def query(inode: int, show: int) -> UnixSocketInfo:
    """Ask the kernel about the unix socket ``inode``."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(1.0)
        nl.sendto(encode_query(inode, show), (0, 0))
        return decode_reply(nl.recv(65536))


def holds_socket(pid: int, inode: int) -> bool | None:
    """Whether process ``pid`` holds socket ``inode``; None if we may not look.

    Descriptors are read newest (highest) first and the search stops at the first match: a
    client's data socket is usually among its latest descriptors, so attaching stays cheap even
    for a process that holds thousands of ports.
    """
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except PermissionError:
        return None
    except OSError:
        return False  # the process is gone: it holds nothing
    wanted = f"socket:[{inode}]"
    for name in sorted(names, key=int, reverse=True):
        try:
            if os.readlink(f"{fd_dir}/{name}") == wanted:
                return True
        except OSError:
            continue
    return False


def check_connected_socket(sock: socket.socket, pid: int, uid: int) -> str | None:
    """None if the socket ``sock`` is connected to belongs to process ``pid`` of ``uid``.

    Otherwise a sentence saying why not (for the log). OSError if the kernel cannot tell.
    """
    ours = query(os.fstat(sock.fileno()).st_ino, UDIAG_SHOW_PEER)
    if ours.peer_inode is None:
        return "its data socket could not be identified"
    theirs = query(ours.peer_inode, UDIAG_SHOW_UID)
    if theirs.type != socket.SOCK_DGRAM:
        return "the socket it names is not a datagram socket"
    if theirs.uid is not None and theirs.uid != uid:
        return f"the socket it names belongs to uid {theirs.uid}, not to the client (uid {uid})"
    if holds_socket(pid, ours.peer_inode) is False:
        return f"the socket it names is not held by the client process (pid {pid})"
    return None


def self_test() -> str | None:
    """None if verification works on this kernel, else why not."""
    try:
        a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with a, b:
            a.bind(b"\0umlswitch-peercheck-" + str(os.getpid()).encode())
            b.connect(a.getsockname())
            reason = check_connected_socket(b, os.getpid(), os.geteuid())
            return None if reason is None else f"self-test failed: {reason}"
    except OSError as exc:
        return f"socket diagnostics unavailable ({exc.strerror or exc})"
