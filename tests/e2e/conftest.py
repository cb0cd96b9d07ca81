"""Fixtures for the end-to-end tests: the switch under test and real UML guests, as subprocesses.

* `switch(hub=False, *extra_args) -> Switch` starts the switch under test on `<tmp>/switch.ctl`
  (`UMLSWITCH_E2E_SWITCH=uml_switch` swaps in the C reference); stopped at teardown.
* `guests(switch, [commands of g1], [commands of g2], ...) -> list[Guest]` boots one UML guest
  per command list, in parallel, and returns once all are up; all are killed at teardown.

The tests skip, with the reason, unless we are root and UML and the guest tools are installed.
When a test fails, the switch log and every guest console are added to its report.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from .uml import GUEST_PATH, LINUX, GuestPool, Switches, read_log

GUEST_TOOLS = ("ip", "ping", "iperf3", "ss", "halt")

_LOGS = pytest.StashKey[list[Callable[[], list[Path]]]]()


def _why_not_runnable() -> str | None:
    if os.geteuid() != 0:
        return "e2e: booting UML guests with the host's / as hostfs root needs root"
    if not os.access(LINUX, os.X_OK):
        return f"e2e: {LINUX} is missing (Debian package user-mode-linux)"
    missing = [tool for tool in GUEST_TOOLS if shutil.which(tool, path=GUEST_PATH) is None]
    if missing:
        return f"e2e: the guests need {', '.join(missing)} (not found in {GUEST_PATH})"
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        return (
            "e2e: no C compiler for the UML FP-state shim (tests/conftest.py; Debian package gcc)"
        )
    return None


@pytest.fixture(autouse=True)
def _e2e_requirements(request: pytest.FixtureRequest) -> None:
    reason = _why_not_runnable()
    if reason is not None:
        pytest.skip(reason)
    request.getfixturevalue("uml_shim")  # guests preload it (tests/conftest.py)


def _add_logs(request: pytest.FixtureRequest, logs: Callable[[], list[Path]]) -> None:
    request.node.stash.setdefault(_LOGS, []).append(logs)


@pytest.fixture
def switch(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Switches]:
    """Factory: `switch(hub=False, *extra_args)` starts a switch under test and returns it."""
    switches = Switches(tmp_path)
    _add_logs(request, switches.log_paths)
    yield switches
    switches.stop_all()


@pytest.fixture
def guests(tmp_path: Path, request: pytest.FixtureRequest, switch: Switches) -> Iterator[GuestPool]:
    """Factory: `guests(sw, [cmds of g1], [cmds of g2], ...)` boots guests on switch `sw`."""
    # Depends on `switch` so that guests go down before the switch they are attached to.
    pool = GuestPool(tmp_path)
    _add_logs(request, pool.log_paths)
    yield pool
    pool.stop_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the switch log and the guest consoles to the report of a failed test."""
    report = yield
    if report.failed:
        for log_paths in item.stash.get(_LOGS, []):
            for path in log_paths():
                report.sections.append((f"{call.when}: {path}", read_log(path)))
    return report
