"""VLANs through the command line, ``umlswitch ctl`` and ``top``, against the real daemon.

The switch runs as a subprocess with VLAN control sockets and a UDP port in a VLAN; guests are
the scapy harness's ports. What a user sees: the VLAN commands with vde_switch's names and their
errors, membership in ``port/print`` (text and JSON), ``hash/print`` with a VLAN column, ``top``
with a VLAN column in 80 columns, and ``--rc`` failures as one line with exit status 1.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from scapy.layers.l2 import ARP, Dot1Q, Ether

from tests.integration.conftest import free_udp_port
from umlswitch.__main__ import main
from umlswitch.mgmt import top
from umlswitch.testing import (
    SwitchProcess,
    SyncPort,
    attach_sync,
    fence_frame,
    frames_before_fence_sync,
)

pytestmark = pytest.mark.integration

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
MAC_T = "02:00:00:00:00:74"


@pytest.fixture
def switch(tmp_path: Path) -> Iterator[SwitchProcess]:
    """Main socket (VLAN 1); v10.ctl (VLAN 10), trunk.ctl (tagged 10, 20); port 1 is a UDP peer
    on VLAN 20; the --rc file creates VLAN 30."""
    rc = tmp_path / "switch.rc"
    rc.write_text("# the lab's VLANs\nvlan/create 30\n")
    local, remote = free_udp_port(), free_udp_port()
    args = [
        "-unix",
        f"{tmp_path}/v10.ctl,vlan=10",
        "-unix",
        f"{tmp_path}/trunk.ctl,trunk=10,20",
        "-ucast",
        f"{local}:127.0.0.1:{remote},vlan=20",
        "--rc",
        str(rc),
    ]
    with SwitchProcess(*args, directory=str(tmp_path)) as process:
        yield process


def tagged_fence(trunk: SyncPort, vlan: int) -> bytes:
    """Send a fence frame from ``trunk`` tagged for ``vlan``; return it as the VLAN's untagged
    ports get it."""
    fence = fence_frame(trunk.mac_bytes)
    trunk.send(fence[:12] + struct.pack("!HH", 0x8100, vlan) + fence[12:])
    return fence


def ctl(switch: SwitchProcess, *args: str) -> tuple[int, str, str]:
    result = subprocess.run(
        [sys.executable, "-m", "umlswitch", "ctl", "-unix", switch.control_path, *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    return result.returncode, result.stdout, result.stderr


def ok_json(switch: SwitchProcess, *args: str) -> Any:
    with switch.manage() as client:
        return client.json(" ".join(args))


def test_vlans_of_the_command_line_and_the_rc_file(switch: SwitchProcess, tmp_path: Path) -> None:
    doc = ok_json(switch, "vlan/print")
    assert doc["active"] is True
    by_id = {vlan["id"]: vlan for vlan in doc["vlans"]}
    assert sorted(by_id) == [1, 10, 20, 30]
    assert [p["id"] for p in by_id[20]["untagged"]] == [1]
    assert by_id[10]["control_sockets"] == [
        {"path": f"{tmp_path}/v10.ctl", "tagged": False},
        {"path": f"{tmp_path}/trunk.ctl", "tagged": True},
    ]
    code, out, _ = ctl(switch, "vlan/print", "20")
    assert code == 0
    assert out.splitlines() == [
        "VLAN 0020",
        f" -- Port 0001 untagged {by_id[20]['untagged'][0]['name']}",
        f" -- control socket {tmp_path}/trunk.ctl (tagged)",
    ]
    assert "--rc " in switch.log and "vlan/create 30" in switch.log
    assert f"control socket '{tmp_path}/v10.ctl' for VLAN untagged 10" in switch.log


def test_guests_on_vlan_sockets_and_what_ctl_shows(switch: SwitchProcess, tmp_path: Path) -> None:
    with (
        attach_sync(f"{tmp_path}/v10.ctl", mac=MAC_A) as a,
        attach_sync(switch.control_path, mac=MAC_B) as b,
        attach_sync(f"{tmp_path}/trunk.ctl", mac=MAC_T) as trunk,
    ):
        a.send(a.ether() / ARP(pdst="10.0.0.2"))
        got = trunk.receive(match=ARP)
        assert got[Dot1Q].vlan == 10
        trunk.send(Ether(src=MAC_T, dst=MAC_A) / Dot1Q(vlan=10) / ARP(op=2))
        reply = a.receive(match=ARP)
        assert Dot1Q not in reply

        ports = {p["name"]: p for p in ok_json(switch, "port/print")["ports"]}
        a_port = next(p for p in ports.values() if p["vlans"]["untagged"] == 10)
        trunk_port = next(p for p in ports.values() if p["vlans"]["tagged"] == [10, 20])
        b_port = next(
            p for p in ports.values() if p["kind"] == "unix" and p["vlans"]["untagged"] == 1
            and not p["vlans"]["tagged"]
        )  # fmt: skip
        code, out, _ = ctl(switch, "port/print", str(trunk_port["id"]))
        assert code == 0 and " VLAN untagged 1, tagged 10 20" in out.splitlines()
        code, out, _ = ctl(switch, "port/print", str(b_port["id"]))
        assert " VLAN " not in out  # the default says nothing

        code, out, _ = ctl(switch, "hash/print")
        lines = out.splitlines()
        assert lines[0].split() == ["MAC", "VLAN", "PORT", "AGE"]
        assert any(line.split()[:3] == [MAC_A, "10", str(a_port["id"])] for line in lines)
        assert any(line.split()[:3] == [MAC_T, "10", str(trunk_port["id"])] for line in lines)
        found = ok_json(switch, "hash/find", MAC_T)["entries"]
        assert [(e["vlan"], e["port"]) for e in found] == [(10, trunk_port["id"])]
        # b, in VLAN 1, got nothing of a's broadcast or the trunk's reply: the switch was done
        # with both when the trunk sent its fence (untagged: VLAN 1)
        assert trunk.fence(b) == [[]]

        # run-time changes: b joins VLAN 30 untagged, the trunk carries 30 too
        assert ctl(switch, "port/setvlan", str(b_port["id"]), "30")[0] == 0
        assert ok_json(switch, "vlan/addport", "30", str(trunk_port["id"])) == {
            "id": trunk_port["id"],
            "untagged": 1,
            "tagged": [10, 20, 30],
        }
        b.send(b.ether() / ARP(pdst="10.0.0.9"))
        assert trunk.receive(match=ARP)[Dot1Q].vlan == 30
        # nothing of it in VLAN 10: a gets the trunk's fence there first
        assert frames_before_fence_sync(a.receive_bytes, tagged_fence(trunk, 10)) == []

        with switch.manage() as client:
            view = top.render(None, top.take_sample(client), live=False)
        console = Console(record=True, width=80, file=io.StringIO(), color_system=None)
        console.print(view)
        text = console.export_text()
        assert all(len(line) <= 80 for line in text.splitlines()), text
        assert "VLAN" in text, text
        assert "1 t10,2…" in text and " 30 " in text, text


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["vlan/create", "30"], "1017 File exists: VLAN 30 exists"),
        (["vlan/create", "0"], "1022 Invalid argument: VLAN 0 is no VLAN"),
        (["vlan/create", "4095"], "1022 Invalid argument: VLAN must be from 1 to 4094"),
        (["vlan/remove", "1"], "1022 Invalid argument: VLAN 1 is the default VLAN"),
        (["vlan/remove", "20"], "1098 Address already in use: VLAN 20 is in use by port 1"),
        (["vlan/remove", "99"], "1006 No such device or address: no VLAN 99"),
        (["vlan/addport", "99", "1"], "1006 No such device or address: no VLAN 99"),
        (["vlan/addport", "20", "1"], "1017 File exists: port 1 is in VLAN 20 untagged already"),
        (["vlan/addport", "10", "7"], "1006 No such device or address: no port 7"),
        (["vlan/delport", "20", "1"], "1098 Address already in use: VLAN 20 is port 1's untagged"),
        (["port/setvlan", "1", "99"], "1006 No such device or address: no VLAN 99"),
        (["port/setvlan", "1"], "1022 Invalid argument: usage: port/setvlan PORT VLAN"),
        (["vlan/print", "99"], "1006 No such device or address: no VLAN 99"),
    ],
)
def test_vlan_command_errors_as_vde_switch_numbers_them(
    switch: SwitchProcess, args: list[str], status: str
) -> None:
    code, _, err = ctl(switch, *args)
    assert code == 1
    assert status in err


def test_removing_the_last_vlan_turns_vlans_off(tmp_path: Path) -> None:
    with SwitchProcess(directory=str(tmp_path)) as switch:
        assert ok_json(switch, "vlan/print")["active"] is False
        assert ctl(switch, "vlan/print")[1].splitlines()[0].startswith("VLANs off")
        assert ok_json(switch, "vlan/create", "5")["active"] is True
        assert ok_json(switch, "showinfo")["vlans"] == {"active": True, "ids": [1, 5]}
        assert ok_json(switch, "vlan/remove", "5") == {"removed": 5, "active": False}
        assert "VLANs off: tags pass through untouched" in switch.log


def run_switch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "umlswitch", "-unix", str(tmp_path / "ctl"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_a_failing_rc_line_is_one_line_and_exit_status_1(tmp_path: Path) -> None:
    rc = tmp_path / "bad.rc"
    rc.write_text(
        "vlan/create 10\n\n# the next line names a port that is not there\nvlan/addport 10 3\n"
    )
    result = run_switch(tmp_path, "--rc", str(rc))
    assert result.returncode == 1
    assert result.stderr == (
        f"umlswitch: --rc {rc} line 4: vlan/addport 10 3: No such device or address: no port 3\n"
    )
    assert not (tmp_path / "ctl").exists()


def test_an_unreadable_rc_file_stops_the_start(tmp_path: Path) -> None:
    result = run_switch(tmp_path, "--rc", str(tmp_path / "missing.rc"))
    assert result.returncode == 1
    assert result.stderr == (
        f"umlswitch: --rc {tmp_path}/missing.rc: cannot read the file: No such file or directory\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-tap", "tap0,vlan=0"], "VID 0 tags a frame's priority only"),
        (["-tap", "tap0,trunk=10,10"], "a VLAN is listed twice in trunk="),
        (["-tap", "tap0,x,vlan=2"], "after the device, only VLAN and impairment options"),
        (["-ucast", "1:127.0.0.1:2,vlan=5000"], "must be from 1 to 4094"),
        (["-unix", "/tmp/a.ctl", "-unix", "/tmp/b.ctl"], "-unix CTL [DATA] given twice"),
        (["-unix", "/tmp/v.ctl,vlan=2", "/tmp/data"], "takes no DATA path"),
        (["-unix", "/tmp/v.ctl,vlan=2", "-unix", "/tmp/v.ctl,vlan=3"], "a path of its own"),
        (["-unix", ",vlan=2"], "give the control socket's path first"),
    ],
)
def test_bad_vlan_options_are_refused_with_usage(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "umlswitch", *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_json_of_a_vlan_command_is_one_document(switch: SwitchProcess) -> None:
    code = main(["ctl", "-unix", switch.control_path, "--json", "vlan/create", "40"])
    assert code == 0
    with switch.manage() as client:
        doc = client.json("vlan/print 40")
    assert json.loads(json.dumps(doc)) == {
        "active": True,
        "vlans": [
            {"id": 40, "default": False, "untagged": [], "tagged": [], "control_sockets": []}
        ],
    }
