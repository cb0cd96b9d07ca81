"""vde_switch clients (libvdeplug's packed v3 dialect, pathname data sockets) on the same switch."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.client import Client, frame, mac
from umlswitch.ports.unix import control

pytestmark = pytest.mark.integration

BROADCAST = b"\xff" * 6


class VdeClient:
    """What libvdeplug does: a pathname data socket, a packed v3 request, connect to the reply."""

    def __init__(self, ctl: str, own_path: Path, *, port: int = 0, descr: str = "test") -> None:
        self.data = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.data.bind(str(own_path))
        self.data.settimeout(3)
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctl.settimeout(3)
        self.ctl.connect(ctl)
        self.ctl.sendall(
            control.encode_v3(os.fsencode(own_path), port=port, description=f"{descr} pid=1")
        )
        reply = self.ctl.recv(control.SOCKADDR_UN_LEN)
        if not reply:
            self.close()
            raise ConnectionError("refused")
        self.switch_path = reply[2:].split(b"\0", 1)[0].decode()
        self.data.connect(self.switch_path)
        os.unlink(own_path)  # libvdeplug removes its own socket file right after the handshake

    def close(self) -> None:
        self.ctl.close()
        self.data.close()


def test_vde_client_and_uml_client_share_the_switch(start_daemon, tmp_path):
    vde_dir = tmp_path / "vde"
    daemon = start_daemon("--vde", str(vde_dir))
    ctl = str(vde_dir / "ctl")
    assert stat.S_IMODE(vde_dir.stat().st_mode) == 0o2700
    vde = VdeClient(ctl, tmp_path / "client.sock", port=7, descr="qemu")
    with Client(ctl) as uml:
        daemon.wait_for("port 1 attached")
        assert os.path.dirname(vde.switch_path) == str(vde_dir)
        assert os.path.basename(vde.switch_path).startswith("007.")
        vde.data.send(frame(BROADCAST, mac(7)))
        assert uml.recv() == frame(BROADCAST, mac(7))
        uml.send(frame(mac(7), mac(1)))
        assert vde.data.recv(2000) == frame(mac(7), mac(1))
    log = daemon.log
    assert "port 7 attached: v3-vde client" in log
    assert "user=root description='qemu pid=1'" in log
    vde.close()
    daemon.wait_for("port 7 detached")
    assert not os.path.exists(vde.switch_path)  # our data socket file is gone with the port
    daemon.stop()
    assert not vde_dir.exists()  # created by the switch, removed by it


def test_a_taken_port_number_is_refused(start_daemon, tmp_path):
    vde_dir = tmp_path / "vde"
    daemon = start_daemon("--vde", str(vde_dir))
    first = VdeClient(str(vde_dir / "ctl"), tmp_path / "a.sock", port=3)
    with pytest.raises(ConnectionError):
        VdeClient(str(vde_dir / "ctl"), tmp_path / "b.sock", port=3)
    daemon.wait_for("port 3 is already in use")
    second = VdeClient(str(vde_dir / "ctl"), tmp_path / "c.sock")  # any free number is fine
    assert os.path.basename(second.switch_path).startswith("001.")
    first.close()
    second.close()


def test_control_socket_named_ctl_serves_vde_clients_without_the_flag(start_daemon, tmp_path):
    directory = tmp_path / "sw"
    directory.mkdir()
    start_daemon("-unix", str(directory / "ctl"))
    client = VdeClient(str(directory / "ctl"), tmp_path / "x.sock")
    assert os.path.dirname(client.switch_path) == str(directory)
    client.close()


def test_vde_and_unix_together_is_a_usage_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "umlswitch", "--vde", str(tmp_path), "-unix", "x"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=10,
    )
    assert result.returncode == 2
    assert "either --vde DIR" in result.stderr


@pytest.mark.skipif(not os.path.exists("/usr/bin/vde_plug"), reason="needs vde_plug (vdeplug)")
def test_real_vde_plug_exchanges_frames(start_daemon, tmp_path):
    vde_dir = tmp_path / "vde"
    daemon = start_daemon("--vde", str(vde_dir))
    plug = subprocess.Popen(
        ["vde_plug", "-D", "plugtest", f"vde://{vde_dir}[4]"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        daemon.wait_for("port 4 attached")
        assert "description='plugtest user=root pid=" in daemon.log
        assert plug.stdin is not None and plug.stdout is not None
        with Client(str(vde_dir / "ctl")) as uml:
            # vde_plug's stdio speaks a 2-byte big-endian length before each frame
            sent = frame(BROADCAST, mac(4))
            plug.stdin.write(len(sent).to_bytes(2, "big") + sent)
            plug.stdin.flush()
            assert uml.recv() == sent
            uml.send(frame(mac(4), mac(1)))
            size = int.from_bytes(plug.stdout.read(2), "big")
            assert plug.stdout.read(size) == frame(mac(4), mac(1))
    finally:
        plug.terminate()
        plug.communicate(timeout=5)
