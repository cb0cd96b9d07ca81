"""End-to-end: `--pcap` captures a real UML guest's ping, and `tcpdump -r` reads it back.

The capture is finished with `umlswitch ctl pcap/stop` (the switch keeps running), so the file
is complete when tcpdump reads it. Needs tcpdump; skipped against another switch program
(`UMLSWITCH_E2E_SWITCH`), which has no `--pcap`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .test_uml_guests import assert_no_loss
from .uml import GuestPool, Switches, ip_for, mac_for, ping_command, switch_label

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump"),
]


def test_capture_of_a_guest_ping_reads_back_with_tcpdump(
    switch: Switches, guests: GuestPool, tmp_path: Path
) -> None:
    if switch_label() != "umlswitch":
        pytest.skip(f"{switch_label()} has no --pcap")
    capture = tmp_path / "ping.pcap"
    sw = switch(False, "--pcap", str(capture))
    g1, _ = guests(sw, [ping_command(ip_for(2), count=2)], [])
    assert_no_loss(g1.result(0))

    stop = subprocess.run(
        [sys.executable, "-m", "umlswitch", "ctl", "-unix", str(sw.ctl), "--json", "pcap/stop"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert stop.returncode == 0, stop.stderr
    summary = json.loads(stop.stdout)
    assert summary["dropped"] == 0 and summary["written"] >= 6, summary  # ARP + 2 x echo
    sw.check_alive()

    read = subprocess.run(
        ["tcpdump", "-n", "-e", "-r", str(capture)], capture_output=True, text=True, timeout=20
    )
    assert read.returncode == 0, read.stderr
    assert "link-type EN10MB (Ethernet)" in read.stderr
    lines = read.stdout.splitlines()
    requests = [line for line in lines if "10.0.0.1 > 10.0.0.2: ICMP echo request" in line]
    replies = [line for line in lines if "10.0.0.2 > 10.0.0.1: ICMP echo reply" in line]
    assert len(requests) == 2 and len(replies) == 2, read.stdout
    assert requests[0].split()[1] == mac_for(1) and replies[0].split()[1] == mac_for(2)
    assert any("Request who-has 10.0.0.2 tell 10.0.0.1" in line for line in lines), lines
