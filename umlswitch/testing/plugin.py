"""pytest plugin (entry point ``pytest11``): fixtures for a running switch and attached ports.

* ``umlswitch_process``: a ``SwitchProcess`` (subprocess) per test, for any suite;
* ``umlswitch_attach``: a factory ``umlswitch_attach(mac=None) -> SyncPort`` on that switch,
  every port detached at teardown;
* ``umlswitch_switch``: an in-process ``RunningSwitch`` (async fixture, for pytest-trio tests).

Imports are deferred so that merely having umlswitch installed costs a pytest run nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from umlswitch.testing.port import SyncPort
    from umlswitch.testing.switch import RunningSwitch, SwitchProcess


@pytest.fixture
def umlswitch_process(tmp_path: Path) -> Iterator[SwitchProcess]:
    from umlswitch.testing.switch import SwitchProcess

    with SwitchProcess(directory=str(tmp_path)) as process:
        yield process


@pytest.fixture
def umlswitch_attach(umlswitch_process: SwitchProcess) -> Iterator[Callable[..., SyncPort]]:
    from umlswitch.testing.attaching import attach_sync

    ports: list[SyncPort] = []

    def factory(mac: str | None = None) -> SyncPort:
        port = attach_sync(umlswitch_process.control_path, mac=mac)
        ports.append(port)
        return port

    yield factory
    for port in ports:
        port.close()


@pytest.fixture
async def umlswitch_switch(tmp_path: Path) -> AsyncIterator[RunningSwitch]:
    from umlswitch.testing.switch import run_switch

    async with run_switch(tmp_path) as switch:
        yield switch
