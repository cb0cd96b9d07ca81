"""Run a umlswitch for a test: in-process inside a trio test, or as a subprocess.

``run_switch`` yields the live ``RunningSwitch`` (its control path and exact counters, read
straight from the fabric); ``SwitchProcess`` starts ``python -m umlswitch`` on a temporary socket
(or with a command line of the caller's) for synchronous suites, and exposes the control path,
the switch's log (and waiting for a line in it), its counters, and stopping it with a signal.

Both impair ports (as the management command ``port/impair``): ``switch.impair(port,
"out", loss=5, delay="40ms")``, ``switch.restore(port)``, and ``with switch.impaired(port,
...):`` which puts the port's previous impairment back when the block ends. ``port`` is a port
number or a harness port (``attach``, ``attach_sync``); settings take the keys of
``port/impair`` with text values as there (``"40ms"``, ``"20mbit"``) or numbers (percentages,
seconds, bits per second).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any, Self

import trio

from umlswitch.config import SwitchConfig, mgmt_path_for, parse_args
from umlswitch.daemon import READY, Switch, serve
from umlswitch.fabric.impair import (
    DIRECTIONS,
    Impairment,
    format_duration,
    format_rate,
    parse_impairment,
)
from umlswitch.mgmt.client import MgmtClient, MgmtError, connect
from umlswitch.ports.base import Port
from umlswitch.ports.unix.clients import describe_address

# A port of the switch: its number, or a harness port (AsyncPort, SyncPort) attached to it.
PortRef = Any


def impairment_words(settings: Mapping[str, object]) -> list[str]:
    """``port/impair``'s KEY=VALUE words from keyword settings: ``delay=0.04`` (seconds) or
    ``"40ms"``, ``rate=20e6`` (bits/s) or ``"20mbit"``, ``loss=5`` (percent), ``seed=1``."""
    words = []
    for key, value in settings.items():
        if isinstance(value, str):
            text = value
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{key}={value!r}: give a number or a string such as '40ms'")
        elif key in ("delay", "jitter"):
            text = format_duration(float(value))
        elif key == "rate":
            text = format_rate(round(value))
        else:
            text = f"{value:.12g}"
        words.append(f"{key}={text}")
    return words


def _switch_socket(port: PortRef) -> str | None:
    """A harness port's data socket on the switch's side, as ``port/print`` shows it."""
    address = getattr(port, "switch_address", None)
    return None if address is None else describe_address(address)


class _Impairing:
    """``impair``, ``restore``, ``impairment`` and ``impaired`` on top of two primitives."""

    def _set_impairment(self, port: PortRef, direction: str, words: list[str] | None) -> Any:
        raise NotImplementedError

    def impairment(self, port: PortRef) -> dict[str, Any]:
        """The port's impairment: ``port/impair N``'s JSON (``in``, ``out``: None or the
        setting, seed, waiting frames and counters)."""
        doc: dict[str, Any] = self._set_impairment(port, "both", [])
        return doc

    def impair(self, port: PortRef, direction: str = "both", **settings: object) -> dict[str, Any]:
        """Impair ``direction`` (``in``: frames the port receives, ``out``: frames sent to it,
        ``both``) of ``port``, replacing what it had there; return ``impairment(port)``."""
        if not settings:
            raise ValueError("give settings, e.g. loss=5, delay='40ms'; restore() ends them")
        doc: dict[str, Any] = self._set_impairment(port, direction, impairment_words(settings))
        return doc

    def restore(self, port: PortRef, direction: str = "both") -> dict[str, Any]:
        """End the impairment of ``direction`` of ``port``: a perfect link again."""
        doc: dict[str, Any] = self._set_impairment(port, direction, None)
        return doc

    @contextmanager
    def impaired(
        self, port: PortRef, direction: str = "both", **settings: object
    ) -> Iterator[dict[str, Any]]:
        """``impair`` for the block; then the port's impairment before it (usually none) is put
        back, also when the block fails. A port that has left by then is left alone."""
        before = self.impairment(port)
        doc = self.impair(port, direction, **settings)
        try:
            yield doc
        finally:
            try:
                for name in DIRECTIONS:
                    side = before[name]
                    words = None if side is None else Impairment(**side["setting"]).words()
                    self._set_impairment(port, name, words)
            except LookupError:
                pass  # the port is gone


@dataclass
class RunningSwitch(_Impairing):
    """An in-process switch: where to attach, its counters, and impairment of its ports."""

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

    def port_number(self, port: PortRef) -> int:
        """The switch's number of ``port`` (a harness port, or a number, given back)."""
        if isinstance(port, int):
            return port
        wanted = _switch_socket(port)
        for number, candidate in self.switch.fabric.ports.items():
            info = candidate.describe() if isinstance(candidate, Port) else None
            if wanted is not None and info is not None and info.data_socket == wanted:
                return number
        raise LookupError(f"{port!r} is not attached to this switch")

    def _set_impairment(self, port: PortRef, direction: str, words: list[str] | None) -> Any:
        from umlswitch.mgmt.views import impair_doc

        number = self.port_number(port)
        fabric_port = self.switch.fabric.ports.get(number)
        if fabric_port is None:
            raise LookupError(f"no port {number}")
        if words is None:
            self.switch.impair.set(fabric_port, direction, None)
        elif words:
            self.switch.impair.set(fabric_port, direction, parse_impairment(words))
        return impair_doc(self.switch, fabric_port)


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


def _mgmt_socket(args: list[str], control_path: str) -> str | None:
    """The management socket a switch with command line ``args`` serves (--mgmt, --no-mgmt);
    for a command line the switch will refuse, the default beside ``control_path``."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return parse_args(args).mgmt_socket
    except SystemExit:
        return mgmt_path_for(control_path)


class SwitchProcess(_Impairing):
    """``python -m umlswitch`` as a subprocess, stopped by ``stop()`` or ``with``; its ports are
    impaired over the management socket.

    ``SwitchProcess(*args)`` runs ``python -m umlswitch -unix CONTROL_PATH *args`` (so the first
    of ``args`` may be the shared data socket of v0 clients) with stdin on /dev/null and its
    output in ``log_path``, and returns once the switch says it is ready (``READY`` in the log).
    Keywords:

    * ``directory``: where the control socket (``ctl``) and the log go; by default a new
      temporary directory, removed by ``stop()``;
    * ``control_path``: the control socket, instead of ``DIRECTORY/ctl``;
    * ``unix=False``: ``args`` are the whole command line, without ``-unix CONTROL_PATH``
      (``--vde DIR``, or none for socket activation); give ``control_path`` where the switch
      will serve, for ``control_path`` and ``mgmt_path`` to say so;
    * ``launcher``: a command that runs the switch, ``python -m umlswitch ...`` appended to it
      (``["ip", "netns", "exec", "ns1"]``, ``["systemd-socket-activate", "-l", CTL]``);
    * ``wait_ready=False``: return at once, for a switch that should fail or that announces
      itself elsewhere (``wait_for_log(READY)`` waits later); ``ready_timeout``: how long to wait;
    * anything else goes to ``subprocess.Popen``: ``stdin`` (a pipe's read end keeps the switch
      watching it), ``env``, ``cwd``, ``pass_fds``.
    """

    def __init__(
        self,
        *args: str,
        directory: str | None = None,
        control_path: str | None = None,
        unix: bool = True,
        launcher: Sequence[str] = (),
        wait_ready: bool = True,
        ready_timeout: float = 10.0,
        **popen: Any,
    ) -> None:
        self._own_dir = directory is None
        self.directory = tempfile.mkdtemp(prefix="umlswitch-") if directory is None else directory
        self.control_path = control_path or os.path.join(self.directory, "ctl")
        switch_args = ["-unix", self.control_path, *args] if unix else list(args)
        self.mgmt_path = _mgmt_socket(switch_args, self.control_path)
        command = [*launcher, sys.executable, "-m", "umlswitch", *switch_args]
        popen.setdefault("stdin", subprocess.DEVNULL)
        with _new_log(self.directory) as log:
            self.log_path = log.name
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **popen)
        if not wait_ready:
            return
        try:
            self.wait_for_log(READY, ready_timeout)
        except AssertionError as exc:
            self.stop()
            raise RuntimeError(f"umlswitch did not start: {exc}") from None

    @property
    def log(self) -> str:
        """All the switch has written to stdout and stderr so far."""
        with open(self.log_path) as f:
            return f.read()

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        """Return once ``text`` is in the log; AssertionError (with the log) if the switch exits
        first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while text not in self.log:
            if self.process.poll() is not None and text not in self.log:
                raise AssertionError(
                    f"umlswitch exited ({self.process.returncode}) before logging {text!r}:\n"
                    f"{self.log}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the log within {timeout} s:\n{self.log}")
            time.sleep(0.01)

    def manage(self) -> MgmtClient:
        """A session on the switch's management socket (``with switch.manage() as client:
        client.json("port/print")``); RuntimeError if it runs with --no-mgmt."""
        if self.mgmt_path is None:
            raise RuntimeError("this switch runs without a management socket (--no-mgmt)")
        return connect(self.mgmt_path)

    def counters(self) -> dict[str, Any]:
        """Per-port traffic and drop counters (by port number) and the switch-wide ``info``,
        read over the management socket (``umlswitch ctl --json port/print`` and ``showinfo``)."""
        with self.manage() as client:
            ports = client.json("port/print")["ports"]
            return {"ports": {p["id"]: p for p in ports}, "info": client.json("showinfo")}

    def port_number(self, port: PortRef) -> int:
        """The switch's number of ``port`` (a harness port, or a number, given back)."""
        if isinstance(port, int):
            return port
        wanted = _switch_socket(port)
        for doc in self.counters()["ports"].values():
            if wanted is not None and doc.get("socket") == wanted:
                number: int = doc["id"]
                return number
        raise LookupError(f"{port!r} is not attached to this switch")

    def _set_impairment(self, port: PortRef, direction: str, words: list[str] | None) -> Any:
        line = f"port/impair {self.port_number(port)}"
        if words is None:
            line += f" {direction} off"
        elif words:
            line += f" {direction} {' '.join(words)}"
        with self.manage() as client:
            try:
                return client.json(line)
            except MgmtError as exc:
                if exc.reply.errno == errno.ENXIO:
                    raise LookupError(str(exc)) from None
                raise ValueError(str(exc)) from None

    def stop(self, timeout: float = 10.0, *, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` (unless the switch has exited already), wait for the switch to exit and
        return its exit status (-N: killed by signal N). A switch that ignores ``sig`` for
        ``timeout`` seconds is killed, and RuntimeError (with its log) says so."""
        ignored = None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                ignored = f"umlswitch ignored {signal.Signals(sig).name} for {timeout} s: killed"
        code = self.process.wait()
        if ignored is not None:
            ignored += f"\n{self.log}"
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)
        if ignored is not None:
            raise RuntimeError(ignored)
        return code

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _new_log(directory: str) -> IO[str]:
    """A new log file in ``directory``: umlswitch.log, or umlswitch-2.log, ... if taken."""
    for n in itertools.count(1):
        name = "umlswitch.log" if n == 1 else f"umlswitch-{n}.log"
        try:
            return open(os.path.join(directory, name), "x")
        except FileExistsError:
            continue
    raise AssertionError("unreachable")
