"""The command line and lifecycle as a user runs them: start, stop, stale and live sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.integration.client import Client, frame, mac
from tests.integration.conftest import pid_alive
from tests.integration.process import READY

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
def test_signal_exits_cleanly_and_removes_every_socket(start_daemon, tmp_path, sig):
    ctl, data, pidfile = tmp_path / "ctl", tmp_path / "data", tmp_path / "pid"
    daemon = start_daemon("-unix", str(ctl), str(data), "--pidfile", str(pidfile))
    assert ctl.is_socket() and data.is_socket()
    assert int(pidfile.read_text()) == daemon.proc.pid
    with Client(str(ctl)):
        daemon.wait_for("port 1 attached")
        assert daemon.stop(sig) == 0
    assert not ctl.exists() and not data.exists() and not pidfile.exists()
    assert "cleaning up and exiting" in daemon.log
    stopped = daemon.log.splitlines()[-1]
    assert f"removed {ctl}, {data}, {ctl}.mgmt, pidfile {pidfile}" in stopped, stopped


def test_stale_socket_is_reclaimed(start_daemon, ctl):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(ctl)  # bound, never listening: what a killed switch leaves behind
    stale.close()
    daemon = start_daemon("-unix", ctl)
    assert "reclaimed stale socket" in daemon.log
    with Client(ctl):
        daemon.wait_for("port 1 attached")


def test_kill_9_then_restart_reclaims_the_socket(start_daemon, ctl):
    first = start_daemon("-unix", ctl)
    first.stop(signal.SIGKILL)
    assert os.path.exists(ctl)
    second = start_daemon("-unix", ctl)
    with Client(ctl):
        second.wait_for("port 1 attached")


def test_live_socket_is_refused(start_daemon, ctl):
    first = start_daemon("-unix", ctl)
    result = run_cli("-unix", ctl)
    assert result.returncode == 1
    assert "has another server attached" in result.stderr
    assert f"(pid {first.proc.pid})" in result.stderr  # which switch to stop
    assert result.stderr.count("\n") == 1
    # the first switch still serves
    with Client(ctl):
        first.wait_for("port 1 attached")


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


def test_eof_on_stdin_pipe_exits_cleanly(start_daemon, ctl):
    read_end, write_end = os.pipe()
    daemon = start_daemon("-unix", ctl, stdin=read_end)
    os.close(read_end)
    time.sleep(0.3)
    assert daemon.proc.poll() is None  # an open pipe keeps it running
    os.close(write_end)
    assert daemon.proc.wait(10) == 0
    assert "EOF on stdin" in daemon.log
    assert not os.path.exists(ctl)


def test_stdin_dev_null_is_ignored(start_daemon, ctl):
    daemon = start_daemon("-unix", ctl)  # stdin is /dev/null
    time.sleep(0.5)
    assert daemon.proc.poll() is None


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
        with Client(str(ctl)) as a, Client(str(ctl)) as b:
            b.send(frame(mac(1), mac(2)))
            assert a.recv() == frame(mac(1), mac(2))
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not pid_alive(pid)
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
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (tmp_path / "rel.ctl").exists()
    assert "removed" in (tmp_path / "log").read_text()


def wait_for_text(path, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"no {text!r} in {path} within {timeout} s"
        time.sleep(0.02)


def test_sighup_reopens_the_log_file_for_logrotate(start_daemon, tmp_path, ctl):
    logfile, rotated = tmp_path / "switch.log", tmp_path / "switch.log.1"
    daemon = start_daemon("-unix", ctl, "--log-file", str(logfile), wait=False)
    wait_for_text(logfile, READY)
    logfile.rename(rotated)  # what logrotate does, before its postrotate kill -HUP
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for_text(logfile, f"reopened the log file '{logfile}'")
    assert f"caught SIGHUP, reopening the log file '{logfile}'" in rotated.read_text()
    assert daemon.proc.poll() is None  # still serving
    with Client(ctl):
        wait_for_text(logfile, "port 1 attached")
    assert "port 1 attached" not in rotated.read_text()
    assert daemon.stop() == 0
    assert "umlswitch stopped" in logfile.read_text()


def test_sighup_without_a_log_file_exits_cleanly(start_daemon, ctl):
    daemon = start_daemon("-unix", ctl)
    assert daemon.stop(signal.SIGHUP) == 0
    assert "caught SIGHUP, cleaning up and exiting" in daemon.log
    assert not os.path.exists(ctl)
