"""Boot real User-Mode-Linux guests and the switch under test, for the end-to-end tests.

A guest is `/usr/bin/linux` (Debian's UML 6.1, which still has the `eth0=daemon` transport) run
as a subprocess with the host's own `/` as a hostfs root and an init script of our own, written
into the test's tmp dir. The guest and the test talk through that directory only:

* `<name>.up` appears once the guest's eth0 is up and addressed (`<name>.error` if that failed);
* the guest then waits for the `.up` files of the guests it was told to wait for, runs the test's
  shell commands one by one (command i leaves `<name>.cmd<i>.out`, `.err` and, last, `.rc`), and
  touches `<name>.done`;
* it halts when `stop` or `<name>.stop` appears (or after a bounded wait).

The hostfs root is the host's real filesystem and the guest runs as root: the init script writes
nothing outside the tmp dir (`mount -n`, `halt -d`: no utab or wtmp records; `TMPDIR` points at
the tmp dir for iperf3's scratch file). Commands given to a guest must keep to that rule too.

The switch under test is `python -m umlswitch -unix CTL [...]` by default. With
`UMLSWITCH_E2E_SWITCH=uml_switch` (or any other command name or path) the same tests run against
that program instead, with the same `-unix CTL [-hub]` arguments. Guests attach with
`eth0=daemon` by default; `GuestPool(..., vde=True)` and `Guest(transport=...)` choose UML's other
transports (`eth0=vde` through libvdeplug, `eth0=mcast`...).

UML 6.1 cannot restore a guest process's FP registers on hosts with a larger XSAVE area than it
knows (AVX-512, AMX): its init dies with "ptrace set fp regs failed, errno = 14". Guests are
therefore started with `examples/uml_xstate_shim.c` (built with `cc` once per test session, in a
private directory, by the `uml_shim` fixture of tests/conftest.py) in `LD_PRELOAD`, which
completes UML's short FP-state writes; see the comment in that file. (Hiding the XSTATE register
set from UML instead, with a seccomp filter, makes it fall back to FXSAVE and
lose the guests' AVX state: `ss` printed its format strings and `iperf3 -D` failed.)

Every wait here has a deadline, and every process is started in a session of its own and killed
by process group at the end, so a failing test cannot leave guests or their UML helper processes
behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LINUX = Path("/usr/bin/linux")
GUEST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SWITCH_ENV = "UMLSWITCH_E2E_SWITCH"
REPO_ROOT = Path(__file__).resolve().parents[2]

POLL_INTERVAL = 0.05
BOOT_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0
HALT_TIMEOUT = 5.0
TERM_TIMEOUT = 3.0
SWITCH_READY_TIMEOUT = 10.0
SWITCH_STOP_TIMEOUT = 5.0
# How long a guest waits, after its commands, for the test to say stop before it halts anyway.
GUEST_LINGER_SECONDS = 120
LOG_TAIL_CHARS = 20000
EXCERPT_LINES = 15


class E2EError(AssertionError):
    """A guest or the switch did not do what the test needed; the message carries its log."""


def mac_for(index: int) -> str:
    """The fixed MAC address of guest number `index` (1-based)."""
    return f"02:00:00:00:00:{index:02x}"


def ip_for(index: int) -> str:
    """The fixed IPv4 address (in 10.0.0.0/24) of guest number `index` (1-based)."""
    return f"10.0.0.{index}"


def ping_command(target_ip: str, count: int = 3) -> str:
    """A quick guest command that pings `target_ip`; parse its output with `PingSummary.parse`."""
    return f"ping -n -c {count} -i 0.2 -W 2 {target_ip}"


def read_log(path: Path, lines: int | None = None) -> str:
    """A log file's last `lines` lines (or its last LOG_TAIL_CHARS characters), or why none."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"<{path} does not exist>"
    if not text:
        return f"<{path} is empty>"
    if lines is not None:
        return "".join(text.splitlines(keepends=True)[-lines:])
    if len(text) > LOG_TAIL_CHARS:
        return f"<... {len(text) - LOG_TAIL_CHARS} characters cut ...>\n{text[-LOG_TAIL_CHARS:]}"
    return text


def log_excerpt(path: Path) -> str:
    """The end of a log, for an error message (the whole log goes into the test report)."""
    return f"--- last {EXCERPT_LINES} lines of {path} ---\n{read_log(path, EXCERPT_LINES)}"


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    describe: str,
    *,
    abort: Callable[[], str | None] | None = None,
    log: Path | None = None,
) -> None:
    """Poll `condition` until it holds; E2EError after `timeout` s or when `abort` says why."""
    __tracebackhide__ = True
    deadline = time.monotonic() + timeout
    while not condition():
        reason = abort() if abort is not None else None
        if reason is None and time.monotonic() >= deadline:
            reason = f"timed out after {timeout:.0f} s"
        if reason is not None:
            extra = f"\n{log_excerpt(log)}" if log is not None else ""
            raise E2EError(f"{describe}: {reason}{extra}")
        time.sleep(POLL_INTERVAL)


SHIM_ENV = "UMLSWITCH_TEST_UML_SHIM"  # set by tests/umlshim.py (the uml_shim fixture)


def guest_env() -> dict[str, str]:
    """The environment UML guests are started with: the FP-state shim preloaded.

    The shim is built by the session fixture ``uml_shim`` (tests/conftest.py) in a private
    directory of the test session and named in ``UMLSWITCH_TEST_UML_SHIM``; a test that boots
    UML guests must depend on that fixture (tests/e2e do, through their conftest).
    """
    shim = os.environ.get(SHIM_ENV)
    if not shim:
        raise E2EError(
            f"e2e: {SHIM_ENV} is unset: request the uml_shim fixture (tests/conftest.py)"
        )
    return {**os.environ, "LD_PRELOAD": shim}


def exit_status(proc: subprocess.Popen[bytes]) -> str | None:
    """How `proc` ended, or None while it runs.

    This does not reap the process: until `kill_group` does, its pid (and so its process group
    id) cannot be reused, which makes the final `killpg` safe.
    """
    if proc.returncode is not None:
        return f"status {proc.returncode}"
    info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if info is None or info.si_pid == 0:
        return None
    if info.si_code == os.CLD_EXITED:
        return f"exited with status {info.si_status}"
    return f"was killed by signal {info.si_status}"


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to `timeout` s for `proc` to end (without reaping it); True if it did."""
    deadline = time.monotonic() + timeout
    while exit_status(proc) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def kill_group(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGKILL the process group `proc` leads (see start_new_session), reap it, return its status.

    Whatever the leader forked goes too, whether or not the leader has already exited.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired as exc:
        raise E2EError(f"pid {proc.pid} survived SIGKILL for {timeout:.0f} s") from exc


# ---------------------------------------------------------------------------------------------
# The switch under test


def switch_command(ctl: Path, *extra_args: str) -> list[str]:
    """The argv that starts the switch under test on control socket `ctl`.

    `UMLSWITCH_E2E_SWITCH` unset, empty or `umlswitch`: `python -m umlswitch` from this checkout.
    Anything else names the program to run instead (`uml_switch` for the C reference); it is run
    under `stdbuf -oL` where available so that its block-buffered stdout reaches the log.
    """
    choice = os.environ.get(SWITCH_ENV, "").strip()
    if choice in ("", "umlswitch"):
        return [sys.executable, "-m", "umlswitch", "-unix", str(ctl), *extra_args]
    program = shutil.which(choice)
    if program is None:
        raise E2EError(f"{SWITCH_ENV}={choice!r}: no such program on PATH")
    stdbuf = shutil.which("stdbuf")
    prefix = [stdbuf, "-oL", "-eL"] if stdbuf is not None else []
    return [*prefix, program, "-unix", str(ctl), *extra_args]


def switch_label() -> str:
    """Which switch the tests run against, for reports."""
    return os.environ.get(SWITCH_ENV, "").strip() or "umlswitch"


class Switch:
    """The switch under test as a subprocess, listening on control socket `ctl`.

    With `console`, its stdin is a pipe held open until `stop`, for a switch that exits on EOF
    of its console (vde_switch in the foreground); otherwise stdin is /dev/null.
    """

    def __init__(
        self, ctl: Path, argv: Sequence[str], log_path: Path, *, console: bool = False
    ) -> None:
        self.ctl = ctl
        self.argv = list(argv)
        self.log_path = log_path
        self.console = console
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = SWITCH_READY_TIMEOUT) -> None:
        """Start the switch and return once its control socket exists."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log_path.open("wb") as log:
            log.write(f"[e2e] $ {shlex.join(self.argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE if self.console else subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=env,
                start_new_session=True,
            )
        wait_until(
            self._ready,
            timeout,
            f"switch {shlex.join(self.argv)} did not create {self.ctl}",
            abort=self._exited,
            log=self.log_path,
        )

    def _ready(self) -> bool:
        try:
            return stat.S_ISSOCK(self.ctl.stat().st_mode)
        except FileNotFoundError:
            return False

    def _exited(self) -> str | None:
        status = exit_status(self._proc) if self._proc is not None else None
        return None if status is None else f"it {status}"

    def check_alive(self) -> None:
        """Fail with the switch's log if it has exited."""
        reason = self._exited()
        if reason is not None:
            raise E2EError(
                f"switch {shlex.join(self.argv)}: {reason}\n{log_excerpt(self.log_path)}"
            )

    def stop(self, timeout: float = SWITCH_STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL the group after `timeout` s; return the exit status."""
        proc = self._proc
        if proc is None:
            return None
        if exit_status(proc) is None:
            proc.send_signal(signal.SIGTERM)
            if not wait_exit(proc, timeout):
                _note(self.log_path, f"still running {timeout:.0f} s after SIGTERM: SIGKILL")
        status = exit_status(proc)  # before kill_group, which may be what ends it
        kill_group(proc, timeout)
        if proc.stdin is not None:
            proc.stdin.close()
        _note(self.log_path, f"switch {status or 'was killed'}")
        return proc.returncode


class Switches:
    """Starts switches under test in one tmp dir (`switch.ctl`, then `switch2.ctl`...)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Switch] = []

    def __call__(self, hub: bool = False, *extra_args: str) -> Switch:
        """Start a switch (`-hub` if `hub`) and return it once its control socket exists."""
        stem = "switch" if not self.started else f"switch{len(self.started) + 1}"
        ctl = self.workdir / f"{stem}.ctl"
        args = ["-hub", *extra_args] if hub else list(extra_args)
        switch = Switch(ctl, switch_command(ctl, *args), self.workdir / f"{stem}.log")
        self.started.append(switch)
        switch.start()
        return switch

    def log_paths(self) -> list[Path]:
        """Every switch's log (stdout and stderr), for failure reports."""
        return [switch.log_path for switch in self.started]

    def stop_all(self) -> None:
        """Stop every switch (SIGTERM, then SIGKILL)."""
        for switch in self.started:
            switch.stop()


def _note(log_path: Path, message: str) -> None:
    with log_path.open("a") as log:
        log.write(f"[e2e] {message}\n")


# ---------------------------------------------------------------------------------------------
# Guests

# Shell helpers available to the init script and to every command a test gives a guest.
_GUEST_LIBRARY = r"""
e2e_log() { echo "e2e[$E2E_NAME]: $*"; }

# e2e_wait_file PATH [SECONDS]: wait until PATH exists; status 1 after SECONDS (default 30).
e2e_wait_file() {
    _e2e_left=$(( ${2:-30} * 20 ))
    until [ -e "$1" ]; do
        if [ "$_e2e_left" -le 0 ]; then e2e_log "timed out waiting for $1"; return 1; fi
        _e2e_left=$((_e2e_left - 1))
        sleep 0.05
    done
}

# e2e_wait_up NAME...: wait until each named guest has configured its eth0.
e2e_wait_up() {
    for _e2e_guest in "$@"; do e2e_wait_file "$E2E_DIR/$_e2e_guest.up" || return 1; done
}

# e2e_wait_listening PORT [SECONDS]: wait until something in this guest listens on TCP PORT.
e2e_wait_listening() {
    _e2e_left=$(( ${2:-30} * 20 ))
    until ss -Hltn "sport = :$1" | grep -q .; do
        if [ "$_e2e_left" -le 0 ]; then e2e_log "nothing listens on TCP $1"; return 1; fi
        _e2e_left=$((_e2e_left - 1))
        sleep 0.05
    done
}

# e2e_run I: run command I, leaving its stdout, stderr and (last, atomically) exit status.
e2e_run() {
    _e2e_base="$E2E_DIR/$E2E_NAME.cmd$1"
    e2e_log "command $1 starts"
    ( . "$_e2e_base.sh" ) < /dev/null > "$_e2e_base.out" 2> "$_e2e_base.err"
    echo $? > "$_e2e_base.rc.tmp"
    mv "$_e2e_base.rc.tmp" "$_e2e_base.rc"
    e2e_log "command $1 exited with status $(cat "$_e2e_base.rc")"
}

e2e_setup_network() {
    mount -n -t proc proc /proc &&
    mount -n -t sysfs sysfs /sys &&
    ip link set lo up &&
    ip link set eth0 up &&
    ip addr add "$E2E_IP/24" dev eth0
}

# Wait for the test to say stop, bounded; then halt without a wtmp record (-d): /var/log/wtmp
# here is the host's.
e2e_halt() {
    _e2e_left=$(( E2E_LINGER * 20 ))
    until [ -e "$E2E_DIR/stop" ] || [ -e "$E2E_DIR/$E2E_NAME.stop" ] || [ "$_e2e_left" -le 0 ]; do
        _e2e_left=$((_e2e_left - 1))
        sleep 0.05
    done
    e2e_log "halting"
    sync
    halt -f -d
    e2e_log "halt failed; exiting init"
    exit 1
}
"""


@dataclass(frozen=True)
class CommandResult:
    """What one command run inside a guest left behind."""

    guest: str
    command: str
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        """The whole result, for assertion messages."""
        return (
            f"[{self.guest}] $ {self.command}\n"
            f"exit status {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )

    def json(self) -> Any:
        """The command's stdout parsed as JSON (for `iperf3 -J`)."""
        return json.loads(self.stdout)


_PING_SUMMARY = re.compile(
    r"(?P<sent>\d+) packets transmitted, (?P<received>\d+) received,"
    r".*?(?P<loss>[\d.]+)% packet loss"
)


@dataclass(frozen=True)
class PingSummary:
    """The summary line of iputils ping: `3 packets transmitted, 3 received, 0% packet loss`."""

    transmitted: int
    received: int
    loss_percent: float

    @classmethod
    def parse(cls, output: str) -> PingSummary | None:
        """The summary in ping's output, or None if there is none."""
        match = _PING_SUMMARY.search(output)
        if match is None:
            return None
        return cls(int(match["sent"]), int(match["received"]), float(match["loss"]))


class Guest:
    """One UML guest on `eth0=daemon,<mac>,unix,<ctl>`, with 10.0.0.<index>/24 on eth0.

    The guest waits for the `.up` files of `wait_for` (guest names) before it runs `commands`
    (shell text, run in order in a subshell of the init script with its helpers: `e2e_wait_file`,
    `e2e_wait_up`, `e2e_wait_listening`, and `$E2E_DIR` pointing at the shared tmp dir).
    """

    def __init__(
        self,
        index: int,
        workdir: Path,
        uml_dir: Path,
        ctl: Path,
        commands: Sequence[str] = (),
        wait_for: Iterable[str] = (),
        mem: str = "128M",
        transport: str | None = None,
    ) -> None:
        self.index = index
        self.name = f"g{index}"
        self.mac = mac_for(index)
        self.ip = ip_for(index)
        self.workdir = workdir
        self.uml_dir = uml_dir
        self.ctl = ctl
        self.commands = list(commands)
        self.wait_for = [name for name in wait_for if name != self.name]
        self.mem = mem
        # eth0's transport, e.g. "mcast,..." or "vde,vde:///DIR,MAC"; None: daemon on `ctl`
        self.transport = transport
        self.umid = f"e2e-{os.getpid()}-{self.name}"
        self.console_path = workdir / f"{self.name}.console.log"
        self.init_path = workdir / f"{self.name}.init.sh"
        self._proc: subprocess.Popen[bytes] | None = None

    def _file(self, suffix: str) -> Path:
        return self.workdir / f"{self.name}{suffix}"

    def argv(self) -> list[str]:
        """The UML command line."""
        return [
            str(LINUX),
            f"mem={self.mem}",
            "root=/dev/root",
            "rootfstype=hostfs",
            "rootflags=/",
            "rw",
            "quiet",
            f"init={self.init_path}",
            f"eth0={self.transport or f'daemon,{self.mac},unix,{self.ctl}'}",
            "con=null",
            "con0=fd:0,fd:1",
            f"umid={self.umid}",
            f"uml_dir={self.uml_dir}",
        ]

    def init_script(self) -> str:
        """The guest's init: configure eth0, say so, wait for peers, run commands, wait, halt."""
        quote = shlex.quote
        lines = [
            "#!/bin/sh",
            f"# Init of UML guest {self.name}, written by tests/e2e/uml.py. The root filesystem",
            "# is the host's / (hostfs): write nothing outside E2E_DIR.",
            f"export PATH={GUEST_PATH}",
            f"E2E_DIR={quote(str(self.workdir))}",
            f"E2E_NAME={self.name}",
            f"E2E_IP={self.ip}",
            f"E2E_LINGER={GUEST_LINGER_SECONDS}",
            'TMPDIR="$E2E_DIR"  # iperf3 makes its scratch file in TMPDIR',
            'HOME="$E2E_DIR"',
            "export E2E_DIR E2E_NAME E2E_IP TMPDIR HOME",
            _GUEST_LIBRARY,
            "if ! e2e_setup_network; then",
            '    e2e_log "network setup failed"',
            '    ip addr > "$E2E_DIR/$E2E_NAME.error" 2>&1',
            "    e2e_halt",
            "fi",
            'touch "$E2E_DIR/$E2E_NAME.up"',
            'e2e_log "eth0 is up as $E2E_IP"',
        ]
        if self.wait_for:
            peers = " ".join(quote(name) for name in self.wait_for)
            lines.append(f'e2e_wait_up {peers} || e2e_log "running the commands anyway"')
        lines += [f"e2e_run {i}" for i in range(len(self.commands))]
        lines += ['touch "$E2E_DIR/$E2E_NAME.done"', "e2e_halt", ""]
        return "\n".join(lines)

    def start(self) -> None:
        """Write the init script and command files, then boot (without waiting)."""
        for i, command in enumerate(self.commands):
            self._file(f".cmd{i}.sh").write_text(command + "\n")
        self.init_path.write_text(self.init_script())
        self.init_path.chmod(0o755)
        self.uml_dir.mkdir(parents=True, exist_ok=True)
        with self.console_path.open("wb") as console:
            console.write(f"[e2e] $ {shlex.join(self.argv())}\n".encode())
            console.flush()
            self._proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env=guest_env(),
                cwd=self.workdir,
                start_new_session=True,
            )

    def _exited(self) -> str | None:
        status = exit_status(self._proc) if self._proc is not None else None
        return None if status is None else f"UML {status}"

    def _up_failed(self) -> str | None:
        error = self._file(".error")
        if error.exists():
            return f"network setup failed:\n{read_log(error)}"
        return self._exited()

    def wait_up(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Wait until the guest has configured its eth0."""
        wait_until(
            self._file(".up").exists,
            timeout,
            f"guest {self.name} did not come up",
            abort=self._up_failed,
            log=self.console_path,
        )

    def result(self, i: int, timeout: float = COMMAND_TIMEOUT) -> CommandResult:
        """Wait for command `i` to finish and return what it left."""
        rc = self._file(f".cmd{i}.rc")
        wait_until(
            rc.exists,
            timeout,
            f"guest {self.name} did not finish command {i} ({self.commands[i]!r})",
            abort=self._exited,
            log=self.console_path,
        )
        return CommandResult(
            guest=self.name,
            command=self.commands[i],
            returncode=int(rc.read_text().strip()),
            stdout=self._file(f".cmd{i}.out").read_text(errors="replace"),
            stderr=self._file(f".cmd{i}.err").read_text(errors="replace"),
        )

    def results(self, timeout: float = COMMAND_TIMEOUT) -> list[CommandResult]:
        """Wait for all commands, each within `timeout` s, and return their results in order."""
        return [self.result(i, timeout) for i in range(len(self.commands))]

    def release(self) -> None:
        """Let the guest halt (it waits for this after its commands)."""
        self._file(".stop").touch()

    def stop(self, timeout: float = HALT_TIMEOUT) -> None:
        """Release the guest and give it `timeout` s to halt by itself.

        Then SIGTERM, on which UML cleans up after itself, and in any case SIGKILL to the process
        group: UML forks helper processes (one per guest address space, I/O threads).
        """
        proc = self._proc
        if proc is None:
            return
        self.release()
        if not wait_exit(proc, timeout):
            _note(self.console_path, f"guest did not halt within {timeout:.0f} s: SIGTERM")
            proc.send_signal(signal.SIGTERM)
            if not wait_exit(proc, TERM_TIMEOUT):
                _note(self.console_path, f"still running {TERM_TIMEOUT:.0f} s later: SIGKILL")
        kill_group(proc, TERM_TIMEOUT)


class GuestPool:
    """Boots numbered guests on one tmp dir and takes them all down at the end.

    Guests are numbered 1, 2, 3... in boot order. By default a guest waits, before running its
    commands, for every guest booted before it or in the same call.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.uml_dir = _short_enough(workdir / "uml")
        self.guests: list[Guest] = []

    def __call__(
        self,
        switch: Switch | Path,
        *command_lists: Sequence[str],
        wait_for: Iterable[str] | None = None,
        timeout: float = BOOT_TIMEOUT,
        vde: bool = False,
    ) -> list[Guest]:
        """Boot one guest per command list on `switch`, in parallel; return them once all are up.

        The guests attach with `eth0=daemon` to the control socket, or with `vde` through UML's
        vde transport (libvdeplug) to the VDE directory holding it (`DIR/ctl`, as vde_switch and
        `umlswitch --vde DIR` lay it out): `eth0=vde,vde://DIR,MAC`.
        """
        ctl = switch.ctl if isinstance(switch, Switch) else switch
        first = len(self.guests) + 1
        indexes = range(first, first + len(command_lists))
        if wait_for is None:
            wait_for = [f"g{i}" for i in range(1, indexes.stop)]
        peers = list(wait_for)
        batch = [
            Guest(
                index,
                self.workdir,
                self.uml_dir,
                ctl,
                commands,
                peers,
                transport=f"vde,vde://{ctl.parent},{mac_for(index)}" if vde else None,
            )
            for index, commands in zip(indexes, command_lists, strict=True)
        ]
        self.guests += batch
        for guest in batch:
            guest.start()
        deadline = time.monotonic() + timeout
        for guest in batch:
            guest.wait_up(max(deadline - time.monotonic(), 0.0))
        return batch

    def log_paths(self) -> list[Path]:
        """Every guest's console log, for failure reports."""
        return [guest.console_path for guest in self.guests]

    def stop_all(self) -> None:
        """Release every guest at once, then stop each one; remove the uml_dir."""
        (self.workdir / "stop").touch()
        deadline = time.monotonic() + HALT_TIMEOUT
        errors: list[str] = []
        for guest in self.guests:
            try:
                guest.stop(max(deadline - time.monotonic(), 0.0))
            except E2EError as exc:
                errors.append(str(exc))
        shutil.rmtree(self.uml_dir, ignore_errors=True)
        if errors:
            raise E2EError("; ".join(errors))


def _short_enough(uml_dir: Path) -> Path:
    """`uml_dir`, or a short directory in /tmp if UML's mconsole socket path would not fit."""
    # <uml_dir>/<umid>/mconsole must fit in sun_path (108 bytes) or UML has no mconsole.
    if len(f"{uml_dir}/e2e-{os.getpid()}-g99/mconsole") < 100:
        return uml_dir
    return Path(tempfile.mkdtemp(prefix="umlsw-e2e-"))
