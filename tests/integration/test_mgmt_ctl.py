"""``umlswitch ctl`` against the real daemon: every management command, its JSON parsed.

The switch runs as a subprocess (``SwitchProcess``); ``ctl`` runs ``umlswitch.__main__.main``
in this process (the same code path as the ``umlswitch ctl`` command, minus interpreter start-up),
and a few tests run the real command line to check exit statuses and messages.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.l2 import Ether

from tests.integration.conftest import MAC_A, MAC_B
from umlswitch.__main__ import main
from umlswitch.mgmt.client import MgmtClient
from umlswitch.mgmt.commands import COMMANDS
from umlswitch.testing import SwitchProcess, attach_sync, wait_until_sync

pytestmark = pytest.mark.integration

ALL_COMMANDS = {
    "help",
    "logout",
    "shutdown",
    "showinfo",
    "port/print",
    "port/remove",
    "port/resetcounter",
    "port/sethub",
    "hash/print",
    "hash/find",
    "hash/flush",
    "hash/showinfo",
    "hash/setexpire",
    "pcap/start",
    "pcap/stop",
    "pcap/showinfo",
}


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


Ctl = Callable[..., Result]


@pytest.fixture
def ctl(switch: SwitchProcess, capsys: pytest.CaptureFixture[str]) -> Ctl:
    """ctl(*args) runs ``umlswitch ctl -unix CTL *args``; ctl.json(*args) adds ``--json``."""

    def run(*args: str) -> Result:
        code = main(["ctl", "-unix", switch.control_path, *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def ok_json(ctl: Ctl, *args: str) -> Any:
    result = ctl("--json", *args)
    assert result.code == 0, result
    return result.json


def failure(ctl: Ctl, *args: str) -> dict[str, Any]:
    """The JSON error of a command that must fail; checks the exit status and stderr too."""
    result = ctl("--json", *args)
    assert result.code == 1, result
    error: dict[str, Any] = result.json["error"]
    assert f"{error['code']:04d} {error['message']}" in result.err
    return error


def test_help_lists_every_command(ctl: Ctl):
    names = {c["command"] for c in ok_json(ctl, "help")["commands"]}
    assert names >= ALL_COMMANDS  # vde_switch's, which vdeterm users type
    assert names == set(COMMANDS)  # and every command the switch has: none hidden from help
    assert {c["command"] for c in ok_json(ctl, "help", "pcap")["commands"]} == {
        "pcap/start",
        "pcap/stop",
        "pcap/showinfo",
        "pcap/stream",
    }
    text = ctl("help").out
    assert "------------" in text and "port/print         [N]" in text


def test_showinfo(ctl: Ctl, switch: SwitchProcess, lan):
    info = ok_json(ctl, "showinfo")
    assert info["pid"] == switch.process.pid
    assert info["mode"] == "switch"
    assert info["sockets"] == {
        "control": switch.control_path,
        "data": None,
        "mgmt": switch.mgmt_path,
    }
    assert info["perm"] == {"control": "0600", "mgmt": "0600"}
    assert (info["ports"], info["macs"]) == (2, 2)
    assert info["totals"]["rx_frames"] == 2 and info["totals"]["tx_frames"] == 2
    assert info["totals"]["drops"]["runt"] == 0  # every drop reason is there, zero or not
    assert info["capture"] == {"running": False, "file": None}
    assert "pid " in ctl("showinfo").out


def test_port_print(ctl: Ctl, lan):
    a, b = lan
    a.send(b"runt")
    wait_until_sync(
        lambda: ok_json(ctl, "port/print", "1")["ports"][0]["drops"]["runt"] == 1,
        what="the runt counted on port 1",
    )
    ports = ok_json(ctl, "port/print")["ports"]
    assert [p["id"] for p in ports] == [1, 2]
    first = ports[0]
    assert first["kind"] == "unix" and first["name"].startswith("unix:1 ")
    assert first["peer"]["pid"] == os.getpid() and first["peer"]["uid"] == os.geteuid()
    assert (first["macs"], first["rx_frames"], first["tx_frames"]) == (1, 2, 1)
    assert first["rx_bytes"] == 42 + 4 and first["drops"]["runt"] == 1
    assert ok_json(ctl, "port/print", "2")["ports"][0]["id"] == 2
    assert failure(ctl, "port/print", "9")["code"] == 1006
    assert failure(ctl, "port/print", "x")["code"] == 1022
    text = ctl("port/print").out
    assert "Port 0001 unix" in text and "drops: runt=1" in text
    assert a.fence(b) == [[]]  # and the runt went nowhere


def test_port_print_without_ports_says_so(ctl: Ctl):
    result = ctl("port/print")
    assert (result.code, result.out) == (0, "no ports attached\n")
    assert ok_json(ctl, "port/print") == {"ports": []}


def test_port_print_shows_a_vde_clients_description(ctl: Ctl, switch: SwitchProcess):
    description = "qemu lab user=me pid=1"
    with attach_sync(switch.control_path, dialect="vde", requested_port=5, description=description):
        (port,) = ok_json(ctl, "port/print")["ports"]
        assert (port["id"], port["description"]) == (5, description)
        assert f" description '{description}'" in ctl("port/print", "5").out


def test_hash_commands(ctl: Ctl, lan):
    entries = ok_json(ctl, "hash/print")["entries"]
    assert [(e["mac"], e["port"]) for e in entries] == [(MAC_A, 1), (MAC_B, 2)]
    assert all(0 <= e["age"] < 60 for e in entries)
    assert MAC_B in ctl("hash/print").out
    assert ok_json(ctl, "hash/find", MAC_B)["entries"][0]["port"] == 2
    assert failure(ctl, "hash/find", "02:00:00:00:00:99")["code"] == 1019
    assert failure(ctl, "hash/find", "not-a-mac")["code"] == 1022
    info = ok_json(ctl, "hash/showinfo")
    assert (info["entries"], info["max_entries"], info["aging"]) == (2, 8192, 300.0)
    assert ok_json(ctl, "hash/setexpire", "42") == {"aging": 42.0}
    assert ok_json(ctl, "hash/showinfo")["aging"] == 42.0
    assert failure(ctl, "hash/setexpire", "0")["code"] == 1022
    assert ok_json(ctl, "hash/flush", "2") == {"flushed": 1}
    assert ok_json(ctl, "hash/flush") == {"flushed": 1}
    assert ok_json(ctl, "hash/print") == {"entries": []}


def test_port_resetcounter_and_sethub(ctl: Ctl, lan):
    a, b = lan
    assert ok_json(ctl, "port/resetcounter", "1") == {"reset": [1]}
    ports = ok_json(ctl, "port/print")["ports"]
    assert ports[0]["rx_frames"] == 0 and ports[1]["rx_frames"] == 1
    assert ok_json(ctl, "port/resetcounter") == {"reset": [1, 2]}
    assert ok_json(ctl, "showinfo")["totals"]["rx_frames"] == 0

    assert ok_json(ctl, "port/sethub", "1") == {"mode": "hub"}
    assert ok_json(ctl, "showinfo")["mode"] == "hub"
    assert ok_json(ctl, "hash/print") == {"entries": []}  # a hub learns nothing
    assert failure(ctl, "port/sethub", "2")["code"] == 1022
    assert ok_json(ctl, "port/sethub", "0") == {"mode": "switch"}
    a.send(Ether(src=MAC_A, dst=MAC_B) / b"hello")
    b.receive(match=lambda p: bytes(p).endswith(b"hello"))
    assert ok_json(ctl, "hash/find", MAC_A)["entries"][0]["port"] == 1


def test_port_remove_closes_the_clients_connection(ctl: Ctl, lan):
    _, b = lan
    assert ok_json(ctl, "port/remove", "2") == {"removed": 2}
    assert [p["id"] for p in ok_json(ctl, "port/print")["ports"]] == [1]
    b.ctl.settimeout(5)
    assert b.ctl.recv(1) == b""  # the switch closed b's control connection
    assert [e["mac"] for e in ok_json(ctl, "hash/print")["entries"]] == [MAC_A]
    assert failure(ctl, "port/remove", "2")["code"] == 1006


def test_pcap_commands(ctl: Ctl, lan, tmp_path: Path):
    a, b = lan
    path = tmp_path / "port2.pcap"
    assert ok_json(ctl, "pcap/showinfo") == {"running": False, "file": None}
    started = ok_json(ctl, "pcap/start", str(path), "2")
    assert (started["running"], started["file"], started["port"]) == (True, str(path), 2)
    assert failure(ctl, "pcap/start", str(tmp_path / "other.pcap"))["code"] == 1016
    a.send(Ether(src=MAC_A, dst=MAC_B) / b"to b")
    b.receive()
    stopped = ok_json(ctl, "pcap/stop")
    assert (stopped["running"], stopped["written"], stopped["dropped"]) == (False, 1, 0)
    assert ok_json(ctl, "pcap/showinfo")["running"] is False
    assert failure(ctl, "pcap/stop")["code"] == 1022
    assert path.stat().st_size == 24 + 16 + 18
    assert failure(ctl, "pcap/start", "/nonexistent/dir/x.pcap")["code"] == 1002
    assert failure(ctl, "pcap/start", str(path), "7")["code"] == 1006


def test_ctl_makes_a_relative_capture_path_absolute(ctl: Ctl, lan, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ok_json(ctl, "pcap/start", "rel.pcap")["file"] == str(tmp_path / "rel.pcap")
    assert ok_json(ctl, "pcap/stop")["written"] == 0
    assert (tmp_path / "rel.pcap").exists()


def test_a_session_runs_many_commands_and_logs_out(switch: SwitchProcess):
    with MgmtClient(str(switch.mgmt_path)) as client:
        assert client.banner.startswith("umlswitch V.")
        assert client.json("showinfo")["ports"] == 0
        assert client.run("no/such").code == 1038
        assert client.run("json").code == 1022
        assert client.run("logout").code == 9999
        assert client.sock.recv(1) == b""


def test_at_most_16_sessions(switch: SwitchProcess):
    sessions = [MgmtClient(str(switch.mgmt_path)) for _ in range(16)]
    try:
        with socket.socket(socket.AF_UNIX) as extra:
            extra.settimeout(5)
            extra.connect(str(switch.mgmt_path))
            assert extra.recv(200) == b"1087 Too many users: at most 16 management sessions\n"
        with sessions.pop() as leaving:
            leaving.sock.shutdown(socket.SHUT_WR)  # EOF, as close() gives the switch
            while leaving.sock.recv(4096):  # the switch ends the session: EOF back
                pass
        with MgmtClient(str(switch.mgmt_path)) as again:
            assert again.json("showinfo")["ports"] == 0
    finally:
        for session in sessions:
            session.close()


def test_shutdown_stops_the_switch(ctl: Ctl, switch: SwitchProcess):
    result = ctl("shutdown")
    assert result.code == 0, result
    assert switch.process.wait(10) == 0
    assert not os.path.exists(switch.control_path)
    assert not os.path.exists(str(switch.mgmt_path))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "umlswitch", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_the_command_line_exit_statuses(switch: SwitchProcess, tmp_path: Path):
    ok = run_cli("ctl", "-unix", switch.control_path, "--json", "showinfo")
    assert ok.returncode == 0 and json.loads(ok.stdout)["pid"] == switch.process.pid
    bad = run_cli("ctl", "--mgmt", str(switch.mgmt_path), "port/remove", "5")
    assert bad.returncode == 1
    assert bad.stderr == "umlswitch: 1006 No such device or address: no port 5\n"
    absent = run_cli("ctl", "-unix", str(tmp_path / "nothing.ctl"), "showinfo")
    assert absent.returncode == 1 and "is the switch running" in absent.stderr
    usage = run_cli("ctl")
    assert usage.returncode == 2 and "give a COMMAND" in usage.stderr
    stream = run_cli("ctl", "-unix", switch.control_path, "--json", "pcap/stream")
    assert stream.returncode == 2 and "use umlswitch capture" in stream.stderr


def test_mgmt_socket_has_the_control_sockets_permissions_and_is_removed(tmp_path: Path):
    ctl_path, mgmt = tmp_path / "ctl", tmp_path / "m.sock"
    with SwitchProcess("-M", str(mgmt), "--mode", "0660", directory=str(tmp_path)) as sw:
        assert stat.S_IMODE(mgmt.stat().st_mode) == 0o660
        assert stat.S_IMODE(os.stat(sw.control_path).st_mode) == 0o660
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(str(mgmt))
        assert "management socket" in sw.log
    assert not mgmt.exists() and not ctl_path.exists()


def test_no_mgmt_opens_none(tmp_path: Path):
    with SwitchProcess("--no-mgmt", directory=str(tmp_path)) as sw:
        assert not os.path.exists(str(sw.mgmt_path))
        assert sorted(os.listdir(tmp_path)) == ["ctl", "umlswitch.log"]


def test_a_bad_mgmt_path_is_one_line_and_exit_1(tmp_path: Path):
    result = run_cli("-unix", str(tmp_path / "ctl"), "-M", str(tmp_path / "no" / "mgmt"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "management socket" in result.stderr
    assert not (tmp_path / "ctl").exists()


def test_a_reader_that_stops_early_is_no_error(switch: SwitchProcess):
    """``umlswitch ctl help | head -1``: no traceback, and the command's own status."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line: every write fails (EPIPE)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "umlswitch", "ctl", "-unix", switch.control_path, "help"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 0 and result.stderr == "", result.stderr
