"""The daemon's I/O: bind every socket, run the ports in one root nursery, shut down cleanly.

Start-up order (as trio's ``serve_listeners``): bind the control socket and the shared data socket
first, so any failure is one clear line and exit status 1; then start every task in one nursery;
then announce, and report the live ``Switch`` through ``task_status.started``. SIGINT and SIGTERM
cancel the root scope, as does EOF on stdin when stdin is a terminal or a pipe; the clean-up runs
shielded and removes every socket file the switch created.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import stat
import time
from dataclasses import dataclass, field

import trio

from umlswitch import __version__
from umlswitch.config import SwitchConfig
from umlswitch.fabric.fabric import Fabric
from umlswitch.fabric.mactable import MacTable
from umlswitch.ports.base import Port, PortClosed
from umlswitch.ports.unix import ControlServer, SharedDataSocket

log = logging.getLogger("umlswitch")

LISTEN_BACKLOG = 128
TICK = 0.25  # seconds between updates of the fabric's coarse clock (and MAC aging)


class StartupError(Exception):
    """The switch cannot start; the message is one line saying what is wrong and what to do."""


@dataclass
class BoundSockets:
    """Sockets bound before the event loop starts (so -daemon can report errors first)."""

    control: socket.socket
    control_path: str
    data: socket.socket | None = None
    data_path: str | None = None
    # path -> inode of the socket file we created, so we never unlink somebody else's file
    created: dict[str, int] = field(default_factory=dict)
    # ports opened at start-up from the command line (UDP peers, taps): attached once serving
    static_ports: list[Port] = field(default_factory=list)

    def close(self) -> None:
        self.control.close()
        if self.data is not None:
            self.data.close()
        for port in self.static_ports:
            port.close()

    def unlink_created(self) -> None:
        for path, inode in self.created.items():
            try:
                if os.lstat(path).st_ino == inode:
                    os.unlink(path)
            except OSError:
                pass


def _reclaim_if_stale(path: str, kind: int) -> None:
    """Remove a socket file nobody serves; refuse a live one or a file that is not a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError(f"'{path}' exists and is not a socket; remove it or choose another path")
    probe = socket.socket(socket.AF_UNIX, kind)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        log.info("reclaimed stale socket '%s' (nobody was serving it)", path)
        return
    except OSError as exc:
        raise StartupError(f"cannot check existing socket '{path}': {exc.strerror}") from None
    finally:
        probe.close()
    raise StartupError(
        f"the socket '{path}' has another server attached to it; stop that switch, or rerun with "
        "a different, unused path (-unix PATH)"
    )


def _bind(path: str, kind: int, what: str) -> tuple[socket.socket, int]:
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise StartupError(
            f"cannot create {what} '{path}': directory '{directory}' does not exist "
            f"(create it with: mkdir -p {directory})"
        )
    if len(os.fsencode(path)) >= 108:
        raise StartupError(f"{what} path '{path}' is too long for a unix socket (max 107 bytes)")
    _reclaim_if_stale(path, kind)
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        hint = (
            "run as a user who may write there, or choose another path"
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
            else "choose another path"
        )
        raise StartupError(f"cannot create {what} '{path}': {exc.strerror}; {hint}") from None
    return sock, os.lstat(path).st_ino


def bind_sockets(config: SwitchConfig) -> BoundSockets:
    """Bind the control socket (and the shared data socket, if asked for)."""
    if config.taps:
        raise StartupError(
            f"-tap {config.taps[0]}: tap devices are not supported by this version yet; "
            "run without -tap and bridge the host with vde_plug or a UML guest"
        )
    control, inode = _bind(config.control_path, socket.SOCK_STREAM, "control socket")
    bound = BoundSockets(control, config.control_path, created={config.control_path: inode})
    try:
        control.listen(LISTEN_BACKLOG)
        control.setblocking(False)
        if config.data_path is not None:
            data, inode = _bind(config.data_path, socket.SOCK_DGRAM, "data socket")
            data.setblocking(False)
            bound.data, bound.data_path = data, config.data_path
            bound.created[config.data_path] = inode
    except BaseException:
        bound.close()
        bound.unlink_created()
        raise
    return bound


@dataclass
class Switch:
    """The running switch, as reported to ``task_status.started``: live objects for tests."""

    config: SwitchConfig
    fabric: Fabric
    control: ControlServer
    shared: SharedDataSocket | None
    control_path: str
    data_path: str | None
    started_at: float
    cancel_scope: trio.CancelScope

    def shutdown(self) -> None:
        self.cancel_scope.cancel()


def _stdin_is_watched() -> bool:
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return False
    return os.isatty(0) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


async def _watch_stdin(scope: trio.CancelScope) -> None:
    """Exit on EOF from a terminal or a pipe; ignore anything typed."""
    while True:
        await trio.lowlevel.wait_readable(0)
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            continue
        except OSError as exc:
            log.warning("stdin: %s; no longer watching it", exc.strerror)
            return
        if not data:
            log.info("EOF on stdin, cleaning up and exiting")
            scope.cancel()
            return


async def _watch_signals(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("caught %s, cleaning up and exiting", signal.Signals(signum).name)
            scope.cancel()
            return


async def _run_static_port(fabric: Fabric, port: Port) -> None:
    """Run a start-up port until shutdown; if its peer or device vanishes, detach it alone."""
    try:
        await port.run(fabric)
    except PortClosed as exc:
        log.warning("port %d (%s) detached: %s; the switch keeps running", port.id, port.name, exc)
    finally:
        forgotten = fabric.detach(port.id)
        log.debug("port %d (%s) stopped; forgot %d MAC(s)", port.id, port.name, forgotten)


async def _ticker(fabric: Fabric) -> None:
    while True:
        fabric.tick(trio.current_time())
        await trio.sleep(TICK)


def _write_pidfile(path: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")
    except OSError as exc:
        raise StartupError(f"cannot write pidfile '{path}': {exc.strerror}") from None


async def serve(
    config: SwitchConfig,
    *,
    sockets: BoundSockets | None = None,
    handle_signals: bool = True,
    watch_stdin: bool | None = None,
    task_status: trio.TaskStatus[Switch] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the switch until cancelled, a signal, or EOF on stdin."""
    if sockets is None:
        sockets = bind_sockets(config)
    if watch_stdin is None:
        watch_stdin = _stdin_is_watched()
    pidfile_written = False
    try:
        if config.pidfile:
            _write_pidfile(config.pidfile)
            pidfile_written = True
        table = MacTable(
            aging=config.aging,
            max_entries=config.max_macs,
            max_per_port=config.max_macs_per_port,
        )
        fabric = Fabric(
            hub=config.hub, table=table, max_frame=config.max_frame, now=trio.current_time()
        )
        shared = None
        if sockets.data is not None:
            assert sockets.data_path is not None
            shared = SharedDataSocket(sockets.data, sockets.data_path, fabric)
        listener = trio.socket.from_stdlib_socket(sockets.control)
        server = ControlServer(
            listener, fabric, shared=shared, handshake_timeout=config.handshake_timeout
        )
        with trio.CancelScope() as root:
            async with trio.open_nursery() as nursery:
                if handle_signals:
                    nursery.start_soon(_watch_signals, root)
                if watch_stdin:
                    nursery.start_soon(_watch_stdin, root)
                nursery.start_soon(_ticker, fabric)
                if shared is not None:
                    nursery.start_soon(shared.run)
                for port in sockets.static_ports:
                    port.id = fabric.allocate_id()
                    fabric.attach(port)
                    log.info("port %d attached: %s", port.id, port.name)
                    nursery.start_soon(_run_static_port, fabric, port)
                await nursery.start(server.serve)
                switch = Switch(
                    config=config,
                    fabric=fabric,
                    control=server,
                    shared=shared,
                    control_path=sockets.control_path,
                    data_path=sockets.data_path,
                    started_at=time.time(),
                    cancel_scope=root,
                )
                data = f", data socket '{sockets.data_path}'" if sockets.data_path else ""
                log.info(
                    "umlswitch %s attached to unix socket '%s'%s (%s mode, pid %d)",
                    __version__,
                    sockets.control_path,
                    data,
                    "hub" if config.hub else "switch",
                    os.getpid(),
                )
                task_status.started(switch)
    finally:
        with trio.CancelScope(shield=True):
            sockets.close()
            sockets.unlink_created()
            if pidfile_written and config.pidfile:
                with contextlib.suppress(OSError):
                    os.unlink(config.pidfile)
        log.info("umlswitch stopped; removed %s", ", ".join(sockets.created) or "nothing")
        for handler in logging.getLogger().handlers:
            handler.flush()
