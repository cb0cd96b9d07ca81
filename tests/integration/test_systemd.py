"""systemd: readiness over NOTIFY_SOCKET and socket activation (LISTEN_FDS), as systemd does them.

A test plays systemd: it listens on a datagram socket named by NOTIFY_SOCKET, and binds the
sockets a .socket unit would, handing them to the switch from fd 3 on with LISTEN_FDS and
LISTEN_PID. ``systemd-socket-activate`` (Debian package systemd) does the same for real.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.integration.frames import frame, mac
from umlswitch.testing import READY, SwitchProcess, attach_sync, wait_until_sync

pytestmark = pytest.mark.integration

# Puts the given fds at 3, 4, ... and LISTEN_PID=its own pid, then execs the rest of its
# command line (the switch): the same pid, as systemd's own fork does.
LAUNCHER = """\
import os, sys
fds = [int(fd) for fd in sys.argv[1].split(",") if fd]
copies = [os.dup(fd) for fd in fds]
for i, fd in enumerate(copies):
    os.dup2(fd, 3 + i)
    os.set_inheritable(3 + i, True)  # dup2(3, 3) leaves os.dup's close-on-exec flag
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""


def start_like_systemd(
    tmp_path: Path,
    args: list[str],
    *,
    passed: Sequence[socket.socket] = (),
    env: dict[str, str] | None = None,
    launcher: list[str] | None = None,
) -> SwitchProcess:
    """A umlswitch subprocess started as systemd would: passed sockets and a NOTIFY_SOCKET.
    ``args`` are the whole command line; ``launcher`` runs it instead of the LAUNCHER."""
    environ = {**os.environ, **(env or {})}
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET"):
        if name not in (env or {}):
            environ.pop(name, None)
    fds = [s.fileno() for s in passed]
    if passed:
        environ["LISTEN_FDS"] = str(len(passed))
    if launcher is None:
        launcher = [sys.executable, "-c", LAUNCHER, ",".join(map(str, fds))]
    return SwitchProcess(
        *args, directory=str(tmp_path), unix=False, launcher=launcher, wait_ready=False,
        env=environ, pass_fds=fds,
    )  # fmt: skip


@pytest.fixture
def switches() -> Iterator[list[SwitchProcess]]:
    started: list[SwitchProcess] = []
    yield started
    for switch in started:
        if switch.process.poll() is None:
            switch.process.kill()
            switch.process.wait()


def listening(path: Path, mode: int = 0o666) -> socket.socket:
    """A listening unix stream socket at ``path``, as a .socket unit's ListenStream= makes it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, mode)
    sock.listen(16)
    return sock


class NotifySocket:
    """The service manager's end of NOTIFY_SOCKET: collects what the service says."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.messages: list[dict[str, str]] = []

    def next(self, timeout: float = 10.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        message = dict(line.split("=", 1) for line in data.splitlines())
        self.messages.append(message)
        return message

    def wait_for(self, key: str, value: str | None = None, timeout: float = 10.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(deadline - time.monotonic(), 0.01))
            if key in message and (value is None or message[key] == value):
                return message


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(str(tmp_path / "notify"))
    yield listener
    listener.sock.close()


def test_ready_status_and_stopping_reach_notify_socket(tmp_path, notify_socket, switches):
    ctl = tmp_path / "ctl"
    switch = start_like_systemd(
        tmp_path, ["-unix", str(ctl)], env={"NOTIFY_SOCKET": str(tmp_path / "notify")}
    )
    switches.append(switch)
    ready = notify_socket.wait_for("READY", "1")
    assert ready["MAINPID"] == str(switch.process.pid)
    assert ready["STATUS"] == f"switch on {ctl}: 0 port(s), 0 MAC(s)"
    # READY=1 means serving: no waiting
    with attach_sync(str(ctl)) as a, attach_sync(str(ctl)) as b:
        a.send(frame(mac(2), mac(1)))
        assert b.receive_bytes() == frame(mac(2), mac(1))
        status = notify_socket.wait_for("STATUS", f"switch on {ctl}: 2 port(s), 1 MAC(s)")
        assert "READY" not in status  # an update, only when it changed
    assert switch.stop() == 0
    stopping = notify_socket.wait_for("STOPPING", "1")
    assert stopping["STATUS"] == "stopping"
    assert "cannot notify" not in switch.log


def test_an_abstract_notify_socket(tmp_path, switches):
    name = f"umlswitch-test-notify-{os.getpid()}"
    listener = NotifySocket("\0" + name)
    try:
        switch = start_like_systemd(
            tmp_path, ["-unix", str(tmp_path / "ctl")], env={"NOTIFY_SOCKET": "@" + name}
        )
        switches.append(switch)
        assert listener.wait_for("READY", "1")["MAINPID"] == str(switch.process.pid)
        assert switch.stop() == 0
    finally:
        listener.sock.close()


def test_a_notify_socket_nobody_serves_is_one_warning(tmp_path, switches):
    switch = start_like_systemd(
        tmp_path, ["-unix", str(tmp_path / "ctl")], env={"NOTIFY_SOCKET": str(tmp_path / "gone")}
    )
    switches.append(switch)
    switch.wait_for_log(READY)
    assert switch.stop() == 0
    assert switch.log.count(f"cannot notify systemd on NOTIFY_SOCKET '{tmp_path}/gone'") == 1


def test_socket_activation_serves_the_passed_control_and_mgmt_sockets(tmp_path, switches):
    ctl, mgmt = tmp_path / "uml_switch.ctl", tmp_path / "uml_switch.ctl.mgmt"
    passed = [listening(ctl, 0o660), listening(mgmt, 0o660)]
    try:
        # no -unix: the passed socket's path
        switch = start_like_systemd(tmp_path, [], passed=passed)
        switches.append(switch)
        switch.wait_for_log(READY)
        assert f"socket activation: serving {ctl}, {mgmt}, passed by systemd" in switch.log
        assert f"attached to unix socket '{ctl}'" in switch.log
        with attach_sync(str(ctl)) as a, attach_sync(str(ctl)) as b:
            a.send(frame(mac(2), mac(1)))
            assert b.receive_bytes() == frame(mac(2), mac(1))
            shown = subprocess.run(
                [sys.executable, "-m", "umlswitch", "ctl", "-unix", str(ctl), "port/print"],
                capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            assert shown.returncode == 0 and shown.stdout.count("Port 000") == 2, shown
        # the unit's SocketMode= stands (the switch would make its own sockets 0600)
        assert stat.S_IMODE(os.stat(ctl).st_mode) == 0o660
        assert switch.stop() == 0
        # systemd's sockets stay, still listening for the next start
        assert ctl.is_socket() and mgmt.is_socket()
        assert "removed nothing" in switch.log
        again = start_like_systemd(tmp_path, [], passed=passed)
        switches.append(again)
        with attach_sync(str(ctl)):
            again.wait_for_log("port 1 attached")
        assert again.stop() == 0
    finally:
        for sock in passed:
            sock.close()


def test_socket_activation_with_a_data_socket_and_a_created_mgmt_socket(tmp_path, switches):
    ctl, data = tmp_path / "ctl", tmp_path / "data"
    datagram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    datagram.bind(str(data))
    passed = [listening(ctl), datagram]
    try:
        switch = start_like_systemd(tmp_path, ["-unix", str(ctl)], passed=passed)
        switches.append(switch)
        switch.wait_for_log(READY)
        assert f"data socket '{data}'" in switch.log
        with (
            attach_sync(str(ctl), dialect="v0", data_path=str(data)) as a,
            attach_sync(str(ctl)) as b,
        ):
            switch.wait_for_log("port 2 attached")
            a.send(frame(mac(2), mac(1)))
            assert b.receive_bytes() == frame(mac(2), mac(1))
        mgmt = tmp_path / "ctl.mgmt"
        assert mgmt.is_socket()  # not passed: created, and removed on exit
        assert switch.stop() == 0
        assert not mgmt.exists() and ctl.is_socket() and data.is_socket()
    finally:
        for sock in passed:
            sock.close()


def connected_socket(tmp_path: Path) -> tuple[socket.socket, socket.socket]:
    server = listening(tmp_path / "accept")
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(tmp_path / "accept"))
    connection, _ = server.accept()
    server.close()
    return connection, client


@pytest.mark.parametrize(
    "case, message",
    [
        ("other-path", "systemd passed the control socket '{tmp}/ctl' but the command line names "
                       "'{tmp}/other.ctl'; give both the same path (or leave -unix out)"),
        ("accept-yes", "is a connection, not a listening socket; the .socket unit must not say "
                       "Accept=yes"),
        ("two-controls", "expected one control socket (and its CTL.mgmt) among the stream sockets"
                         " systemd passed, got: {tmp}/ctl, {tmp}/ctl2"),
        ("not-unix", "fd 3 is not a unix socket; umlswitch serves unix sockets only"),
    ],
)  # fmt: skip
def test_socket_activation_errors_are_one_line(tmp_path, switches, case, message):
    keep: list[socket.socket] = []
    args: list[str] = []
    if case == "other-path":
        passed = [listening(tmp_path / "ctl")]
        args = ["-unix", str(tmp_path / "other.ctl")]
    elif case == "accept-yes":
        connection, client = connected_socket(tmp_path)
        passed, keep = [connection], [client]
    elif case == "two-controls":
        passed = [listening(tmp_path / "ctl"), listening(tmp_path / "ctl2")]
    else:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        passed = [udp]
    try:
        switch = start_like_systemd(tmp_path, args, passed=passed)
        switches.append(switch)
        assert switch.process.wait(10) == 1
        (line,) = switch.log.splitlines()
        assert line.startswith("umlswitch: socket activation: "), line
        assert message.format(tmp=tmp_path) in line
        assert not (tmp_path / "other.ctl").exists()
    finally:
        for sock in passed + keep:
            sock.close()


def test_listen_fds_for_another_pid_are_ignored(tmp_path, switches):
    ctl = tmp_path / "ctl"
    switch = start_like_systemd(
        tmp_path,
        ["-unix", str(ctl)],
        env={"LISTEN_PID": "1", "LISTEN_FDS": "1"},
        launcher=[],
    )
    switches.append(switch)
    switch.wait_for_log(READY)
    assert "socket activation" not in switch.log
    assert ctl.is_socket()
    assert switch.stop() == 0
    assert not ctl.exists()  # its own socket, removed


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None,
    reason="needs systemd-socket-activate (Debian package systemd)",
)
def test_systemd_socket_activate_starts_the_switch_on_the_first_connection(tmp_path, switches):
    ctl = tmp_path / "ctl"
    switch = start_like_systemd(
        tmp_path, [], launcher=["systemd-socket-activate", "-l", str(ctl), "-l", f"{ctl}.mgmt"]
    )
    switches.append(switch)
    wait_until_sync(ctl.exists, 10, f"systemd-socket-activate listening on {ctl}")
    assert READY not in switch.log  # nothing runs until a guest connects
    with attach_sync(str(ctl)) as a, attach_sync(str(ctl)) as b:  # the first connection starts it
        switch.wait_for_log("port 2 attached")
        a.send(frame(mac(2), mac(1)))
        assert b.receive_bytes() == frame(mac(2), mac(1))
    assert "socket activation: serving" in switch.log
    assert switch.stop() == 0  # the same pid: systemd-socket-activate exec'd the switch


# --- the shipped units ----------------------------------------------------------------------

UNITS = Path(__file__).resolve().parents[2] / "systemd"
RUN_DIR = "/run/uml-utilities"


def unit_values(unit: str, key: str) -> list[str]:
    """The values of ``key=`` lines of a unit file (a key may repeat)."""
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(f"{key}=")]


def exec_start_args(tmp_path: Path) -> list[str]:
    """umlswitch.service's ExecStart arguments, with /run/uml-utilities moved to tmp_path."""
    service = (UNITS / "umlswitch.service").read_text()
    (exec_start,) = unit_values(service, "ExecStart")
    argv = shlex.split(exec_start.replace(RUN_DIR, str(tmp_path)))
    assert argv[0] == "umlswitch"
    return [arg for arg in argv[1:] if arg != "$UMLSWITCH_OPTIONS"]


def test_the_service_is_type_notify_as_user_uml_net_like_debians_switch():
    service = (UNITS / "umlswitch.service").read_text()
    assert unit_values(service, "Type") == ["notify"]
    assert unit_values(service, "User") == ["uml-net"]
    assert unit_values(service, "ProtectSystem") == ["strict"]
    assert unit_values(service, "RuntimeDirectory") == ["uml-utilities"]
    assert f"-unix {RUN_DIR}/uml_switch.ctl" in unit_values(service, "ExecStart")[0]
    socket_unit = (UNITS / "umlswitch.socket").read_text()
    assert unit_values(socket_unit, "ListenStream") == [
        f"{RUN_DIR}/uml_switch.ctl",
        f"{RUN_DIR}/uml_switch.ctl.mgmt",
    ]
    assert unit_values(socket_unit, "SocketUser") == ["uml-net"]


def test_the_units_socket_activated_start_is_ready_and_serves(tmp_path, notify_socket, switches):
    """What systemd does with umlswitch.socket and umlswitch.service, paths moved to tmp_path."""
    socket_unit = (UNITS / "umlswitch.socket").read_text()
    (mode,) = unit_values(socket_unit, "SocketMode")
    paths = [
        Path(p.replace(RUN_DIR, str(tmp_path))) for p in unit_values(socket_unit, "ListenStream")
    ]
    passed = [listening(path, int(mode, 8)) for path in paths]
    ctl = paths[0]
    try:
        switch = start_like_systemd(
            tmp_path, exec_start_args(tmp_path), passed=passed,
            env={"NOTIFY_SOCKET": str(tmp_path / "notify")},
        )  # fmt: skip
        switches.append(switch)
        assert notify_socket.wait_for("READY", "1")["STATUS"].startswith(f"switch on {ctl}:")
        with attach_sync(str(ctl)) as a, attach_sync(str(ctl)) as b:
            a.send(frame(mac(2), mac(1)))
            assert b.receive_bytes() == frame(mac(2), mac(1))
        assert switch.stop() == 0
        assert all(path.is_socket() for path in paths)  # the socket unit's, kept for the next start
    finally:
        for sock in passed:
            sock.close()


def test_the_service_alone_creates_sockets_for_the_uml_net_group(tmp_path, notify_socket, switches):
    ctl = tmp_path / "uml_switch.ctl"
    switch = start_like_systemd(
        tmp_path, exec_start_args(tmp_path), env={"NOTIFY_SOCKET": str(tmp_path / "notify")}
    )
    switches.append(switch)
    notify_socket.wait_for("READY", "1")
    assert stat.S_IMODE(os.stat(ctl).st_mode) == 0o660  # the group may attach
    assert stat.S_IMODE(os.stat(f"{ctl}.mgmt").st_mode) == 0o660
    assert switch.stop() == 0
    assert not ctl.exists()


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (Debian package systemd)"
)
def test_systemd_analyze_verify_finds_nothing_wrong_with_the_units(tmp_path):
    # systemd looks a bare ExecStart name up in /usr/local/bin, /usr/bin, ...; installed
    # elsewhere (a virtualenv) a user names it in full, as done here.
    umlswitch = shutil.which("umlswitch")
    if umlswitch is None:
        pytest.skip("the umlswitch command is not installed (pip install .)")
    for name in ("umlswitch.service", "umlswitch.socket"):
        text = (UNITS / name).read_text()
        if not any(Path(d, "umlswitch").exists() for d in ("/usr/local/bin", "/usr/bin", "/bin")):
            text = text.replace("ExecStart=umlswitch ", f"ExecStart={umlswitch} ")
            text = text.replace("ExecReload=umlswitch ", f"ExecReload={umlswitch} ")
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "umlswitch.service"),
         str(tmp_path / "umlswitch.socket")],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.skipif(
    not Path("/run/systemd/system").is_dir(),
    reason="systemd is not the running init here (no /run/systemd/system): no real systemd-run",
)
@pytest.mark.skipif(os.geteuid() != 0, reason="starting a system unit needs root")
def test_systemd_run_starts_it_as_a_type_notify_unit(tmp_path):
    unit = f"umlswitch-test-{os.getpid()}.service"
    ctl = tmp_path / "ctl"
    started = subprocess.run(
        ["systemd-run", f"--unit={unit}", "--property=Type=notify", "--collect",
         f"--working-directory={Path.cwd()}",
         f"--setenv=PYTHONPATH={os.environ.get('PYTHONPATH', '')}",
         sys.executable, "-m", "umlswitch", "-unix", str(ctl)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr
        assert ctl.is_socket()  # systemd-run returns once READY=1 came: serving
        status = subprocess.run(
            ["systemctl", "show", "--property=StatusText", "--value", unit],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert status.stdout.strip() == f"switch on {ctl}: 0 port(s), 0 MAC(s)"
    finally:
        subprocess.run(["systemctl", "stop", unit], capture_output=True, timeout=60)
    assert not ctl.exists()
