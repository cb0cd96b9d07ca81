"""Run part of a test inside a private network namespace made for it.

``private_netns()`` creates a namespace with ``ip netns add``, brings its loopback up, and moves
the *calling thread* into it with setns(2) (Python 3.11 has no ``os.setns``: ctypes). Sockets the
test opens and processes it starts from then on live in the namespace (abstract unix sockets,
taps, routes...), so a switch, its UML guests and the test's own clients meet there, and nothing
touches the host's network. On exit the thread goes back and the namespace is deleted.
``entered_netns(name)`` moves the thread into a namespace that exists already (made with
``ip netns add``), for tests that run programs in several.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count

CLONE_NEWNET = 0x40000000
_names = count(1)


def netns_unavailable() -> str | None:
    """Why private namespaces cannot be used here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2 (ip)"
    return None


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def ip(*args: str) -> str:
    """Run ``ip ARGS`` (in the current namespace); raise with its stderr on failure."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def netns_name(prefix: str = "umlsw") -> str:
    """A name for a new namespace, unique to this process."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


@contextmanager
def entered_netns(name: str) -> Iterator[str]:
    """Move the calling thread into the existing namespace ``name`` for the block, then back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield name
        finally:
            _setns(home)
    finally:
        os.close(home)


@contextmanager
def private_netns(prefix: str = "umlsw") -> Iterator[str]:
    """Enter a fresh network namespace for the duration of the block; yield its name."""
    name = netns_name(prefix)
    ip("netns", "add", name)
    try:
        with entered_netns(name):
            ip("link", "set", "lo", "up")
            yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
