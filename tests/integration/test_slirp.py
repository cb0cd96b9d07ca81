"""``--slirp`` in the real daemon, with the real helper (``vde_plug slirp://``) and clients of
the test harness: DHCP offers to two clients, the helper's port in ``port/print``, the helper
running without root, a killed helper replaced (DHCP answers again within 10 s while the other
ports keep forwarding), SIGTERM leaving no helper and no private directory, and a missing
helper said in one line. (UML guests fetching pages through it: tests/e2e/test_uplink.py.)"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from umlswitch.ports.slirp.helper import PLUGIN, PLUGIN_GLOBS, find_program
from umlswitch.testing import SwitchProcess, SyncPort, attach_sync

from .conftest import pid_alive

MAC_1 = "02:00:00:00:5f:01"
MAC_2 = "02:00:00:00:5f:02"


def _why_no_helper() -> str | None:
    try:
        find_program()
    except Exception:
        return f"needs vde_plug and {PLUGIN} (Debian vdeplug, libvdeplug-slirp) in {PLUGIN_GLOBS}"
    return None


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_why_no_helper() is not None, reason=str(_why_no_helper())),
]


def dhcp_offer(port: SyncPort, timeout: float = 5.0) -> BOOTP:
    """Send DHCPDISCOVER until an offer for ``port`` arrives; return its BOOTP layer."""
    mac = bytes.fromhex(port.mac.replace(":", ""))
    xid = random.getrandbits(32)
    discover = (
        Ether(src=port.mac, dst="ff:ff:ff:ff:ff:ff")
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(chaddr=mac, xid=xid, flags=0x8000)
        / DHCP(options=[("message-type", "discover"), "end"])
    )
    deadline = time.monotonic() + timeout
    while True:
        port.send(discover)
        try:
            reply = port.receive(
                timeout=1.0, match=lambda p: BOOTP in p and p[BOOTP].xid == xid and p[BOOTP].op == 2
            )
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            continue
        return reply[BOOTP]


def slirp_port(switch: SwitchProcess) -> dict[str, object] | None:
    ports = [p for p in switch.counters()["ports"].values() if str(p["name"]).startswith("slirp:")]
    return ports[0] if ports else None


def wait_for_slirp_port(switch: SwitchProcess, not_pid: int = 0, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        port = slirp_port(switch)
        if port is not None and port["peer"] is not None and port["peer"]["pid"] != not_pid:  # type: ignore[index]
            return port
        assert time.monotonic() < deadline, switch.log
        time.sleep(0.05)


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its new parent counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def helper_dirs() -> set[str]:
    tmp = os.environ.get("TMPDIR", "/tmp")
    return {name for name in os.listdir(tmp) if name.startswith("umlswitch-slirp-")}


def test_slirp_serves_dhcp_survives_its_helper_and_leaves_nothing(tmp_path: Path) -> None:
    dirs_before = helper_dirs()
    switch = SwitchProcess("--slirp", directory=str(tmp_path))
    try:
        port = wait_for_slirp_port(switch)
        peer = port["peer"]
        assert isinstance(peer, dict)
        first_pid = peer["pid"]
        assert port["name"] == f"slirp:{port['id']} pid={first_pid}"
        assert "slirp uplink net 10.0.2.0/24 router 10.0.2.2, start 1" in str(port["description"])
        if os.geteuid() == 0:
            assert peer["uid"] == 65534, "the helper must not run as root"
        # nobody but the helper may attach on its private socket (root neither)
        private = re.search(r"vde://(/\S+umlswitch-slirp-\w+-\w+)", switch.log)
        assert private is not None, switch.log
        with pytest.raises(OSError):
            attach_sync(f"{private[1]}/ctl", mac=MAC_1, timeout=2)
        switch.wait_for_log("only the slirp helper (pid", 5)
        with (
            attach_sync(switch.control_path, mac=MAC_1) as c1,
            attach_sync(switch.control_path, mac=MAC_2) as c2,
        ):
            offer1, offer2 = dhcp_offer(c1), dhcp_offer(c2)
            assert offer1.yiaddr != offer2.yiaddr
            assert {offer1.yiaddr, offer2.yiaddr} <= {f"10.0.2.{n}" for n in range(15, 31)}
            c1.send(
                Ether(src=MAC_1, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=offer1.yiaddr, pdst="10.0.2.2")
            )
            assert (
                c1.receive(timeout=5, match=lambda p: ARP in p and p[ARP].op == 2).psrc
                == "10.0.2.2"
            )

            os.kill(first_pid, signal.SIGKILL)
            switch.wait_for_log(f"slirp helper (pid {first_pid}) was killed by SIGKILL", 5)
            killed_at = time.monotonic()
            # the other ports keep forwarding meanwhile
            c1.send(Ether(src=MAC_1, dst=MAC_2) / IP() / Raw(b"while the helper is down"))
            c2.receive(timeout=5, match=lambda p: bytes(p).endswith(b"while the helper is down"))
            port = wait_for_slirp_port(switch, not_pid=first_pid)
            assert "start 2" in str(port["description"])
            assert switch.counters()["info"]["events"]["slirp_helper_exit"] == 1
            dhcp_offer(c1, timeout=max(10 - (time.monotonic() - killed_at), 1))
            assert time.monotonic() - killed_at < 10
        second_pid = port["peer"]["pid"]
        assert switch.stop() == 0
        assert not pid_alive(first_pid) and not pid_alive(second_pid)
        assert f"slirp helper (pid {second_pid}) stopped" in switch.log
        assert helper_dirs() <= dirs_before
    finally:
        switch.stop()


def test_a_switch_killed_with_sigkill_leaves_no_helper(tmp_path: Path) -> None:
    switch = SwitchProcess("--slirp", directory=str(tmp_path))
    try:
        helper = wait_for_slirp_port(switch)["peer"]["pid"]
        private = re.search(r"vde://(/\S+umlswitch-slirp-\w+-\w+)", switch.log)
        assert private is not None, switch.log
        assert switch.stop(sig=signal.SIGKILL) == -signal.SIGKILL
        deadline = time.monotonic() + 5
        while not gone(helper):
            assert time.monotonic() < deadline, "the helper outlived a SIGKILLed switch"
            time.sleep(0.05)
        assert Path(private[1]).exists()  # nothing cleaned up: the next start does
        with SwitchProcess("--slirp", directory=str(tmp_path)):
            assert not Path(private[1]).exists()
    finally:
        switch.stop()


def test_a_missing_helper_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "umlswitch", "-unix", str(tmp_path / "ctl"), "--slirp"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "PATH": str(tmp_path)},  # no vde_plug on it
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "--slirp needs vde_plug" in line and "apt install vdeplug libvdeplug-slirp" in line
    assert not (tmp_path / "ctl").exists()
    assert shutil.which("vde_plug") is not None  # the real one is still there for the others


async def test_the_supervisor_logs_the_helpers_stderr_and_restarts_it_with_back_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import tempfile

    import trio

    from umlswitch.ports.slirp.helper import SlirpUplink
    from umlswitch.ports.slirp.spec import SlirpSpec

    caplog.set_level(logging.INFO)
    scratch = Path(tempfile.mkdtemp(prefix="umlsw-fake-helper-"))
    try:
        scratch.chmod(0o755)
        fake = scratch / "vde_plug"
        fake.write_text('#!/bin/sh\necho "boom as uid $(id -u)" >&2\nexit 3\n')
        fake.chmod(0o755)
        uplink = SlirpUplink(SlirpSpec(), str(fake))
        try:
            with trio.move_on_after(3.5):  # starts at 0 s, 1 s and 3 s
                await uplink.run()
        finally:
            uplink.close()
        assert uplink.starts == 3 and uplink.events["slirp_helper_exit"] == 3
        uid = 65534 if os.geteuid() == 0 else os.geteuid()
        assert f"slirp helper: boom as uid {uid}" in caplog.text
        assert "exited with status 3" in caplog.text
        assert "starting a new one in 1 s" in caplog.text
        assert "starting a new one in 2 s" in caplog.text
        assert not Path(uplink.private.directory).exists()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
