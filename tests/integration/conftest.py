"""Fixtures that run the real umlswitch daemon as a subprocess on tmp_path sockets."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from umlswitch.testing import SwitchProcess


@pytest.fixture
def start_switch(tmp_path: Path) -> Iterator[Callable[..., SwitchProcess]]:
    """Factory: start_switch(*args, **keywords) -> a ready ``SwitchProcess`` on ``ctl`` (the
    fixture) with its log in tmp_path; every one is stopped at teardown."""
    switches: list[SwitchProcess] = []

    def start(*args: str, **keywords: Any) -> SwitchProcess:
        switch = SwitchProcess(*args, directory=str(tmp_path), **keywords)
        switches.append(switch)
        return switch

    yield start
    failures = []
    for switch in switches:
        try:
            switch.stop()
        except RuntimeError as exc:  # one that ignored SIGTERM: stop the others all the same
            failures.append(exc)
    if failures:
        raise failures[0]


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Sockets a test opens, closed at teardown whatever happened."""
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


@pytest.fixture
def ctl(tmp_path: Path) -> str:
    """The control socket of a switch from ``start_switch`` (unless it is given another)."""
    return str(tmp_path / "ctl")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
