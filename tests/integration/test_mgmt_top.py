"""``umlswitch top`` while traffic flows: the ports, non-zero rates, 80 columns, ``q`` quits."""

from __future__ import annotations

import contextlib
import io
import os
import re
import select
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from scapy.layers.l2 import Ether

from tests.integration.pty_terminal import Terminal
from umlswitch.mgmt.client import MgmtClient
from umlswitch.mgmt.top import Sample, render, si, take_sample
from umlswitch.testing import SwitchProcess, attach_sync

pytestmark = pytest.mark.integration

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
FRAME_SIZE = 1000


@pytest.fixture
def busy_switch(tmp_path: Path) -> Iterator[SwitchProcess]:
    """A switch with ports 1 and 2, port 1 sending port 2 about 500 frames/s until teardown."""
    with (
        SwitchProcess(directory=str(tmp_path)) as switch,
        attach_sync(switch.control_path, mac=MAC_A) as a,
        attach_sync(switch.control_path, mac=MAC_B) as b,
    ):
        b.send(b.ether())  # learn b, so a's frames go to port 2 only
        a.receive()
        frame = bytes(Ether(src=MAC_A, dst=MAC_B, type=0x88B5)).ljust(FRAME_SIZE, b"\0")
        stop = threading.Event()

        def flow() -> None:
            while not stop.is_set():
                for _ in range(10):
                    a.send(frame)
                    with contextlib.suppress(BlockingIOError):
                        b.data.recv(65536)  # keep b's queue from filling up
                time.sleep(0.02)

        b.data.setblocking(False)
        sender = threading.Thread(target=flow, daemon=True)
        sender.start()
        try:
            yield switch
        finally:
            stop.set()
            sender.join()


BUSY_COUNTERS = ((1, "rx_frames"), (2, "tx_frames"))


def sample_after_traffic(client: MgmtClient, first: Sample) -> Sample:
    """A sample taken once port 1 has received and port 2 been sent frames since ``first``."""
    deadline = time.monotonic() + 10
    while True:
        sample = take_sample(client)
        if all(sample.ports[p][k] > first.ports[p][k] + 10 for p, k in BUSY_COUNTERS):
            return sample
        assert time.monotonic() < deadline, "no traffic through the switch within 10 s"
        time.sleep(0.02)


def test_render_shows_ports_and_rates_in_80_columns(busy_switch: SwitchProcess):
    with MgmtClient(str(busy_switch.mgmt_path)) as client:
        first = take_sample(client)
        second = sample_after_traffic(client, first)
    seconds = second.at - first.at

    def rate(port: int, key: str) -> str:  # what top must show: the counters' change per second
        return si((second.ports[port][key] - first.ports[port][key]) / seconds)

    console = Console(record=True, width=80, file=io.StringIO(), color_system=None)
    console.print(render(first, second))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "switch · pid" in text and "2 ports · 2 MACs" in text
    rows = {m[1]: m[2].split() for m in re.finditer(r"^\s*(\d)\s+(unix:.*)$", text, re.M)}
    assert set(rows) == {"1", "2"}, text
    # NAME (two words: unix:N pid=P), MACS, RX f/s, RX b/s, TX f/s, TX b/s, QUEUE, DROPS
    _, _, macs, rx_fps, rx_bps, _, _, queue, drops = rows["1"]
    assert macs == "1" and rx_fps == rate(1, "rx_frames") != "0", text
    assert rx_bps == si((second.ports[1]["rx_bytes"] - first.ports[1]["rx_bytes"]) * 8 / seconds)
    assert queue == "0" and drops == "0", text
    _, _, _, _, _, tx_fps, tx_bps, _, _ = rows["2"]
    assert tx_fps == rate(2, "tx_frames") != "0", text
    assert tx_bps == si((second.ports[2]["tx_bytes"] - first.ports[2]["tx_bytes"]) * 8 / seconds)
    total = re.search(r"^\s*total\s+(\d+)\s+(\S+)", text, re.M)
    assert total is not None and total.group(1) == "2" and total.group(2) != "0", text


def test_the_first_sample_has_no_rates_yet(busy_switch: SwitchProcess):
    with MgmtClient(str(busy_switch.mgmt_path)) as client:
        sample = take_sample(client)
    console = Console(record=True, width=80, file=io.StringIO(), color_system=None)
    console.print(render(None, sample))
    assert "…" in console.export_text()


@pytest.mark.parametrize(
    ("value", "text"), [(0, "0"), (0.5, "0.5"), (12.34, "12"), (1234, "1.2k"), (56e6, "56.0M")]
)
def test_si_prefixes(value, text):
    assert si(value) == text


def test_top_on_a_terminal_quits_on_q(busy_switch: SwitchProcess):
    top = [sys.executable, "-m", "umlswitch", "top", "-unix", busy_switch.control_path]
    term = Terminal([*top, "--interval", "0.3"], columns=80)
    try:
        term.expect(r"unix:1 pid=\d+")
        start = len(term.text)
        # a refreshed table with a measured rate: digits and a k/M suffix in the RX b/s column
        term.expect(r"unix:1 pid=\d+\s+1\s+\d+(\.\d)?\s+\d+\.\d[kM]", since=start)
        term.type("q")
        assert term.wait() == 0
    finally:
        term.close()


def test_top_into_a_pipe_prints_a_table_every_interval_and_stops_on_sigterm(
    busy_switch: SwitchProcess,
):
    top = subprocess.Popen(
        [sys.executable, "-m", "umlswitch", "top", "-unix", busy_switch.control_path,
         "--interval", "0.2"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert top.stdout is not None
        out = b""
        deadline = time.monotonic() + 10
        while out.count(b"total") < 2 and time.monotonic() < deadline:  # two tables, unasked
            if select.select([top.stdout], [], [], 0.1)[0]:
                out += os.read(top.stdout.fileno(), 65536)
        top.send_signal(signal.SIGTERM)
        rest, err = top.communicate(timeout=10)
    finally:
        if top.poll() is None:
            top.kill()
            top.wait()
    text = (out + rest).decode()
    assert top.returncode == 0, err
    assert text.count("total") >= 2, text
    # each table has measured rates (no "…") and no terminal control sequences
    assert "…" not in text and "\x1b[" not in text, text
    assert re.search(r"^\s*1\s+unix:1 pid=\d+\s+1\s+\d", text, re.M), text


def test_top_on_a_terminal_stops_on_sigterm_and_restores_the_terminal(
    busy_switch: SwitchProcess,
):
    top = [sys.executable, "-m", "umlswitch", "top", "-unix", busy_switch.control_path]
    term = Terminal([*top, "--interval", "0.3"], columns=80)
    try:
        term.expect(r"unix:1 pid=\d+")
        assert not termios.tcgetattr(term.master)[3] & termios.ECHO  # cbreak, no echo
        term.proc.send_signal(signal.SIGTERM)
        assert term.wait() == 0
        assert b"\x1b[?1049l" in term.raw  # the alternate screen is left
        lflag = termios.tcgetattr(term.master)[3]
        assert lflag & termios.ECHO and lflag & termios.ICANON  # echo and lines again
    finally:
        term.close()
