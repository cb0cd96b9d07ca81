"""Fixtures that run the real umlswitch daemon as a subprocess on tmp_path sockets."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.l2 import ARP

from umlswitch.testing import SwitchProcess, SyncPort, attach_sync

MAC_A = "02:00:00:00:00:0a"  # the ``lan`` fixture's ports
MAC_B = "02:00:00:00:00:0b"


@pytest.fixture
def switch(tmp_path: Path) -> Iterator[SwitchProcess]:
    """A switch with default options in tmp_path (a test file may define its own)."""
    with SwitchProcess(directory=str(tmp_path)) as process:
        yield process


@pytest.fixture
def lan(switch: SwitchProcess) -> Iterator[tuple[SyncPort, SyncPort]]:
    """Ports 1 (MAC_A) and 2 (MAC_B), each learned from one broadcast ARP."""
    with (
        attach_sync(switch.control_path, mac=MAC_A) as a,
        attach_sync(switch.control_path, mac=MAC_B) as b,
    ):
        a.send(a.ether() / ARP(pdst="10.0.0.2"))
        b.receive(match=ARP)
        b.send(b.ether() / ARP(pdst="10.0.0.1"))
        a.receive(match=ARP)
        yield a, b


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


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nobody holds now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
