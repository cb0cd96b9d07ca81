"""The command line and lifecycle as a user runs them: start, stop, stale and live sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.integration.conftest import pid_alive
from tests.integration.frames import frame, mac
from umlswitch.testing import READY, attach_sync, wait_until_sync

pytestmark = pytest.mark.integration


def run_cli(*args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "umlswitch", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_cleanly_and_removes_every_socket(start_switch, tmp_path, sig):
    ctl, data, pidfile = tmp_path / "ctl", tmp_path / "data", tmp_path / "pid"
    switch = start_switch(str(data), "--pidfile", str(pidfile))
    assert ctl.is_socket() and data.is_socket()
    assert int(pidfile.read_text()) == switch.process.pid
    with attach_sync(str(ctl)):
        switch.wait_for_log("port 1 attached")
        assert switch.stop(sig=sig) == 0
    assert not ctl.exists() and not data.exists() and not pidfile.exists()
    assert "cleaning up and exiting" in switch.log
    stopped = switch.log.splitlines()[-1]
    assert f"removed {ctl}, {data}, {ctl}.mgmt, pidfile {pidfile}" in stopped, stopped


def test_stale_socket_is_reclaimed(start_switch, ctl):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(ctl)  # bound, never listening: what a killed switch leaves behind
    stale.close()
    switch = start_switch()
    assert "reclaimed stale socket" in switch.log
    with attach_sync(ctl):
        switch.wait_for_log("port 1 attached")


def test_kill_9_then_restart_reclaims_the_socket(start_switch, ctl):
    first = start_switch()
    assert first.stop(sig=signal.SIGKILL) == -signal.SIGKILL
    assert os.path.exists(ctl)
    second = start_switch()
    with attach_sync(ctl):
        second.wait_for_log("port 1 attached")


def test_live_socket_is_refused(start_switch, ctl):
    first = start_switch()
    result = run_cli("-unix", ctl)
    assert result.returncode == 1
    assert "has another server attached" in result.stderr
    assert f"(pid {first.process.pid})" in result.stderr  # which switch to stop
    assert result.stderr.count("\n") == 1
    # the first switch still serves
    with attach_sync(ctl):
        first.wait_for_log("port 1 attached")


@pytest.mark.parametrize(
    "args, message",
    [
        (["-unix", "/nonexistent-dir/ctl"], "mkdir -p /nonexistent-dir"),
        (
            ["-unix", "{tmp}/ctl", "-tap", "tap-name-too-long"],
            "-tap 'tap-name-too-long': not a valid interface name: the name is 17 bytes long",
        ),
    ],
    ids=["missing-directory", "tap-invalid-name"],
)
def test_startup_errors_are_one_clear_line(tmp_path, args, message):
    result = run_cli(*(arg.format(tmp=tmp_path) for arg in args))
    assert result.returncode == 1
    assert message in result.stderr
    assert result.stderr.count("\n") == 1


def test_not_a_socket_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "ctl"
    path.write_text("precious")
    result = run_cli("-unix", str(path))
    assert result.returncode == 1
    assert "is not a socket" in result.stderr
    assert path.read_text() == "precious"


def test_unknown_option_exits_2_with_usage():
    result = run_cli("-frobnicate")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: umlswitch")
    assert "umlswitch: error: unrecognized arguments: -frobnicate" in result.stderr


def test_help_documents_every_uml_switch_option():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("-unix", "-hub", "-tap", "-daemon", "-compat-v0", "--pidfile", "--aging"):
        assert option in result.stdout
    for option in ("--max-macs", "--max-frame", "--log-level", "--log-file"):
        assert option in result.stdout


def frames_pass(ctl: str) -> None:
    """Two ports exchange a frame: the switch has served a while since it started."""
    with attach_sync(ctl) as a, attach_sync(ctl) as b:
        a.send(frame(mac(1), mac(2)))
        assert b.receive_bytes() == frame(mac(1), mac(2))


def test_eof_on_stdin_pipe_exits_cleanly(start_switch, ctl):
    read_end, write_end = os.pipe()
    switch = start_switch(stdin=read_end)
    os.close(read_end)
    os.write(write_end, b"typed at the switch\n")  # read and ignored: not an EOF
    frames_pass(ctl)
    assert switch.process.poll() is None  # an open pipe keeps it running
    assert "EOF on stdin" not in switch.log and "no longer watching it" not in switch.log
    os.close(write_end)
    assert switch.process.wait(10) == 0
    assert "EOF on stdin" in switch.log
    assert not os.path.exists(ctl)


def test_stdin_dev_null_is_ignored(start_switch, ctl):
    switch = start_switch()  # stdin is /dev/null: EOF at once, were it watched
    frames_pass(ctl)
    assert switch.process.poll() is None
    assert "EOF on stdin" not in switch.log and "no longer watching it" not in switch.log


def test_daemon_mode_detaches_writes_pidfile_and_logs_to_file(tmp_path):
    ctl, pidfile, logfile = tmp_path / "ctl", tmp_path / "pid", tmp_path / "log"
    result = run_cli(
        "-unix", str(ctl), "-daemon", "--pidfile", str(pidfile), "--log-file", str(logfile)
    )
    assert result.returncode == 0, result.stderr
    pid = int(pidfile.read_text())
    try:
        assert pid_alive(pid)
        assert os.getsid(pid) != os.getsid(
            0
        )  # a session of its own: our terminal closing cannot kill it
        assert READY in logfile.read_text()
        with attach_sync(str(ctl)) as a, attach_sync(str(ctl)) as b:
            b.send(frame(mac(1), mac(2)))
            assert a.receive_bytes() == frame(mac(1), mac(2))
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_until_sync(lambda: not pid_alive(pid), 10, "the daemon exiting on SIGTERM")
    assert not ctl.exists() and not pidfile.exists()
    assert "port 1 attached" in logfile.read_text()


def test_daemon_mode_reports_startup_failure(tmp_path):
    result = run_cli("-unix", str(tmp_path / "missing" / "ctl"), "-daemon")
    assert result.returncode == 1
    assert "does not exist" in result.stderr


def test_relative_paths_survive_daemon_chdir(tmp_path):
    pidfile = tmp_path / "pid"
    result = subprocess.run(
        [sys.executable, "-m", "umlswitch", "-unix", "rel.ctl", "-daemon", "--pidfile", "pid",
         "--log-file", "log"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGTERM)
    wait_until_sync(lambda: not pid_alive(pid), 10, "the daemon exiting on SIGTERM")
    assert not (tmp_path / "rel.ctl").exists()
    assert "removed" in (tmp_path / "log").read_text()


def wait_for_text(path, text: str, timeout: float = 10.0) -> None:
    wait_until_sync(
        lambda: path.exists() and text in path.read_text(), timeout, f"{text!r} in {path}"
    )


def test_sighup_reopens_the_log_file_for_logrotate(start_switch, tmp_path, ctl):
    logfile, rotated = tmp_path / "switch.log", tmp_path / "switch.log.1"
    switch = start_switch("--log-file", str(logfile), wait_ready=False)
    wait_for_text(logfile, READY)
    logfile.rename(rotated)  # what logrotate does, before its postrotate kill -HUP
    switch.process.send_signal(signal.SIGHUP)
    wait_for_text(logfile, f"reopened the log file '{logfile}'")
    assert f"caught SIGHUP, reopening the log file '{logfile}'" in rotated.read_text()
    assert switch.process.poll() is None  # still serving
    with attach_sync(ctl):
        wait_for_text(logfile, "port 1 attached")
    assert "port 1 attached" not in rotated.read_text()
    assert switch.stop() == 0
    assert "umlswitch stopped" in logfile.read_text()


def test_sighup_without_a_log_file_exits_cleanly(start_switch, ctl):
    switch = start_switch()
    assert switch.stop(sig=signal.SIGHUP) == 0
    assert "caught SIGHUP, cleaning up and exiting" in switch.log
    assert not os.path.exists(ctl)
