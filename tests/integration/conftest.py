"""Fixtures that run the real umlswitch daemon as a subprocess on tmp_path sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.process import READY, LoggedProcess


class Daemon(LoggedProcess):
    """A umlswitch subprocess with its log in a file."""

    def __init__(self, tmp_path: Path, args: list[str], *, stdin: int | None = None) -> None:
        self.log_path = tmp_path / f"umlswitch-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "umlswitch", *args],
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        try:
            return super().stop(sig, timeout)
        finally:
            self._log.close()


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[object]:
    """Factory: start_daemon(*args) -> a ready Daemon; all are stopped at teardown."""
    daemons: list[Daemon] = []

    def start(*args: str, wait: bool = True, stdin: int | None = None) -> Daemon:
        daemon = Daemon(tmp_path, list(args), stdin=stdin)
        daemons.append(daemon)
        if wait:
            daemon.wait_for(READY)
        return daemon

    yield start
    for daemon in daemons:
        daemon.stop()  # also closes the log of one that already exited


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Sockets a test opens, closed at teardown whatever happened."""
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


@pytest.fixture
def ctl(tmp_path: Path) -> str:
    return str(tmp_path / "ctl")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
