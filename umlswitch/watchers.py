"""What stops the switch, restarts it or reopens its log from outside, watched in trio: SIGINT and
SIGTERM, SIGUSR2 (a seamless restart), SIGHUP (the log file reopened), and EOF on standard input
when it is a terminal or a pipe.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
from collections.abc import Callable

import trio

from umlswitch import lifecycle
from umlswitch.errors import StartupError as StartupError  # re-exported

log = logging.getLogger("umlswitch")


def stdin_is_watched() -> bool:
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return False
    return os.isatty(0) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


async def watch_stdin(scope: trio.CancelScope) -> None:
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


async def watch_signals(
    scope: trio.CancelScope,
    log_file: str | None = None,
    on_restart: Callable[[], None] | None = None,
) -> None:
    """SIGINT, SIGTERM: exit cleanly. SIGHUP: reopen --log-file (logrotate); without one, exit.
    SIGUSR2: ``on_restart`` (a seamless restart)."""
    wanted = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)
    with trio.open_signal_receiver(*wanted) as signals:
        early = lifecycle.stop_requested()  # caught before this receiver existed
        if early is not None:
            log.info("caught %s while starting, cleaning up and exiting", early.name)
            scope.cancel()
            return
        async for signum in signals:
            if signum == signal.SIGHUP and log_file is not None:
                reopen_log_file(log_file)
                continue
            if signum == signal.SIGUSR2:
                if on_restart is None:
                    log.warning("caught SIGUSR2 before the switch serves; no restart")
                else:
                    log.info("caught SIGUSR2, restarting")
                    on_restart()
                continue
            log.info("caught %s, cleaning up and exiting", signal.Signals(signum).name)
            scope.cancel()
            return


def reopen_log_file(path: str) -> None:
    """Close the log file and open ``path`` anew (after logrotate moved it), saying so in both."""
    path = os.path.abspath(path)
    handlers = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.FileHandler) and h.baseFilename == path
    ]
    if not handlers:
        log.warning("caught SIGHUP, but no log file '%s' is open to reopen", path)
        return
    log.info("caught SIGHUP, reopening the log file '%s'", path)
    for handler in handlers:
        try:
            stream = open(path, "a", encoding=handler.encoding)  # noqa: SIM115 - the handler's
        except OSError as exc:
            log.error(
                "cannot reopen the log file '%s': %s; still logging to the file it was",
                path,
                exc.strerror,
            )
            return
        old = handler.setStream(stream)
        if old is not None:
            old.close()
    log.info("reopened the log file '%s' (SIGHUP)", path)
