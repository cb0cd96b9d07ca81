"""vde_switch clients (libvdeplug's packed v3 dialect, pathname data sockets) on the same switch."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.frames import BROADCAST, frame, mac
from umlswitch.testing import SyncPort, attach_sync

pytestmark = pytest.mark.integration


def vde_client(ctl: str, own_path: Path, *, port: int = 0, descr: str = "test") -> SyncPort:
    """What libvdeplug does: a pathname data socket, a packed v3 request with a description,
    and the socket file removed right after the handshake."""
    try:
        return attach_sync(
            ctl, dialect="vde", address=str(own_path), requested_port=port,
            description=f"{descr} pid=1", timeout=3,
        )  # fmt: skip
    finally:
        os.unlink(own_path)


def test_vde_client_and_uml_client_share_the_switch(start_switch, tmp_path):
    vde_dir = tmp_path / "vde"
    ctl = str(vde_dir / "ctl")
    switch = start_switch("--vde", str(vde_dir), unix=False, control_path=ctl)
    assert stat.S_IMODE(vde_dir.stat().st_mode) == 0o2700
    vde = vde_client(ctl, tmp_path / "client.sock", port=7, descr="qemu")
    with attach_sync(ctl) as uml:
        switch.wait_for_log("port 1 attached")
        assert isinstance(vde.switch_address, str)
        assert os.path.dirname(vde.switch_address) == str(vde_dir)
        assert os.path.basename(vde.switch_address).startswith("007.")
        vde.send(frame(BROADCAST, mac(7)))
        assert uml.receive_bytes() == frame(BROADCAST, mac(7))
        uml.send(frame(mac(7), mac(1)))
        assert vde.receive_bytes() == frame(mac(7), mac(1))
    log = switch.log
    assert "port 7 attached: v3-vde client" in log
    assert "user=root description='qemu pid=1'" in log
    vde.close()
    switch.wait_for_log("port 7 detached")
    assert not os.path.exists(vde.switch_address)  # our data socket file is gone with the port
    switch.stop()
    assert not vde_dir.exists()  # created by the switch, removed by it


def test_a_taken_port_number_is_refused(start_switch, tmp_path):
    vde_dir = tmp_path / "vde"
    ctl = str(vde_dir / "ctl")
    switch = start_switch("--vde", str(vde_dir), unix=False, control_path=ctl)
    first = vde_client(ctl, tmp_path / "a.sock", port=3)
    with pytest.raises(ConnectionError):
        vde_client(ctl, tmp_path / "b.sock", port=3)
    switch.wait_for_log("port 3 is already in use")
    second = vde_client(ctl, tmp_path / "c.sock")  # any free number is fine
    assert os.path.basename(str(second.switch_address)).startswith("001.")
    first.close()
    second.close()


def test_control_socket_named_ctl_serves_vde_clients_without_the_flag(start_switch, tmp_path):
    directory = tmp_path / "sw"
    directory.mkdir()
    start_switch(control_path=str(directory / "ctl"))
    client = vde_client(str(directory / "ctl"), tmp_path / "x.sock")
    assert os.path.dirname(str(client.switch_address)) == str(directory)
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
def test_real_vde_plug_exchanges_frames(start_switch, tmp_path):
    vde_dir = tmp_path / "vde"
    switch = start_switch("--vde", str(vde_dir), unix=False, control_path=str(vde_dir / "ctl"))
    plug = subprocess.Popen(
        ["vde_plug", "-D", "plugtest", f"vde://{vde_dir}[4]"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        switch.wait_for_log("port 4 attached")
        assert "description='plugtest user=root pid=" in switch.log
        assert plug.stdin is not None and plug.stdout is not None
        with attach_sync(str(vde_dir / "ctl")) as uml:
            # vde_plug's stdio speaks a 2-byte big-endian length before each frame
            sent = frame(BROADCAST, mac(4))
            plug.stdin.write(len(sent).to_bytes(2, "big") + sent)
            plug.stdin.flush()
            assert uml.receive_bytes() == sent
            uml.send(frame(mac(4), mac(1)))
            size = int.from_bytes(plug.stdout.read(2), "big")
            assert plug.stdout.read(size) == frame(mac(4), mac(1))
    finally:
        plug.terminate()
        plug.communicate(timeout=5)
