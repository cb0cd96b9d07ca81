"""A clean stop at any moment, and the right pid for whoever probes the switch's sockets.

* **Early signals.** From the moment the command line is parsed until trio's signal receiver
  takes over, SIGINT and SIGTERM are only noted (``install``), so that a service manager
  stopping the switch while it binds or starts gets a clean stop (status 0, every socket file
  removed) instead of the default action (death by the signal, the files left behind). SIGUSR2
  (restart) is noted and ignored until the switch serves, as its default action would kill it.
* **The listening sockets' owner.** A unix listening socket's ``SO_PEERCRED``, which a client
  (and the "another server attached (pid N)" check) reads, is recorded by ``listen()``: after
  ``-daemon`` forks, the sockets listen again (``relisten``) so that it names the live daemon.
* **Readiness without a nursery's start.** ``ReadyReporter`` stands for ``task_status``: a
  switch stopped before it was ready simply returns, where ``nursery.start`` would raise.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from types import FrameType
from typing import Any

from umlswitch.listener import LISTEN_BACKLOG

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_noted: list[int] = []


def _note(signum: int, frame: FrameType | None) -> None:
    _noted.append(signum)


def install() -> None:
    """Note SIGINT, SIGTERM and SIGUSR2 from now on, until trio's receiver replaces us."""
    for signum in (*STOP_SIGNALS, signal.SIGUSR2):
        signal.signal(signum, _note)


def stop_requested() -> signal.Signals | None:
    """The stop signal noted so far, if any."""
    for signum in _noted:
        if signum in STOP_SIGNALS:
            return signal.Signals(signum)
    return None


def relisten(sockets: list[socket.socket | None]) -> None:
    """Listen again on our unix listening sockets: their SO_PEERCRED becomes this process's."""
    for sock in sockets:
        if sock is not None and sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM:
            sock.listen(LISTEN_BACKLOG)


class ReadyReporter:
    """A ``task_status`` that calls ``on_ready(value)`` once, and nothing else."""

    def __init__(self, on_ready: Callable[[Any], None]) -> None:
        self.on_ready = on_ready
        self.value: Any = None
        self.ready = False

    def started(self, value: Any = None) -> None:
        self.value, self.ready = value, True
        self.on_ready(value)


def write_ready_byte(fd: int | None) -> None:
    """Tell the -daemon parent waiting on ``fd`` that the switch serves."""
    if fd is not None:
        os.write(fd, b"1")
        os.close(fd)
