"""``--slirp``: a libslirp NAT router for the whole LAN, run as a supervised child process.

A network stack that parses every guest's traffic does not belong inside the switch, nor in a
process with root's privileges. So the router is ``vde_plug vde://DIR slirp:///...`` (Debian
``vdeplug`` and ``libvdeplug-slirp``), a VDE client like any other, started by the switch:

* **A private listener** (``private.py``): a control socket that only the helper's user may
  open, and the control server refuses every connection on it whose peer is not the helper's
  current process (``admit``, by ``SO_PEERCRED``). Its port is named
  ``slirp:N pid=P`` and described ``slirp uplink net ... router ..., start K``.
* **Without root.** Started by root, the helper runs as ``nobody`` (its group, no
  supplementary groups); started by another user, as that user.
* **Never orphaned.** It is in a session of its own (a terminal's Ctrl-C reaches the switch,
  which stops it), and has ``PR_SET_PDEATHSIG`` (SIGTERM) set after the change of user, so a
  switch killed with SIGKILL leaves no helper behind either. The switch starts it from its main
  thread (not one of trio's worker threads, whose exit would count as the parent's death).
* **Supervised.** If it exits, the switch logs how, counts it and starts a new one after a
  back-off (1 s doubling to 30 s; a helper that ran 30 s starts it again at 1 s). Its stderr is
  logged, at a bounded rate. On shutdown it gets SIGTERM, then SIGKILL after ``STOP_TIMEOUT``.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import logging
import os
import pwd
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Callable

import trio

from umlswitch import counters
from umlswitch.errors import StartupError
from umlswitch.fabric.frame import DEFAULT_MAX_FRAME
from umlswitch.listener import PeerCred
from umlswitch.ports.slirp.private import PrivateSocket
from umlswitch.ports.slirp.spec import SlirpSpec, slirp_url
from umlswitch.ports.stream.link import Backoff
from umlswitch.ports.unix.server import Entrance
from umlswitch.ratelog import RateLimitedLog

log = logging.getLogger("umlswitch.slirp")
helper_log = RateLimitedLog(log)  # the helper's stderr: a chatty helper cannot flood the log

PROGRAM = "vde_plug"
PLUGIN = "libvdeplug_slirp.so"
# Where libvdeplug looks for its plugins (Debian's multiarch directory first).
PLUGIN_GLOBS = (
    "/usr/lib/*/vdeplug",
    "/usr/lib/vdeplug",
    "/usr/local/lib/*/vdeplug",
    "/usr/local/lib/vdeplug",
)
PACKAGES = "vdeplug libvdeplug-slirp"
HELPER_USER = "nobody"  # who the helper runs as when the switch is root
STABLE = 30.0  # a helper that ran this long restarts after the first delay again
STOP_TIMEOUT = 2.0  # seconds between SIGTERM and SIGKILL at shutdown
PR_SET_PDEATHSIG = 1
ETH_OVERHEAD = 18  # header and FCS: the MTU of --max-frame


def find_program(programs: str = PROGRAM, plugin_globs: tuple[str, ...] = PLUGIN_GLOBS) -> str:
    """The path of vde_plug, checked to have its slirp plugin; StartupError naming the packages."""
    program = shutil.which(programs)
    plugins = [path for pattern in plugin_globs for path in glob.glob(f"{pattern}/{PLUGIN}")]
    if program is None or not plugins:
        missing = f"{PROGRAM}" if program is None else f"the slirp plugin ({PLUGIN})"
        raise StartupError(
            f"--slirp needs {PROGRAM} and its slirp plugin, but {missing} is not installed; "
            f"install the Debian packages {PACKAGES} (apt install {PACKAGES})"
        )
    return program


def helper_user() -> tuple[int, int] | None:
    """(uid, gid) to run the helper as: nobody when we are root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(HELPER_USER)
    except KeyError:
        raise StartupError(
            f"--slirp: there is no user {HELPER_USER!r} to run the slirp helper as"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _die_with(parent: int) -> Callable[[], None]:
    """A preexec_fn: SIGTERM when ``parent`` dies (set after the change of user, which would
    clear it); exit at once if it has died already."""
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    term = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, term, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class SlirpUplink:
    """The helper's private listener and the task that keeps one helper running."""

    def __init__(self, spec: SlirpSpec, program: str, *, max_frame: int = DEFAULT_MAX_FRAME):
        self.spec = spec
        self.program = program
        self.max_frame = max_frame
        self.user = helper_user()
        self.private = PrivateSocket(self.user)
        self.pid = 0  # the helper running now (0: none)
        self.starts = 0
        self.exits = 0
        self.events: Counter[str] = Counter()  # slirp_helper_exit
        self.last_exit = ""
        self.backoff = Backoff()

    def admit(self, cred: PeerCred) -> str | None:
        """Why a connection to the private listener is refused (None: it is the helper)."""
        if self.pid and cred.pid == self.pid:
            return None
        return f"only the slirp helper (pid {self.pid or 'none'}) may attach here"

    def entrance(self) -> Entrance:
        """The private listener as the control server serves it: the helper's only."""
        return Entrance(
            trio.socket.from_stdlib_socket(self.private.listener),
            self.private.data_path_prefix,
            label=f"slirp helper's socket {self.private.control_path}",
            name_prefix="slirp",
            admit=self.admit,
        )

    def argv(self) -> list[str]:
        mtu = None
        if self.max_frame < DEFAULT_MAX_FRAME:
            mtu = self.max_frame - ETH_OVERHEAD
        description = (
            f"slirp uplink net {self.spec.network} router {self.spec.router.ip}, "
            f"start {self.starts}"
        )
        return [
            self.program,
            "-D",
            description,
            f"vde://{self.private.directory}",
            slirp_url(self.spec, mtu),
        ]

    def close(self) -> None:
        """Close the listener and remove the private directory (at exit)."""
        self.private.close()

    async def run(self) -> None:
        """Keep one helper running until cancelled; then stop it."""
        while True:
            started = trio.current_time()
            how = await self._run_once()
            self.exits += 1
            self.events[counters.SLIRP_HELPER_EXIT] += 1
            self.last_exit = how
            if trio.current_time() - started >= STABLE:
                self.backoff.reset()
            delay = self.backoff.delay()
            log.warning(
                "slirp helper %s after %.1f s (exit %d); starting a new one in %g s",
                how,
                trio.current_time() - started,
                self.exits,
                delay,
            )
            await trio.sleep(delay)

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        uid, gid = self.user if self.user is not None else (None, None)
        # From this (the main) thread: PR_SET_PDEATHSIG follows the thread that forked.
        return subprocess.Popen(
            self.argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with(os.getpid()),
            user=uid,
            group=gid,
            extra_groups=None if self.user is None else [],
        )

    async def _run_once(self) -> str:
        """Start a helper and wait until it exits; return how it ended."""
        try:
            proc = self._spawn()
        except OSError as exc:
            return f"could not start: {exc.strerror or exc}"
        self.pid = proc.pid
        log.info(
            "slirp helper started (pid %d%s): %s",
            proc.pid,
            "" if self.user is None else f", uid {self.user[0]}",
            " ".join(self.argv()[3:]),
        )
        assert proc.stderr is not None
        pidfd = os.pidfd_open(proc.pid)
        try:
            relayed = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._relay_stderr, os.dup(proc.stderr.fileno()), relayed)
                proc.stderr.close()
                await trio.lowlevel.wait_readable(pidfd)
                with trio.move_on_after(STOP_TIMEOUT):  # its last words, unless a child of
                    await relayed.wait()  # its own still holds the pipe open
                nursery.cancel_scope.cancel()
            status = proc.wait()
        finally:
            self.pid = 0
            os.close(pidfd)
            if proc.returncode is None:
                with trio.CancelScope(shield=True):
                    await self._stop(proc)
        if status < 0:
            return f"(pid {proc.pid}) was killed by {signal.Signals(-status).name}"
        return f"(pid {proc.pid}) exited with status {status}"

    async def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; reap it."""
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        with trio.move_on_after(STOP_TIMEOUT):
            while proc.poll() is None:
                await trio.sleep(0.02)
            log.info("slirp helper (pid %d) stopped", proc.pid)
            return
        proc.kill()
        proc.wait()
        log.warning("slirp helper (pid %d) ignored SIGTERM: killed", proc.pid)

    async def _relay_stderr(self, fd: int, done: trio.Event) -> None:
        """Log what the helper writes to its stderr, line by line; ``done`` at its end."""
        try:
            await self._read_lines(trio.lowlevel.FdStream(fd))
        finally:
            done.set()

    async def _read_lines(self, stream: trio.lowlevel.FdStream) -> None:
        pending = b""
        async with stream:
            while True:
                try:
                    data = await stream.receive_some(4096)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if not data:
                    break
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    if line.strip():
                        helper_log.warning(
                            "stderr", "slirp helper: %s", line.decode(errors="replace").strip()
                        )
                pending = pending[-4096:]
        if pending.strip():
            helper_log.warning(
                "stderr", "slirp helper: %s", pending.decode(errors="replace").strip()
            )
