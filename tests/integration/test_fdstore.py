"""systemd's fd store and MAINPID, against a fake NOTIFY_SOCKET that keeps the descriptors.

The test plays systemd: it receives ``FDSTORE=1`` datagrams with their descriptors
(SCM_RIGHTS), kills the switch with SIGKILL, and starts it again as systemd would, passing the
stored descriptors with ``LISTEN_FDS`` and ``LISTEN_FDNAMES``: the guest attached before the
crash is served again, with its port number. A seamless restart under ``NOTIFY_SOCKET`` tells
systemd the new main pid before the old process exits.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from pathlib import Path

import pytest

from tests.integration.test_restart import (
    ETHERTYPE,
    MAC_A,
    MAC_B,
    ctl_cli,
    numbered,
    serving_pid,
    stop_pid,
    wait_for_new_pid,
)
from tests.integration.test_systemd import start_like_systemd
from umlswitch.mgmt.client import connect
from umlswitch.testing import READY, SwitchProcess, attach_sync

pytestmark = pytest.mark.integration


class FakeSystemd:
    """NOTIFY_SOCKET's receiving end, with an fd store."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.store: dict[str, int] = {}
        self.messages: list[dict[str, str]] = []

    def pump(self, duration: float) -> None:
        """Take what the switch says for ``duration`` seconds."""
        deadline = time.monotonic() + duration
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 4096, 16)
            except TimeoutError:
                return
            message = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append(message)
            if message.get("FDSTORE") == "1":
                old = self.store.pop(message["FDNAME"], None)
                if old is not None:
                    os.close(old)
                self.store[message["FDNAME"]] = fds[0]
            elif message.get("FDSTOREREMOVE") == "1":
                fd = self.store.pop(message["FDNAME"], None)
                if fd is not None:
                    os.close(fd)

    def close(self) -> None:
        self.sock.close()
        for fd in self.store.values():
            os.close(fd)


@pytest.fixture
def fake_systemd(tmp_path: Path):
    fake = FakeSystemd(tmp_path / "notify")
    yield fake
    fake.close()


def test_guests_survive_a_crash_through_the_fd_store(tmp_path: Path, fake_systemd: FakeSystemd):
    ctl = str(tmp_path / "ctl")
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "FDSTORE": "64"}
    first = SwitchProcess(directory=str(tmp_path), env=env)
    with attach_sync(ctl, mac=MAC_A) as a:
        with attach_sync(ctl, mac="02:00:00:00:01:0d"):
            fake_systemd.pump(1.5)
        fake_systemd.pump(1.5)  # the second guest left: its descriptors leave the store
        assert sorted(fake_systemd.store) == [
            "umlswitch.control",
            "umlswitch.mgmt",
            "umlswitch.port.1.ctl",
            "umlswitch.port.1.data",
        ]
        assert {"FDSTOREREMOVE": "1", "FDNAME": "umlswitch.port.2.data"} in fake_systemd.messages
        assert first.stop(sig=signal.SIGKILL) == -signal.SIGKILL
        names = list(fake_systemd.store)
        passed = [socket.socket(fileno=os.dup(fake_systemd.store[n])) for n in names]
        second = start_like_systemd(
            tmp_path,
            ["-unix", ctl],
            passed=passed,
            env={"LISTEN_FDNAMES": ":".join(names), "NOTIFY_SOCKET": str(tmp_path / "notify")},
        )
        for sock in passed:
            sock.close()
        try:
            second.wait_for_log(READY)
            assert "re-attached 1 port(s) kept by systemd" in second.log
            with attach_sync(ctl, mac=MAC_B) as b:
                a.send(numbered(MAC_A, "ff:ff:ff:ff:ff:ff", 1))  # learned anew
                assert struct.unpack("!Q", b.receive_bytes()[14:22])[0] == 1
                b.send(numbered(MAC_B, MAC_A, 2))
                assert struct.unpack("!HQ", a.receive_bytes()[12:22]) == (ETHERTYPE, 2)
                with connect(ctl + ".mgmt") as client:
                    ports = {p["id"]: p["name"] for p in client.json("port/print")["ports"]}
                assert ports[1].startswith("unix:1 pid=")
        finally:
            assert second.stop() == 0
    assert not os.path.exists(ctl)


def test_restart_tells_systemd_the_new_main_pid(tmp_path: Path, fake_systemd: FakeSystemd):
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
    switch = SwitchProcess(directory=str(tmp_path), env=env)
    fake_systemd.pump(0.3)
    assert ctl_cli(switch.control_path, "restart").returncode == 0
    new = wait_for_new_pid(switch.control_path, switch.process.pid)
    assert switch.process.wait(5) == 0
    try:
        fake_systemd.pump(1.0)
        mainpids = [m["MAINPID"] for m in fake_systemd.messages if "MAINPID" in m]
        assert mainpids[-2:] == [str(new), str(new)]  # from the old process, then the new
        stopping = [m for m in fake_systemd.messages if "STOPPING" in m]
        assert stopping == []  # the service never looked as if it stopped
    finally:
        stop_pid(serving_pid(switch.control_path))
