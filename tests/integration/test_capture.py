"""``--pcap FILE``: tcpdump reads the capture while it grows, and the whole of it at the end."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP

from umlswitch.mgmt.client import MgmtClient
from umlswitch.testing import SwitchProcess, attach_sync, wait_until_sync

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump"),
]

MAC_A, IP_A = "02:00:00:00:00:0a", "10.0.0.1"
MAC_B, IP_B = "02:00:00:00:00:0b", "10.0.0.2"


def tcpdump(path: Path) -> list[str]:
    result = subprocess.run(
        ["tcpdump", "-n", "-e", "-r", str(path)], capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 0, result.stderr
    assert "link-type EN10MB (Ethernet)" in result.stderr
    return result.stdout.splitlines()


def wait_written(client: MgmtClient, frames: int) -> None:
    wait_until_sync(
        lambda: client.json("pcap/showinfo")["written"] >= frames, 5, f"{frames} frames written"
    )


def test_tcpdump_reads_the_capture_while_it_grows(tmp_path: Path):
    path = tmp_path / "lan.pcap"
    with (
        SwitchProcess("--pcap", str(path), directory=str(tmp_path)) as switch,
        MgmtClient(str(switch.mgmt_path)) as client,
        attach_sync(switch.control_path, mac=MAC_A) as a,
        attach_sync(switch.control_path, mac=MAC_B) as b,
    ):
        a.send(a.ether() / ARP(hwsrc=MAC_A, psrc=IP_A, pdst=IP_B))
        b.receive(match=ARP)
        b.send(b.ether(dst=MAC_A) / ARP(op=2, hwsrc=MAC_B, psrc=IP_B, hwdst=MAC_A, pdst=IP_A))
        a.receive(match=ARP)
        wait_written(client, 2)
        lines = tcpdump(path)  # the switch is still writing to it
        assert len(lines) == 2, lines
        assert f"{MAC_A} > ff:ff:ff:ff:ff:ff" in lines[0] and "who-has 10.0.0.2" in lines[0]
        assert "Reply 10.0.0.2 is-at 02:00:00:00:00:0b" in lines[1]

        a.send(a.ether(dst=MAC_B) / IP(src=IP_A, dst=IP_B) / ICMP(id=7, seq=1))
        b.receive(match=ICMP)
        b.send(b.ether(dst=MAC_A) / IP(src=IP_B, dst=IP_A) / ICMP(type=0, id=7, seq=1))
        a.receive(match=ICMP)
        wait_written(client, 4)
        lines = tcpdump(path)
        assert len(lines) == 4, lines
        assert "10.0.0.1 > 10.0.0.2: ICMP echo request, id 7, seq 1" in lines[2]
        assert "10.0.0.2 > 10.0.0.1: ICMP echo reply, id 7, seq 1" in lines[3]
        info = client.json("pcap/showinfo")
        assert (info["running"], info["port"], info["dropped"]) == (True, None, 0)
    assert len(tcpdump(path)) == 4  # complete after the switch stopped
    assert path.stat().st_mode & 0o777 == 0o600


def test_an_unwritable_pcap_stops_the_start(tmp_path: Path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "umlswitch",
            "-unix",
            str(tmp_path / "ctl"),
            "--pcap",
            str(tmp_path),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"umlswitch: --pcap {tmp_path}: cannot write")
    assert not (tmp_path / "ctl").exists()
