"""Debian's own ``vdeterm`` (vde2) drives umlswitch's management socket, unchanged.

vdeterm is interactive: it writes to the terminal on its stdin, so it runs on a pty here. On
start it sends ``help`` and takes the commands for its tab completion from the answer; it sends
each command without a newline and shows data lines and the status message.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.l2 import ARP

from tests.integration.pty_terminal import Terminal
from umlswitch.testing import SwitchProcess, attach_sync

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("vdeterm") is None, reason="needs vdeterm (Debian: vde2)"),
]

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"


@pytest.fixture
def vdeterm(tmp_path: Path) -> Iterator[tuple[Terminal, SwitchProcess]]:
    with (
        SwitchProcess(directory=str(tmp_path)) as switch,
        attach_sync(switch.control_path, mac=MAC_A) as a,
        attach_sync(switch.control_path, mac=MAC_B) as b,
    ):
        a.send(a.ether() / ARP(pdst="10.0.0.2"))
        b.receive(match=ARP)
        b.send(b.ether(dst=MAC_A) / ARP(op=2, psrc="10.0.0.2"))
        a.receive(match=ARP)
        term = Terminal(["vdeterm", str(switch.mgmt_path)])
        try:
            term.expect(r"vde\[.*\]: ")  # vdeterm's own prompt: banner read, help parsed
            yield term, switch
        finally:
            term.close()


def run(term: Terminal, command: str, until: str) -> str:
    """Type ``command`` and Enter; return what vdeterm shows up to the status ``until``."""
    start = len(term.text)
    term.type(command + "\r")
    return term.expect(rf"{command}.*?{until}", since=start).group()


def test_vdeterm_shows_help_ports_and_macs(vdeterm):
    term, switch = vdeterm
    help_text = run(term, "help", "Success")
    assert "port/print" in help_text and "pcap/start" in help_text

    ports = run(term, "port/print", "Success")
    assert "Port 0001 unix" in ports and "Port 0002 unix" in ports
    assert " MACs 1" in ports and "IN:  frames" in ports

    table = run(term, "hash/print", "Success")
    assert f"{MAC_A}     1" in table and f"{MAC_B}     2" in table

    assert "Function not implemented" in run(term, "no/such", "implemented")
    assert "No such device or address" in run(term, "port/print 7", "address")

    start = len(term.text)
    term.type("hash/fi\t")  # completion from the help vdeterm read at start-up
    term.expect("hash/find ", since=start)
    term.type(MAC_B + "\r")
    term.expect(rf"{MAC_B}\s+2.*Success", since=start)

    term.type("logout\r")
    assert term.wait() == 0
    assert switch.process.poll() is None  # logout ends the session, not the switch
