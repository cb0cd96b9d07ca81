"""End-to-end: VDE clients and UML eth0=daemon guests on one umlswitch (`--vde DIR`).

In a private network namespace: the real `vde_plug` (Debian's vdeplug) joins the switch to a tap
device of the namespace, so the host stack pings a UML guest on `eth0=daemon`; and a UML guest
booted with `eth0=vde,vde://DIR` (Debian's UML spawns vde_plug for it) pings an `eth0=daemon`
guest through the same switch.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import ip

from .test_uml_guests import assert_no_loss
from .uml import GuestPool, Switch, ip_for, ping_command

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("vde_plug") is None, reason="needs vde_plug (Debian vdeplug)"),
]

HOST_IP = "10.0.0.254"


@pytest.fixture
def vde_switch(netns: str, tmp_path: Path) -> Iterator[Switch]:
    """umlswitch --vde DIR inside the test's network namespace."""
    vde_dir = tmp_path / "vde"
    sw = Switch(
        vde_dir / "ctl",
        [sys.executable, "-m", "umlswitch", "--vde", str(vde_dir)],
        tmp_path / "switch.log",
    )
    sw.start()
    yield sw
    sw.stop()


def test_host_pings_a_daemon_guest_through_vde_plug_and_a_tap(
    vde_switch: Switch, guests: GuestPool, tmp_path: Path
) -> None:
    ip("tuntap", "add", "vtap0", "mode", "tap")
    ip("addr", "add", f"{HOST_IP}/24", "dev", "vtap0")
    ip("link", "set", "vtap0", "up")
    vde_dir = vde_switch.ctl.parent
    plug = subprocess.Popen(
        ["vde_plug", "-D", "host-tap", f"vde://{vde_dir}", "tap://vtap0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        (g1,) = guests(vde_switch.ctl, [ping_command(HOST_IP)])
        assert_no_loss(g1.result(0))
        host_ping = subprocess.run(
            ["ping", "-c", "3", "-i", "0.2", "-W", "2", g1.ip],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert host_ping.returncode == 0, host_ping.stdout + host_ping.stderr
        assert " 0% packet loss" in host_ping.stdout
        log = vde_switch.log_path.read_text()
        assert "v3-vde client" in log and "description='host-tap user=root" in log
    finally:
        plug.terminate()
        plug.wait(5)


def test_uml_vde_guest_pings_a_daemon_guest(vde_switch: Switch, guests: GuestPool) -> None:
    guests(vde_switch.ctl, [])  # g1, on eth0=daemon
    # g2 on eth0=vde,vde:///DIR,MAC; it waits for g1 to be up
    (vde_guest,) = guests(vde_switch.ctl, [ping_command(ip_for(1))], vde=True)
    assert_no_loss(vde_guest.result(0))
    log = vde_switch.log_path.read_text()
    assert "v3-vde client" in log and "v3-uml client" in log
