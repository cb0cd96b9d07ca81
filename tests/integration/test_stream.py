"""Stream ports in the real daemon (a subprocess), seen by its users: the start-up and attach
log lines, ``umlswitch ctl`` (port/print and its JSON, showinfo, port/remove, a capture of one
stream port) and ``umlswitch top``, like every other port."""

from __future__ import annotations

import io
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from scapy.layers.l2 import ARP

from umlswitch.mgmt.client import MgmtClient
from umlswitch.mgmt.top import render, take_sample
from umlswitch.testing import SwitchProcess, attach_sync
from umlswitch.testing.stream import SyncStreamPort

pytestmark = pytest.mark.integration

MAC_A = "02:00:00:00:5c:0a"
MAC_B = "02:00:00:00:5c:0b"


def test_stream_ports_in_logs_ctl_capture_and_top(tmp_path: Path) -> None:
    path = tmp_path / "q.sock"
    with SwitchProcess(
        "--stream", f"unix:{path}", "--stream", "tcp:0", "--mode", "0660", directory=str(tmp_path)
    ) as switch:
        tcp = re.search(r"stream listener 'tcp:(127\.0\.0\.1:\d+)'", switch.log)
        assert tcp is not None and f"stream listener 'unix:{path}'" in switch.log, switch.log
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        with (
            attach_sync(f"unix:{path}", mac=MAC_A, transport="stream") as a,
            attach_sync(f"tcp:{tcp[1]}", mac=MAC_B, transport="stream") as b,
            MgmtClient(str(switch.mgmt_path)) as client,
        ):
            a.send(a.ether() / ARP(pdst="10.0.0.2"))
            b.receive(match=ARP)
            b.send(b.ether(dst=MAC_A) / ARP(op=2, pdst="10.0.0.1"))
            a.receive(match=ARP)
            ports = client.json("port/print")["ports"]
            assert [p["kind"] for p in ports] == ["stream", "stream"]
            # the switch accepts both connections at once: either may be port 1
            (unix_port,) = [p for p in ports if p["peer"] is not None]
            (tcp_port,) = [p for p in ports if p["peer"] is None]
            u, t = unix_port["id"], tcp_port["id"]
            assert (
                unix_port["name"].startswith(f"stream:{u} pid=") and unix_port["peer"]["uid"] >= 0
            )
            assert tcp_port["name"].startswith(f"stream:{t} 127.0.0.1:")
            assert unix_port["macs"] == tcp_port["macs"] == 1
            text = client.run("port/print")
            assert f"Port {u:04d} stream" in "\n".join(text.lines or [])
            info = client.json("showinfo")
            assert info["streams"][0] == {"name": f"unix:{path}", "perm": "0660"}
            assert info["streams"][1] == {"name": f"tcp:{tcp[1]}", "perm": None}
            assert f"stream  unix:{path} perm 0660" in (client.run("showinfo").lines or [])

            capture = tmp_path / "stream.pcap"
            client.json(f"pcap/start {capture} {t}")
            b.send(b.ether(dst=MAC_A) / b"from b")
            a.receive()
            stopped = client.json("pcap/stop")
            assert stopped["written"] == 1

            first = take_sample(client)
            console = Console(record=True, width=80, file=io.StringIO(), color_system=None)
            console.print(render(first, take_sample(client)))
            table = console.export_text()
            assert re.search(rf"^\s*{u}\s+stream:{u} pid=", table, re.M), table
            assert re.search(rf"^\s*{t}\s+stream:{t} 127\.0\.0\.1", table, re.M), table

            assert client.json(f"port/remove {t}") == {"removed": t}
            assert isinstance(b, SyncStreamPort)
            b.sock.settimeout(5)
            assert b.sock.recv(1) == b""  # the switch closed b's connection
        switch.wait_for_log(f"port {u} detached (disconnect)", 5)
        log = switch.log
        assert f"port {u} attached: stream client pid=" in log
        assert f"port {t} detached (removed by the management console)" in log
        assert f"port {u} detached (disconnect)" in log
        assert switch.stop() == 0
    assert not path.exists()


def test_a_tcp_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "umlswitch",
                "-unix",
                str(tmp_path / "ctl"),
                "--stream",
                f"tcp:{port}",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=10,
        )
    assert result.returncode == 1
    assert f"--stream tcp:127.0.0.1:{port}: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "in use; choose another" in result.stderr
    assert not (tmp_path / "ctl").exists()
