"""Run a umlswitch for a test: in-process inside a trio test, or as a subprocess.

``run_switch`` yields the live ``RunningSwitch`` (its control path and exact counters, read
straight from the fabric); ``SwitchProcess`` starts ``python -m umlswitch`` on a temporary socket
for synchronous suites, and exposes the control path and the switch's log.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import trio

from umlswitch.config import SwitchConfig, mgmt_path_for
from umlswitch.daemon import Switch, serve

READY = "attached to unix socket"


@dataclass
class RunningSwitch:
    """An in-process switch: where to attach, and its counters."""

    switch: Switch

    @property
    def control_path(self) -> str:
        return self.switch.control_path

    @property
    def mgmt_path(self) -> str | None:
        """The management socket (``umlswitch ctl``, ``vdeterm``), None with no_mgmt=True."""
        return self.switch.mgmt_path

    @property
    def stream_addresses(self) -> list[str]:
        """The ``--stream`` listeners (``streams=`` option) as ``attach(..., transport="stream")``
        takes them: ``unix:PATH``, ``tcp:HOST:PORT`` (the port really bound, for port 0)."""
        return [stream.name for stream in self.switch.streams]

    def counters(self) -> dict[str, Any]:
        """Per-port traffic and drop counters, plus switch-wide events."""
        fabric = self.switch.fabric
        return {
            "ports": {pid: port.stats.as_dict() for pid, port in fabric.ports.items()},
            "mac_table": len(fabric.table),
            "fabric_events": dict(fabric.events),
            "control_events": dict(self.switch.control.events),
        }

    def mac_table(self) -> dict[str, int]:
        """Learned MAC (as aa:bb:..; ``aa:bb:.. vlan 10`` while VLANs are on) -> port number."""
        from umlswitch.fabric.vlan import format_key

        fabric = self.switch.fabric
        return {format_key(e.mac): e.port for e in fabric.table.entries(fabric.now)}


@asynccontextmanager
async def run_switch(
    directory: str | os.PathLike[str] | None = None, **options: Any
) -> AsyncIterator[RunningSwitch]:
    """Run umlswitch in this trio run; ``options`` are ``SwitchConfig`` fields (e.g. hub=True)."""
    own_dir = directory is None
    base = tempfile.mkdtemp(prefix="umlswitch-") if directory is None else os.fspath(directory)
    try:
        config = SwitchConfig(control_path=os.path.join(base, "ctl"), **options)
        async with trio.open_nursery() as nursery:
            switch = await nursery.start(
                functools.partial(serve, config, handle_signals=False, watch_stdin=False)
            )
            try:
                yield RunningSwitch(switch)
            finally:
                switch.shutdown()
    finally:
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)


class SwitchProcess:
    """``python -m umlswitch`` on a temporary control socket, stopped by ``stop()`` or ``with``."""

    def __init__(
        self, *args: str, directory: str | None = None, ready_timeout: float = 10.0
    ) -> None:
        self._own_dir = directory is None
        self.directory = tempfile.mkdtemp(prefix="umlswitch-") if directory is None else directory
        self.control_path = os.path.join(self.directory, "ctl")
        self.mgmt_path = mgmt_path_for(self.control_path)  # unless args say --mgmt/--no-mgmt
        self.log_path = os.path.join(self.directory, "umlswitch.log")
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "umlswitch", "-unix", self.control_path, *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + ready_timeout
        while READY not in self.log:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"umlswitch did not start:\n{self.log}")
            time.sleep(0.02)

    @property
    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def counters(self) -> dict[str, Any]:
        """Per-port traffic and drop counters (by port number) and the switch-wide ``info``,
        read over the management socket (``umlswitch ctl --json port/print`` and ``showinfo``)."""
        from umlswitch.mgmt.client import connect

        if self.mgmt_path is None:
            raise RuntimeError("this switch runs without a management socket (--no-mgmt)")
        with connect(self.mgmt_path) as client:
            ports = client.json("port/print")["ports"]
            return {"ports": {p["id"]: p for p in ports}, "info": client.json("showinfo")}

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        code = self.process.wait()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)
        return code

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
