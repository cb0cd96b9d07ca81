"""Both sides of a restart: the old process that hands over, the new one that takes over.

Old (``Restarter.restart``): start ``command.command()`` with one end of the channel; send the
listeners; wait (serving all along) until the new process says it is ready, at most
``READY_TIMEOUT``; then, **without a trio checkpoint** (so no task of this process reads a frame
again), export the state, send it with every port's descriptors, and wait for the new process to
say it runs. Then answer whoever asked and exit 0 at once: no clean-up, so no socket file is
removed and no descriptor is shut down. If anything fails before that, the new process is
killed and the old one goes on serving as if nothing happened; the caller gets the reason.

New (``Incoming``): receive the listeners before trio starts (``startup``), build the switch on
them, say ready, receive and apply the state (``take_over``), say it runs, and serve.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import trio

from umlswitch import lifecycle
from umlswitch.dataplane import parked
from umlswitch.errors import StartupError
from umlswitch.events import RESTART
from umlswitch.restart import command, listeners, state, wire
from umlswitch.restart.document import UnreadableState, check, envelope
from umlswitch.restart.kinds import CannotAdopt
from umlswitch.systemd import Notifier

if TYPE_CHECKING:
    from umlswitch.binding import BoundSockets
    from umlswitch.config import SwitchConfig
    from umlswitch.daemon import Switch

log = logging.getLogger("umlswitch.restart")

READY_TIMEOUT = 10.0  # seconds the new process has to start and say it is ready
APPLY_TIMEOUT = 10.0  # seconds it has to apply the state (the switch forwards nothing meanwhile)
STARTUP_TIMEOUT = 10.0  # seconds the new process waits for the listeners


class RestartFailed(Exception):
    """The restart did not happen; the old process serves on. The message says why."""


class Restarter:
    """The old process's side: one restart at a time."""

    def __init__(self, switch: Switch, sockets: BoundSockets) -> None:
        self.switch = switch
        self.sockets = sockets
        self.busy = False

    async def restart(self, answer: Callable[[int], None] | None = None) -> None:
        """Hand the switch over to a new process; on success this process exits (``answer``
        is called with the new pid just before). RestartFailed: this process serves on."""
        if self.busy:
            raise RestartFailed("a restart is in progress already")
        self.busy = True
        try:
            await self._restart(answer)
        finally:
            self.busy = False

    async def _restart(self, answer: Callable[[int], None] | None) -> None:
        mine, theirs = wire.channel_pair()
        argv = command.command()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        env[wire.ENV] = str(theirs.fileno())
        log.info("restart: starting %s", " ".join(argv))
        self.switch.bus.publish(RESTART, phase="begin", restarts=self.switch.restarts)
        try:
            process = subprocess.Popen(argv, pass_fds=[theirs.fileno()], env=env)
        except OSError as exc:
            mine.close()
            raise RestartFailed(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
        finally:
            theirs.close()
        try:
            await self._until_ready(mine, process)
            # The data plane waits between two rounds from here on: no frame is read, sent or
            # decided while the state is taken and handed over (the new process reads next).
            async with parked(self.switch.fabric):
                self._hand_over(mine, process, answer)  # returns only if the new process failed
        except BaseException:
            _stop(process)
            mine.close()
            raise

    async def _until_ready(self, channel: socket.socket, process: subprocess.Popen[bytes]) -> None:
        static = {p.id for p in self.sockets.static_ports if p.id in self.switch.attachments}
        doc, fds = listeners.export(self.sockets, static)
        try:
            channel.settimeout(READY_TIMEOUT)
            wire.send_bundle(channel, envelope("startup", **doc), fds)
            with trio.move_on_after(READY_TIMEOUT) as waited:
                await trio.lowlevel.wait_readable(channel)
            if waited.cancelled_caught:
                raise wire.ChannelError(f"it did not say it was ready within {READY_TIMEOUT:g} s")
            check(wire.receive_bundle(channel, 0.5)[0], "ready")
        except (wire.ChannelError, UnreadableState) as exc:
            raise RestartFailed(_why(process, exc)) from None

    def _hand_over(
        self,
        channel: socket.socket,
        process: subprocess.Popen[bytes],
        answer: Callable[[int], None] | None,
    ) -> None:
        """The part without a checkpoint, run with the data plane parked: from here on no task
        of this process runs and no frame moves; the sockets' queues keep what comes meanwhile."""
        switch = self.switch
        paused = time.monotonic()
        doc, fds = state.export(switch, switch.restarts + 1)
        with _stop_signals_noted() as noted:
            try:
                channel.settimeout(APPLY_TIMEOUT)
                wire.send_bundle(channel, doc, fds)
                check(wire.receive_bundle(channel, APPLY_TIMEOUT)[0], "running")
            except (wire.ChannelError, UnreadableState) as exc:
                raise RestartFailed(_why(process, exc)) from None
        notify = Notifier.from_environ()
        if notify is not None:  # before we exit, or systemd takes the service for stopped
            notify.send(f"MAINPID={process.pid}")
        for signum in noted:  # a stop asked for meanwhile is the new process's to do
            log.info("restart: passing %s on to pid %d", signal.Signals(signum).name, process.pid)
            os.kill(process.pid, signum)
        log.info(
            "restart: pid %d took over %d port(s) and %d MAC(s) (no frame read for %.0f ms); "
            "pid %d exits",
            process.pid,
            len(doc["ports"]),
            len(doc["table"]),
            (time.monotonic() - paused) * 1000,
            os.getpid(),
        )
        if answer is not None:
            with contextlib.suppress(OSError):
                answer(process.pid)
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(0)


@contextlib.contextmanager
def _stop_signals_noted() -> Iterator[list[int]]:
    """Note SIGINT and SIGTERM while the handover runs (no trio task can see them then); if it
    fails, they are raised again for this process's own receiver once the block ends."""
    noted: list[int] = []
    previous = {s: signal.signal(s, lambda n, f: noted.append(n)) for s in lifecycle.STOP_SIGNALS}
    failed = True
    try:
        yield noted
        failed = False
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if failed:
            for number in noted:
                os.kill(os.getpid(), number)


def _why(process: subprocess.Popen[bytes], exc: Exception) -> str:
    """Why the new process did not take over, in one line."""
    try:
        status = process.wait(0.5)
    except subprocess.TimeoutExpired:
        return f"the new process (pid {process.pid}) did not take over: {exc}"
    how = f"was killed by {signal.Signals(-status).name}" if status < 0 else f"exited {status}"
    return f"the new process (pid {process.pid}) {how} before it took over ({exc})"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


class Incoming:
    """The new process's side of the channel named by ``$UMLSWITCH_HANDOVER``."""

    def __init__(self, channel: socket.socket) -> None:
        self.channel = channel
        self.done = False  # the state was applied and the old process told: we serve
        self.created: dict[str, int] = {}  # the socket files, ours to remove once we serve
        self.restarts = 0
        self.started_at: float | None = None

    @classmethod
    def from_environ(cls) -> Incoming | None:
        value = os.environ.pop(wire.ENV, "")
        if not value:
            return None
        try:
            channel = socket.socket(fileno=int(value))
        except (ValueError, OSError) as exc:
            raise StartupError(f"{wire.ENV}={value}: not a handover channel ({exc})") from None
        channel.set_inheritable(False)
        return cls(channel)

    def fail(self, reason: str) -> None:
        """Tell the old process why we give up (it serves on)."""
        with contextlib.suppress(wire.ChannelError, OSError):
            self.channel.settimeout(1.0)
            wire.send_bundle(self.channel, envelope("failed", reason=reason))

    def startup(self, config: SwitchConfig) -> BoundSockets:
        """Adopt the old process's listeners and command-line ports (before trio starts)."""
        fds: list[int] = []
        try:
            doc, fds = wire.receive_bundle(self.channel, STARTUP_TIMEOUT)
            check(doc, "startup")
            sockets = listeners.adopt(config, doc, fds)
        except (wire.ChannelError, UnreadableState, CannotAdopt) as exc:
            listeners.close_all(fds)
            self.fail(str(exc))
            raise StartupError(f"restart: {exc}") from None
        # Until we serve, the files are the old process's: a failed start must not remove them.
        self.created, sockets.created = sockets.created, {}
        log.info("restart: adopted the listeners of the previous process")
        return sockets

    async def take_over(self, switch: Switch, sockets: BoundSockets) -> list[state.Runner]:
        """Say ready; apply the final state once it comes; return the runners of its ports."""
        fds: list[int] = []
        try:
            self.channel.settimeout(READY_TIMEOUT)
            wire.send_bundle(self.channel, envelope("ready", pid=os.getpid()))
            with trio.move_on_after(READY_TIMEOUT + APPLY_TIMEOUT):
                await trio.lowlevel.wait_readable(self.channel)
            doc, fds = wire.receive_bundle(self.channel, APPLY_TIMEOUT)
            check(doc, "state")
            async with parked(switch.fabric):  # the fabric's one writer while it is rebuilt
                runners = state.apply(switch, doc, fds, sockets.static_ports)
        except (wire.ChannelError, UnreadableState, CannotAdopt) as exc:
            # The old process serves on with the very descriptors we hold: leave at once,
            # closing nothing and removing nothing (a pathname client socket is shared).
            self.fail(str(exc))
            log.error("restart: cannot take over: %s; the previous process serves on", exc)
            for handler in logging.getLogger().handlers:
                with contextlib.suppress(Exception):
                    handler.flush()
            os._exit(1)
        self.restarts = int(doc.get("restarts", 1))
        self.started_at = float(doc["started_at"])
        return runners

    def running(self, sockets: BoundSockets) -> None:
        """Tell the old process we serve (it exits); the socket files are ours from now on."""
        try:
            self.channel.settimeout(APPLY_TIMEOUT)
            wire.send_bundle(self.channel, envelope("running", pid=os.getpid()))
        except wire.ChannelError as exc:
            log.warning("restart: could not tell the previous process we serve: %s", exc)
        self.channel.close()
        sockets.created = self.created
        self.done = True
