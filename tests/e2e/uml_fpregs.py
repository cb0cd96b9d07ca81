"""Boot Debian's UML 6.1 on hosts whose XSAVE area is bigger than that UML expects (AVX-512, AMX).

UML 6.1 reads and writes its processes' FP registers with ``PTRACE_GETREGSET`` /
``PTRACE_SETREGSET`` ``NT_X86_XSTATE`` and a buffer of ``sizeof(struct _xstate)`` (832 bytes:
legacy area, XSAVE header, AVX). The host kernel refuses a ``SETREGSET`` of any size but its own
full XSAVE size with EFAULT, so on such a host every guest dies at init with "userspace - ptrace
set fp regs failed, errno = 14" and a kernel panic. UML probes for XSTATE once, with
``PTRACE_GETREGSET``; when that fails it uses ``PTRACE_GETFPREGS`` / ``PTRACE_SETFPREGS`` (the
512-byte FXSAVE area), which works. So ``python3 uml_fpregs.py LINUX ARGS...`` execs UML under a
seccomp filter that fails exactly that probe (EIO); ``command()`` is the prefix the end-to-end
tests and the benchmarks start guests with (empty where ``needed()`` finds the host accepts 832
bytes), and ``launcher()`` writes a script doing the same, for programs that take UML's path.
Pure Python (ctypes): no compiled code.

The cost: UML then switches only x87/SSE state between threads of one guest process (each guest
address space is a host process, so the host keeps the rest per process). The tests' guests
run single-threaded programs (sh, ping, iperf3 3.12).
"""

from __future__ import annotations

import ctypes
import functools
import os
import shlex
import signal
import struct
import sys
from pathlib import Path

PTRACE_TRACEME = 0
PTRACE_GETREGSET = 0x4204
PTRACE_SETREGSET = 0x4205
NT_X86_XSTATE = 0x202
UML_XSTATE_BYTES = 832  # sizeof(struct _xstate) as UML 6.1 uses it
AUDIT_ARCH_X86_64 = 0xC000003E
NR_PTRACE = 101  # x86_64
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def needed() -> bool:
    """True if this host refuses UML 6.1's 832-byte NT_X86_XSTATE writes (as it does to UML)."""
    pid = os.fork()
    if pid == 0:  # the tracee: stop, and die when the parent is done with it
        _libc.ptrace(PTRACE_TRACEME, 0, None, None)
        os.kill(os.getpid(), signal.SIGSTOP)
        os._exit(0)
    try:
        os.waitpid(pid, os.WUNTRACED)
        buf = ctypes.create_string_buffer(UML_XSTATE_BYTES)
        iov = _Iovec(ctypes.cast(buf, ctypes.c_void_p), UML_XSTATE_BYTES)
        if _libc.ptrace(PTRACE_GETREGSET, pid, NT_X86_XSTATE, ctypes.byref(iov)) != 0:
            return False  # no XSTATE regset at all: UML falls back by itself
        return bool(_libc.ptrace(PTRACE_SETREGSET, pid, NT_X86_XSTATE, ctypes.byref(iov)) != 0)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _filter() -> bytes:
    """Classic BPF: ptrace(PTRACE_GETREGSET, _, NT_X86_XSTATE, _) fails with EIO; all else runs."""
    ld, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
    allow, errno_eio = 0x7FFF0000, 0x00050000 | 5

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k)

    return b"".join(
        [
            op(ld, 4),  # seccomp_data.arch
            op(jeq, AUDIT_ARCH_X86_64, 0, 7),
            op(ld, 0),  # .nr
            op(jeq, NR_PTRACE, 0, 5),
            op(ld, 16),  # .args[0], low half: the request
            op(jeq, PTRACE_GETREGSET, 0, 3),
            op(ld, 32),  # .args[2], low half: the regset
            op(jeq, NT_X86_XSTATE, 0, 1),
            op(ret, errno_eio),
            op(ret, allow),
        ]
    )


def exec_without_xstate(argv: list[str]) -> None:
    """Exec `argv` with the NT_X86_XSTATE probe failing (the filter is inherited)."""
    code = ctypes.create_string_buffer(_filter())
    prog = _SockFprog(len(code.raw) // 8, ctypes.cast(code, ctypes.c_void_p))
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
    os.execv(argv[0], argv)


@functools.cache
def command() -> tuple[str, ...]:
    """What to put before UML's path on its command line: nothing, or this module's launcher."""
    if not needed():
        return ()
    return (sys.executable, "-P", str(Path(__file__).resolve()))


def launcher(directory: Path, linux: Path) -> Path:
    """A script in ``directory`` that runs ``linux`` with its arguments as ``command()`` says."""
    script = directory / "linux-fxsave"
    script.write_text(f'#!/bin/sh\nexec {shlex.join([*command(), str(linux)])} "$@"\n')
    script.chmod(0o755)
    return script


if __name__ == "__main__":
    exec_without_xstate(sys.argv[1:])
