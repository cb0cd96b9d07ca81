"""The ``umlswitch`` command: parse argv, set up logging, bind, optionally daemonize, run.

``umlswitch ctl|top|capture|events ...`` run the management clients instead.

Exit status: 0 after a clean shutdown, 1 when the switch cannot start (one line on stderr says
why and what to do), 2 for a bad command line.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import resource
import sys

import trio

from umlswitch import binding, daemon, lifecycle, systemd
from umlswitch.config import SwitchConfig, parse_args
from umlswitch.dataplane import DataPlaneCrashed
from umlswitch.restart import command, fdstore
from umlswitch.restart.handover import Incoming

CLIENTS = ("ctl", "top", "capture", "events")
# A bug in the data-plane thread ended the switch (EX_SOFTWARE, as sysexits.h says).
EXIT_CRASHED = 70
LOG_FORMAT = "%(asctime)s umlswitch[%(process)d] %(levelname)s: %(message)s"


def setup_logging(config: SwitchConfig) -> None:
    """Log to stdout (as uml_switch does), to --log-file, or to syslog under -daemon."""
    handler: logging.Handler
    fmt = LOG_FORMAT
    if config.log_file:
        handler = logging.FileHandler(config.log_file)
    elif config.daemon:
        if os.path.exists("/dev/log"):
            handler = logging.handlers.SysLogHandler("/dev/log")
            fmt = "umlswitch[%(process)d]: %(levelname)s: %(message)s"
        else:
            print(
                "umlswitch: warning: no syslog socket (/dev/log); under -daemon the log is "
                "discarded; use --log-file FILE to keep it",
                file=sys.stderr,
            )
            handler = logging.NullHandler()
    else:
        handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(fmt, datefmt="%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    logging.raiseExceptions = False  # a closed stdout (| head) must not spew tracebacks
    root.setLevel(config.log_level.upper())


def daemonize() -> int:
    """Detach from the terminal (fork, setsid, fork); return a fd to write b"1" on once ready.

    The original process waits for that byte and exits 0, or exits 1 if the daemon died first.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(write_end)
        os.waitpid(pid, 0)
        ready = os.read(read_end, 1)
        os._exit(0 if ready == b"1" else 1)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return write_end


def raise_fd_limit() -> None:
    """Each port holds two descriptors: allow as many as the hard limit lets us."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_client(name: str, argv: list[str]) -> int:
    """``umlswitch ctl|top|capture|events ...``: management clients of a running switch."""
    if name == "ctl":
        from umlswitch.mgmt import client

        return client.main(argv)
    if name in ("capture", "events"):
        from umlswitch.mgmt import streams

        return streams.capture_main(argv) if name == "capture" else streams.events_main(argv)
    from umlswitch.mgmt import top

    return top.main(argv)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in CLIENTS:  # no uml_switch command line starts with a word
        return run_client(args[0], args[1:])
    config = parse_args(args)
    lifecycle.install()  # from here on, SIGTERM and SIGINT mean a clean stop
    command.remember(sys.argv if argv is None else [sys.argv[0], *args])
    raise_fd_limit()
    if config.daemon:
        config = config.absolute()
    try:
        setup_logging(config)
    except OSError as exc:
        print(
            f"umlswitch: cannot open log file '{config.log_file}': {exc.strerror}", file=sys.stderr
        )
        return 1
    try:
        handover: Incoming | fdstore.Recovery | None = None
        incoming = Incoming.from_environ()
        if incoming is not None:  # started by a restart: adopt, never bind
            handover = incoming
            sockets = incoming.startup(config)
        else:
            names = os.environ.get("LISTEN_FDNAMES", "")
            passed, stored = fdstore.split(systemd.listen_sockets(), names)
            if stored:  # systemd kept them for us in its fd store: the switch had crashed
                handover = fdstore.Recovery(stored)
                passed += handover.listeners()
            config, inherited = systemd.inherit(config, passed)
            sockets = binding.bind_sockets(config, inherited)
    except daemon.StartupError as exc:
        print(f"umlswitch: {exc}", file=sys.stderr)
        return 1
    stopped = lifecycle.stop_requested()
    if stopped is not None:  # while binding: nothing served yet
        sockets.close()
        sockets.unlink_created()
        logging.getLogger("umlswitch").info("caught %s while starting; exiting", stopped.name)
        return 0
    ready_fd: int | None = None
    if config.daemon and handover is None:
        ready_fd = daemonize()
        ours = [sockets.control, sockets.mgmt, *(s for s, _, _ in sockets.vlan_controls)]
        lifecycle.relisten(
            [s for s in ours if s is not None and s.getsockname() in sockets.created]
        )
    notify = systemd.Notifier.from_environ()

    async def run_switch() -> None:
        ready = lifecycle.ReadyReporter(lambda _: lifecycle.write_ready_byte(ready_fd))
        await daemon.serve(
            config, sockets=sockets, notify=notify, handover=handover, task_status=ready
        )

    failed: list[daemon.StartupError] = []
    crashed = False
    try:
        trio.run(run_switch)
    except* daemon.StartupError as group:
        failed.extend(_leaves(group))
    except* DataPlaneCrashed:  # logged with its traceback where it happened
        crashed = True
    finally:
        sockets.unlink_created()  # already done on a clean exit; this covers a crash
    for error in failed:
        print(f"umlswitch: {error}", file=sys.stderr)
        logging.getLogger("umlswitch").error("%s", error)
    if crashed:
        print(
            "umlswitch: the data plane crashed (see the log); the switch stopped", file=sys.stderr
        )
        return EXIT_CRASHED
    return 1 if failed else 0


def _leaves(group: BaseExceptionGroup[daemon.StartupError]) -> list[daemon.StartupError]:
    """The StartupErrors in ``group``, however deeply nurseries nested them."""
    found: list[daemon.StartupError] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        else:
            found.append(exc)
    return found


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
