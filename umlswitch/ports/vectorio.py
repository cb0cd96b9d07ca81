"""Batch receive and send of datagrams: ``recvmmsg`` and ``sendmmsg`` through ``ctypes``.

Python's socket module has no vector calls, and a ``recv`` plus a ``send`` per frame, each
wrapped in Python, is most of a switch's cost per frame. Here one ``recvmmsg`` reads up to
``BATCH`` datagrams into one preallocated area (slot ``i`` at ``i * slot_size``), their lengths
are read through a ``memoryview`` of the ``mmsghdr`` array, and one ``sendmmsg`` per egress port
sends a whole batch from a prebuilt ``iovec`` array whose bases and lengths are written through a
``memoryview`` too. No allocation per frame, one system call per batch.

Everything is prepared once per port (the arrays, their addresses); the calls take plain ints.
Frames of consecutive slots (the usual batch: every frame to one port) have their ``iovec``s
written with two slice copies (the slots' addresses, kept per receive area, and their lengths).
Linux only (the calls are Linux's); ``available()`` says whether libc has them.
"""

from __future__ import annotations

import array
import ctypes
import errno
import os
import socket

from umlswitch.fabric.batch import FrameBatch

_MSG_DONTWAIT = socket.MSG_DONTWAIT
_RECV_FLAGS = socket.MSG_DONTWAIT | socket.MSG_TRUNC


class _Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint))


_MMSG_SIZE = ctypes.sizeof(_Mmsghdr)  # 64 on x86-64
_LEN_INDEX = _Mmsghdr.msg_len.offset // 4  # msg_len as the n-th uint32 of one record
_LEN_STRIDE = _MMSG_SIZE // 4

try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _recvmmsg = _libc.recvmmsg
    _sendmmsg = _libc.sendmmsg
except (OSError, AttributeError):  # not glibc/Linux: callers keep their plain paths
    _recvmmsg = _sendmmsg = None  # type: ignore[assignment]
else:
    _recvmmsg.argtypes = (
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_void_p,
    )
    _recvmmsg.restype = ctypes.c_int
    _sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    _sendmmsg.restype = ctypes.c_int


def available() -> bool:
    return _recvmmsg is not None and _sendmmsg is not None


def _os_error() -> OSError:
    code = ctypes.get_errno()
    if code in (errno.EAGAIN, errno.EWOULDBLOCK):
        return BlockingIOError(code, os.strerror(code))
    return OSError(code, os.strerror(code))


class _MessageVector:
    """``count`` mmsghdr records, record ``i`` pointing at iovec ``i`` (one buffer each), in
    bytearrays so that memoryviews can read and write their fields."""

    def __init__(self, count: int) -> None:
        self.raw = bytearray(_MMSG_SIZE * count)
        self.raw_iov = bytearray(ctypes.sizeof(_Iovec) * count)
        messages = (_Mmsghdr * count).from_buffer(self.raw)
        self.iovecs = (_Iovec * count).from_buffer(self.raw_iov)
        self.address = ctypes.addressof(messages)
        base = ctypes.addressof(self.iovecs)
        for i in range(count):
            messages[i].msg_hdr.msg_iov = base + i * ctypes.sizeof(_Iovec)
            messages[i].msg_hdr.msg_iovlen = 1
        del messages  # its export of raw is released; the memory stays put (raw never resizes)


class BatchReceiver:
    """Reads up to ``count`` datagrams per call into one ``FrameBatch``, from any socket."""

    def __init__(self, slot_size: int, count: int) -> None:
        self.batch = batch = FrameBatch(slot_size, count)
        vector = self._vector = _MessageVector(count)
        area = (ctypes.c_char * len(batch.data)).from_buffer(batch.data)
        batch.address = ctypes.addressof(area)
        del area
        for i in range(count):
            vector.iovecs[i].iov_base = batch.address + i * slot_size
            vector.iovecs[i].iov_len = slot_size
        self._address = vector.address
        self._count = self.capacity = count
        self._words = memoryview(vector.raw).cast("I")

    def receive(self, fd: int) -> int:
        """Read what socket ``fd`` has queued (at most ``count``) into the batch; 0 if nothing.

        The batch's lengths are the datagrams' real lengths (``MSG_TRUNC``): more than
        ``slot_size`` for one that did not fit. Raises OSError for a receive error.
        """
        got: int = _recvmmsg(fd, self._address, self._count, _RECV_FLAGS, None)
        if got < 0:
            exc = _os_error()
            if isinstance(exc, BlockingIOError) or exc.errno == errno.EINTR:
                return 0
            raise exc
        batch = self.batch
        batch.lengths = self._words[_LEN_INDEX : _LEN_INDEX + got * _LEN_STRIDE : _LEN_STRIDE]
        batch.count = got
        return got


class BatchSender:
    """Sends frames of ``FrameBatch``es with one ``sendmmsg``, on any connected socket."""

    def __init__(self, count: int) -> None:
        vector = self._vector = _MessageVector(count)
        self._address = vector.address
        self._iov = memoryview(vector.raw_iov).cast("Q")  # base, length, base, length, ...
        self.count = count
        self._bases_key = (0, 0)
        self._bases = array.array("Q")

    def send(self, fd: int, batch: FrameBatch, indices: list[int]) -> int:
        """Send the frames in slots ``indices`` (at most ``count``) on socket ``fd``, in order;
        return how many the kernel took (fewer when the receiver's queue filled up). Raises OSError
        (BlockingIOError when it took none)."""
        iov = self._iov
        base = batch.address
        slot_size = batch.slot_size
        lengths = batch.lengths
        n = len(indices)
        first = indices[0]
        if indices[-1] - first == n - 1:  # consecutive slots: two slice copies, in C
            key = (base, slot_size)
            if self._bases_key != key:  # the slots' addresses, once per receive area
                self._bases_key = key
                self._bases = array.array("Q", range(base, base + len(batch.data), slot_size))
            iov[0 : 2 * n : 2] = self._bases[first : first + n]
            iov[1 : 2 * n : 2] = array.array("Q", lengths[first : first + n])
        else:
            j = 0
            for i in indices:
                iov[j] = base + i * slot_size
                iov[j + 1] = lengths[i]
                j += 2
        sent: int = _sendmmsg(fd, self._address, len(indices), _MSG_DONTWAIT)
        if sent < 0:
            raise _os_error()
        return sent
