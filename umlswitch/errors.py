"""Errors shared by the daemon and the ports it opens at start-up."""

from __future__ import annotations

import errno


class StartupError(Exception):
    """The switch cannot start; the message is one line saying what is wrong and what to do."""


def bind_hint(exc: OSError, protocol: str, host: str, port: int, users: str = "") -> str:
    """What to do when binding ``host:port`` failed with ``exc`` (for a StartupError)."""
    if exc.errno == errno.EADDRINUSE:
        by = f" (by {users}?)" if users else ""
        return f"{protocol} port {port} is in use{by}; choose another"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this host; give one that is (see: ip addr)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "run as a user who may bind it, or choose a port above 1023"
    return "check the address and port"
