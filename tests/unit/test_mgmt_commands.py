"""The management commands and what they show, run in-process against a switch of real parts.

Each test runs command lines the way the management server does (``fake_switch.ask``: parse the
line, ``commands.execute``, format the answer and read it back as a client) against
``FakeSwitch``: a real fabric, MAC table, guard, capture and impairment control and attach
records, with in-memory ports. What the integration layer checks through a subprocess is checked
here at every branch, in well under a second: every command's text and JSON answer, its errors
(the ``1000+errno`` status lines), ``port/remove`` waiting for the detach, the ``--rc`` file and
the server's session handling on an in-process socket.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.unit.fake_switch import (
    ME,
    NEW_PID,
    BarePort,
    FakeSwitch,
    MemoryPort,
    ask,
    ask_json,
    failure,
    session,
    text,
)
from umlswitch import __version__
from umlswitch.config import SwitchConfig
from umlswitch.errors import StartupError
from umlswitch.fabric.frame import parse_mac
from umlswitch.fabric.vlan import Membership
from umlswitch.listener import PeerCred
from umlswitch.mgmt import protocol
from umlswitch.mgmt.commands import COMMANDS, REMOVE_TIMEOUT, Session
from umlswitch.mgmt.protocol import PROMPT
from umlswitch.mgmt.rcfile import run_rc_file
from umlswitch.mgmt.server import MgmtServer

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
MAC_C = "02:00:00:00:00:0c"
BROADCAST = "ff:ff:ff:ff:ff:ff"
STRANGER = PeerCred(4242, 4242 if os.geteuid() != 4242 else 4343, 100)  # neither root nor us


def frame(src: str, dst: str, size: int = 60) -> bytes:
    """An ethernet frame of ``size`` bytes from ``src`` to ``dst`` (EtherType 0x88b5)."""
    header = parse_mac(dst) + parse_mac(src) + b"\x88\xb5"
    return header + bytes(size - len(header))


def tagged(src: str, dst: str, vid: int, size: int = 64) -> bytes:
    header = parse_mac(dst) + parse_mac(src) + b"\x81\x00" + vid.to_bytes(2, "big") + b"\x88\xb5"
    return header + bytes(size - len(header))


@pytest.fixture
async def switch(nursery: trio.Nursery, tmp_path: Path) -> FakeSwitch:
    return await FakeSwitch(control_path=str(tmp_path / "ctl")).start(nursery)


@pytest.fixture
def s(switch: FakeSwitch) -> Session:
    """A management session of this process's user."""
    return session(switch)


@pytest.fixture
def lan(switch: FakeSwitch) -> tuple[MemoryPort, MemoryPort]:
    """Ports 1 (MAC_A) and 2 (MAC_B), each learned from one frame: A broadcasts, B answers."""
    a, b = switch.attach(1), switch.attach(2)
    switch.fabric.forward(a, frame(MAC_A, BROADCAST))
    switch.fabric.forward(b, frame(MAC_B, MAC_A))
    assert (len(a.sent), len(b.sent)) == (1, 1)
    return a, b


# --- general ----------------------------------------------------------------------------------


async def test_help_lists_every_command_as_vdeterm_reads_it(s: Session) -> None:
    lines = await text(s, "help")
    assert lines[:2] == [
        "COMMAND PATH       SYNTAX          HELP",
        "------------       --------------  ------------",
    ]
    listed = [line.split()[0] for line in lines[2:] if "MENU" not in line]
    assert sorted(listed) == sorted(COMMANDS)  # every command, once
    menus = [line.split()[0] for line in lines if line.endswith(" MENU")]
    assert len(menus) == len(set(menus)), menus  # each menu heading once (port/setstormlimit too)
    groups = [name.partition("/")[0] for name in listed if "/" in name]
    assert groups == sorted(groups, key=groups.index)  # every menu's commands under its heading
    assert "port/print         [N]             ports: peer, MACs, counters, drops" in lines
    assert "port               ============    PORT MENU" in lines  # before the first port/...
    assert lines.index("port               ============    PORT MENU") < lines.index(
        "port/print         [N]             ports: peer, MACs, counters, drops"
    )
    doc = await ask_json(s, "help pcap")
    assert doc == {
        "commands": [
            {"command": "pcap/start", "syntax": "FILE [PORT]", "help": COMMANDS["pcap/start"].help},
            {"command": "pcap/stop", "syntax": "", "help": COMMANDS["pcap/stop"].help},
            {"command": "pcap/showinfo", "syntax": "", "help": COMMANDS["pcap/showinfo"].help},
            {"command": "pcap/stream", "syntax": "[PORT]", "help": COMMANDS["pcap/stream"].help},
        ]
    }
    assert await ask_json(s, "help nothing/") == {"commands": []}


async def test_showinfo_json_has_sockets_totals_and_every_event(
    switch: FakeSwitch, s: Session, tmp_path: Path
) -> None:
    ctl, mgmt, stream = tmp_path / "ctl", tmp_path / "mgmt", tmp_path / "stream"
    for path, mode in ((ctl, 0o640), (mgmt, 0o600), (stream, 0o660)):
        path.touch()
        path.chmod(mode)
    switch.mgmt_path = str(mgmt)
    switch.data_path = str(tmp_path / "gone.data")  # no such file: no permissions shown
    switch.stream_names = [f"unix:{stream}", "tcp:127.0.0.1:5555"]
    switch.started_at -= 75
    a, b = switch.attach(1), switch.attach(2)
    fabric = switch.fabric
    fabric.forward(a, frame(MAC_A, BROADCAST))  # 60 bytes to b
    fabric.forward(b, frame(MAC_B, MAC_A, 100))  # 100 bytes to a
    fabric.forward(a, b"runt")
    # a port that left: its traffic stays in the totals
    c = switch.attach(3)
    fabric.tick(5.0)
    fabric.forward(c, frame(MAC_A, MAC_B, 80))  # MAC_A moves to port 3
    await switch.attachments.detach(c, "test")
    switch.unknown = 3
    switch.attach_events.update({"port_limit": 2, "bad_request": 1})

    info = await ask_json(s, "showinfo")
    assert info["version"] == __version__ and info["pid"] == os.getpid()
    assert 75 <= info["uptime"] < 80
    assert info["mode"] == "switch"
    assert info["sockets"] == {"control": str(ctl), "data": switch.data_path, "mgmt": str(mgmt)}
    assert info["perm"] == {"control": "0640", "data": None, "mgmt": "0600"}
    assert info["streams"] == [
        {"name": f"unix:{stream}", "perm": "0660"},
        {"name": "tcp:127.0.0.1:5555", "perm": None},
    ]
    assert (info["ports"], info["macs"]) == (2, 1)  # MAC_A went with port 3
    assert info["vlans"] == {"active": False, "ids": [1]}
    assert info["max_frame"] == 1518
    assert info["queues"] == {"port_limit": 256, "memory_limit": 64 << 20, "memory_used": 0}
    assert info["capture"] == {"running": False, "file": None}
    assert info["stp"] is None
    totals = info["totals"]
    assert (totals["rx_frames"], totals["rx_bytes"]) == (4, 60 + 100 + 4 + 80)
    assert (totals["tx_frames"], totals["tx_bytes"]) == (3, 60 + 100 + 80)
    assert totals["drops"]["runt"] == 1
    assert totals["drops"]["unknown_sender"] == 3
    assert totals["drops"]["giant"] == 0  # every drop reason is there, zero or not
    assert info["events"] == {"bad_request": 1, "mac_moved": 1, "port_limit": 2}
    assert list(info["events"]) == sorted(info["events"])


async def test_showinfo_text(switch: FakeSwitch, s: Session, tmp_path: Path) -> None:
    (tmp_path / "ctl").touch()
    (tmp_path / "ctl").chmod(0o600)
    switch.stream_names = ["tcp:0.0.0.0:5555"]
    switch.started_at -= 3700
    switch.restarts = 3
    since = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(switch.started_at))
    a, _ = switch.attach(1), switch.attach(2)
    switch.fabric.forward(a, frame(MAC_A, BROADCAST))
    switch.fabric.forward(a, b"runt")
    switch.unknown = 2
    switch.attach_events["port_limit"] = 1
    lines = await text(s, "showinfo")
    assert lines == [
        f"umlswitch V.{__version__}",
        f"pid {os.getpid()} uptime 1h01m40s, running since {since}, 3 restart(s)",
        "mode switch, 2 port(s), 1 MAC(s), max frame 1518 bytes",
        f"control {tmp_path / 'ctl'} perm 0600",
        "stream  tcp:0.0.0.0:5555",
        "queues  256 frames per port, 64 MiB in all, 0 bytes waiting",
        "capture off",
        "totals:",
        " IN:  frames            2  bytes               64",
        " OUT: frames            1  bytes               60",
        " drops: runt=1 unknown_sender=2",
        "events: port_limit=1",
    ]


async def test_showinfo_text_shows_vlans_hub_mode_and_the_tree(
    switch: FakeSwitch, s: Session
) -> None:
    await ask(s, "vlan/create 10")
    await ask(s, "port/sethub 1")
    await ask(s, "fstp/setfstp 1")
    lines = await text(s, "showinfo")
    assert lines[2] == "mode hub, 0 port(s), 0 MAC(s), max frame 1518 bytes"
    assert lines[3] == "VLANs 1 10"
    bridge = (await ask_json(s, "fstp/print"))["bridge"]
    assert f"stp     bridge {bridge}, root this switch, 0 topology change(s)" in lines
    assert lines[-1] == "events: none"
    info = await ask_json(s, "showinfo")
    assert info["stp"] == {
        "bridge": bridge,
        "root": bridge,
        "is_root": True,
        "topology_changes": 0,
    }


# --- ports ------------------------------------------------------------------------------------


async def test_port_print_shows_what_each_port_says_of_itself(
    switch: FakeSwitch, s: Session
) -> None:
    behind = [f"02:00:00:00:01:{i:02x}" for i in range(1, 6)]
    switch.attach(
        1,
        Membership(10, frozenset({20})),
        peer=PeerCred(4242, 1000, 100),
        description="qemu lab",
        data_socket="@umlswitch-1-c-1",
        vteps={"192.0.2.1:4789": behind, "192.0.2.2:4789": []},
    )
    other = BarePort(2)  # a fabric port that is no Port: it says nothing of itself
    switch.fabric.attach(other)
    switch.fabric.forward(switch.fabric.ports[1], tagged(MAC_A, BROADCAST, 20))

    first, second = (await ask_json(s, "port/print"))["ports"]
    assert first["id"] == 1 and first["kind"] == "memory" and first["name"] == "mem:1"
    assert first["peer"] == {"pid": 4242, "uid": 1000, "gid": 100}
    assert first["description"] == "qemu lab"
    assert first["socket"] == "@umlswitch-1-c-1"
    assert first["vteps"] == {"192.0.2.1:4789": behind, "192.0.2.2:4789": []}
    assert first["macs"] == 1
    assert first["vlans"] == {"untagged": 10, "tagged": [20]}
    assert first["queue"] == {"depth": 0, "high": 0, "limit": 256}
    assert (first["paused"], first["stalls"], first["stp"], first["impair"]) == (0, 0, None, None)
    assert (first["rx_frames"], first["rx_bytes"], first["tx_frames"]) == (1, 64, 0)
    assert second["kind"] == "other" and second["name"] == "bare:2"
    assert [second[key] for key in ("peer", "description", "socket", "vteps")] == [None] * 4
    assert (await ask_json(s, "port/print 2"))["ports"] == [second]

    assert await text(s, "port/print") == [
        "Port 0001 memory mem:1",
        " peer pid=4242 uid=1000 gid=100",
        " description 'qemu lab'",
        " data socket @umlswitch-1-c-1",
        " MACs 1",
        " VLAN untagged 10, tagged 20",
        " VTEP 192.0.2.1:4789: 5 MAC(s)",
        "  " + " ".join(behind[:4]),
        "  " + behind[4],
        " VTEP 192.0.2.2:4789: 0 MAC(s)",
        " queue 0/256 frames waiting (high 0), paused 0, stalls 0",
        " IN:  frames            1  bytes               64",
        " OUT: frames            0  bytes                0",
        " drops: none",
        "Port 0002 other  bare:2",
        " MACs 0",
        " queue 0/256 frames waiting (high 0), paused 0, stalls 0",
        " IN:  frames            0  bytes                0",
        " OUT: frames            0  bytes                0",
        " drops: none",
    ]


async def test_port_print_without_ports_says_so(s: Session) -> None:
    assert await text(s, "port/print") == ["no ports attached"]
    assert await ask_json(s, "port/print") == {"ports": []}


async def test_a_clients_description_cannot_forge_the_end_of_an_answer(
    switch: FakeSwitch, s: Session
) -> None:
    switch.attach(1, description="evil\n.\n1000 Success")
    lines = await text(s, "port/print 1")
    assert " description 'evil\\n.\\n1000 Success'" in lines  # repr: one line, escaped


async def test_port_print_shows_backlog_stp_storm_limit_and_impairment(
    switch: FakeSwitch, s: Session
) -> None:
    port = switch.attach(1)
    port.stats.queued, port.stats.queue_high, port.stats.paused, port.stats.stalls = 3, 7, 2, 1
    await ask(s, "fstp/setfstp 1")
    await ask(s, "port/setstormlimit 1 5")
    await ask(s, "port/impair 1 in loss=5 seed=9")
    lines = await text(s, "port/print 1")
    assert lines[2:] == [
        " stp designated forwarding (rstp, edge), priority 128, cost 100",
        " storm limit 5 flooded frames/s",
        " queue 3/256 frames waiting (high 7), paused 2, stalls 1",
        " impair in: loss 5% (seed 9)",
        " IN:  frames            0  bytes                0",
        " OUT: frames            1  bytes               60",  # the tree's first BPDU
        " drops: none",
    ]


LEAVE_BOUND = 5.0  # seconds a slow port takes at most to go, so that a failing test ends


def run_slow_to_leave(
    switch: FakeSwitch, port: MemoryPort, nursery: trio.Nursery, release: trio.Event
) -> None:
    """Run ``port`` as its attach path would; once removed, it takes until ``release`` (or
    LEAVE_BOUND) to go, as a port whose peer is slow to hang up."""

    async def life() -> str:
        try:
            await trio.sleep_forever()
        finally:
            with trio.move_on_after(LEAVE_BOUND, shield=True):
                await release.wait()
        raise AssertionError("not reached")

    nursery.start_soon(switch.attachments.run, port, life)


async def test_port_remove_answers_once_the_port_is_detached(
    switch: FakeSwitch, s: Session, lan: tuple[MemoryPort, MemoryPort], nursery: trio.Nursery
) -> None:
    _, b = lan
    release = trio.Event()
    run_slow_to_leave(switch, b, nursery, release)
    await trio.testing.wait_all_tasks_blocked()
    answers: list[object] = []

    async def remove() -> None:
        answers.append(await ask_json(s, "port/remove 2"))

    nursery.start_soon(remove)
    await trio.testing.wait_all_tasks_blocked()
    assert answers == [] and 2 in switch.fabric.ports  # still going: no answer yet
    release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert answers == [{"removed": 2}]
    assert b.detached.is_set() and b.closed
    assert [p["id"] for p in (await ask_json(s, "port/print"))["ports"]] == [1]
    assert [e["mac"] for e in (await ask_json(s, "hash/print"))["entries"]] == [MAC_A]
    assert await failure(s, "port/remove 2") == "1006 No such device or address: no port 2"


async def test_port_remove_of_a_port_not_yet_running_detaches_it_at_once(
    switch: FakeSwitch, s: Session, lan: tuple[MemoryPort, MemoryPort]
) -> None:
    a, _ = lan
    assert await ask(s, "port/remove 1") == protocol.Reply.success()
    assert a.detached.is_set() and a.closed and 1 not in switch.fabric.ports
    assert (await ask_json(s, "showinfo"))["totals"]["rx_frames"] == 2  # a's stays counted


async def test_port_remove_gives_up_waiting_after_its_timeout(
    switch: FakeSwitch,
    s: Session,
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
) -> None:
    port = switch.attach(1)
    run_slow_to_leave(switch, port, nursery, trio.Event())  # never released
    await trio.testing.wait_all_tasks_blocked()
    start = trio.current_time()
    reply = await ask(s, "port/remove 1")
    assert trio.current_time() - start == pytest.approx(REMOVE_TIMEOUT)
    assert (reply.code, reply.ok) == (1000 + errno.ETIMEDOUT, False)  # an answer, not a hang
    assert "has not left within 1 s" in reply.message
    assert 1 in switch.fabric.ports and not port.detached.is_set()
    await port.detached.wait()
    assert trio.current_time() - start == pytest.approx(LEAVE_BOUND)


async def test_port_remove_of_a_port_without_an_attach_record_is_busy(
    switch: FakeSwitch, s: Session
) -> None:
    switch.fabric.attach(BarePort(4))  # in the fabric, but no attach path knows it
    assert (
        await failure(s, "port/remove 4")
        == "1016 Device or resource busy: port 4 cannot be removed"
    )
    assert 4 in switch.fabric.ports
    assert await failure(s, "port/remove 5") == "1006 No such device or address: no port 5"


async def test_port_resetcounter_of_one_port_and_of_all(
    switch: FakeSwitch, s: Session, lan: tuple[MemoryPort, MemoryPort]
) -> None:
    c = switch.attach(3)
    switch.fabric.forward(c, frame(MAC_C, BROADCAST))
    await switch.attachments.detach(c, "test")
    assert await ask_json(s, "port/resetcounter 1") == {"reset": [1]}
    one, two = (await ask_json(s, "port/print"))["ports"]
    assert (one["rx_frames"], one["tx_frames"]) == (0, 0)
    assert (two["rx_frames"], two["tx_frames"]) == (1, 2)
    assert (await ask_json(s, "showinfo"))["totals"]["rx_frames"] == 2  # port 2's and 3's
    assert await ask_json(s, "port/resetcounter") == {"reset": [1, 2]}
    totals = (await ask_json(s, "showinfo"))["totals"]
    assert (totals["rx_frames"], totals["tx_frames"], totals["rx_bytes"]) == (0, 0, 0)
    assert await failure(s, "port/resetcounter 3") == "1006 No such device or address: no port 3"


async def test_port_sethub_switches_mode_and_forgets_the_table(
    switch: FakeSwitch, s: Session, lan: tuple[MemoryPort, MemoryPort]
) -> None:
    a, _ = lan
    assert await ask_json(s, "port/sethub 1") == {"mode": "hub"}
    assert (await ask_json(s, "showinfo"))["mode"] == "hub"
    assert await ask_json(s, "hash/print") == {"entries": []}
    switch.fabric.forward(a, frame(MAC_A, MAC_B))
    assert await ask_json(s, "hash/print") == {"entries": []}  # a hub learns nothing
    assert await ask_json(s, "port/sethub 0") == {"mode": "switch"}
    switch.fabric.forward(a, frame(MAC_A, MAC_B))
    assert (await ask_json(s, "hash/find " + MAC_A))["entries"][0]["port"] == 1
    assert await ask(s, "port/sethub 0") == protocol.Reply.success()  # no data block


# --- the MAC table ----------------------------------------------------------------------------


async def test_hash_print_find_flush(
    switch: FakeSwitch, s: Session, lan: tuple[MemoryPort, MemoryPort]
) -> None:
    switch.fabric.tick(12.34)
    assert await ask_json(s, "hash/print") == {
        "entries": [
            {"mac": MAC_A, "vlan": None, "port": 1, "age": 12.3},
            {"mac": MAC_B, "vlan": None, "port": 2, "age": 12.3},
        ]
    }
    assert await text(s, "hash/print") == [
        "MAC                PORT     AGE",
        f"{MAC_A}     1    12.3",
        f"{MAC_B}     2    12.3",
    ]
    assert await text(s, "hash/find 02:00:00:00:00:0B") == [  # any case
        "MAC                PORT     AGE",
        f"{MAC_B}     2    12.3",
    ]
    assert await ask_json(s, "hash/flush 2") == {"flushed": 1}
    assert await ask_json(s, "hash/flush 2") == {"flushed": 0}
    assert await ask_json(s, "hash/flush") == {"flushed": 1}
    assert await text(s, "hash/print") == ["MAC                PORT     AGE"]


async def test_hash_commands_with_vlans_show_one_entry_per_vlan(
    switch: FakeSwitch, s: Session
) -> None:
    a = switch.attach(1, Membership(1, frozenset({20})))
    switch.attach(2, Membership(10))
    switch.fabric.forward(a, frame(MAC_A, BROADCAST))
    switch.fabric.forward(a, tagged(MAC_A, BROADCAST, 20))
    found = await ask_json(s, "hash/find " + MAC_A)
    assert found == {
        "entries": [
            {"mac": MAC_A, "vlan": 1, "port": 1, "age": 0.0},
            {"mac": MAC_A, "vlan": 20, "port": 1, "age": 0.0},
        ]
    }
    assert await text(s, "hash/print") == [
        "MAC                VLAN  PORT     AGE",
        f"{MAC_A}     1     1     0.0",
        f"{MAC_A}    20     1     0.0",
    ]


async def test_hash_showinfo_and_setexpire(
    switch: FakeSwitch, s: Session, lan: tuple[MemoryPort, MemoryPort]
) -> None:
    c = switch.attach(3)
    switch.fabric.forward(c, frame(MAC_A, MAC_B))  # within the hold-down: not moved
    assert await ask_json(s, "hash/showinfo") == {
        "entries": 2,
        "max_entries": 8192,
        "max_per_port": None,
        "aging": 300.0,
        "hold_down": 1.0,
        "events": {"mac_evicted": 0, "mac_moved": 0, "mac_move_held": 1, "mac_expired": 0},
    }
    assert await ask_json(s, "hash/setexpire 42") == {"aging": 42.0}
    assert switch.fabric.table.aging == 42.0
    assert await text(s, "hash/showinfo") == [
        "entries 2 of at most 8192",
        "expire 42 s",
        "move hold-down 1 s",
        "events: mac_move_held=1",
    ]
    switch.fabric.tick(43.0)
    assert (await ask_json(s, "hash/showinfo"))["events"]["mac_expired"] == 2


async def test_hash_showinfo_shows_the_per_port_bound(nursery: trio.Nursery) -> None:
    switch = await FakeSwitch(SwitchConfig(max_macs=100, max_macs_per_port=10)).start(nursery)
    lines = await text(session(switch), "hash/showinfo")
    assert lines[0] == "entries 0 of at most 100, 10 per port"


# --- VLANs ------------------------------------------------------------------------------------


async def test_vlan_commands_change_and_show_the_membership(
    switch: FakeSwitch, s: Session, tmp_path: Path
) -> None:
    switch.attach(1)
    switch.attach(2)
    assert (await ask_json(s, "vlan/print")) == {
        "active": False,
        "vlans": [
            {
                "id": 1,
                "default": True,
                "untagged": [{"id": 1, "name": "mem:1"}, {"id": 2, "name": "mem:2"}],
                "tagged": [],
                "control_sockets": [],
            }
        ],
    }
    assert (await text(s, "vlan/print"))[0].startswith("VLANs off: only the default VLAN 1")
    doc = await ask_json(s, "vlan/create 10")
    assert doc["active"] is True and [v["id"] for v in doc["vlans"]] == [10]
    assert await ask_json(s, "vlan/create 20") is not None
    assert await ask_json(s, "port/setvlan 1 10") == {"id": 1, "untagged": 10, "tagged": []}
    assert await ask_json(s, "vlan/addport 20 1") == {"id": 1, "untagged": 10, "tagged": [20]}
    assert await ask_json(s, "vlan/addport 20 2") == {"id": 2, "untagged": 1, "tagged": [20]}
    vlan30 = str(tmp_path / "vlan30.ctl")
    switch.fabric.vlans.bind(vlan30, Membership(30))
    assert await text(s, "vlan/print") == [
        "VLAN 0001 (default)",
        " -- Port 0002 untagged mem:2",
        "VLAN 0010",
        " -- Port 0001 untagged mem:1",
        "VLAN 0020",
        " -- Port 0001 tagged   mem:1",
        " -- Port 0002 tagged   mem:2",
        "VLAN 0030",
        f" -- control socket {vlan30} (untagged)",
    ]
    assert await text(s, "port/print 1") == [
        "Port 0001 memory mem:1",
        " MACs 0",
        " VLAN untagged 10, tagged 20",
        " queue 0/256 frames waiting (high 0), paused 0, stalls 0",
        " IN:  frames            0  bytes                0",
        " OUT: frames            0  bytes                0",
        " drops: none",
    ]
    assert await ask_json(s, "vlan/delport 20 2") == {"id": 2, "untagged": 1, "tagged": []}
    assert await ask_json(s, "port/setvlan 1 20") == {"id": 1, "untagged": 20, "tagged": []}
    assert await ask_json(s, "vlan/remove 10") == {"removed": 10, "active": True}
    assert (await ask_json(s, "showinfo"))["vlans"] == {"active": True, "ids": [1, 20, 30]}
    assert await ask_json(s, "vlan/print 30") == {
        "active": True,
        "vlans": [
            {
                "id": 30,
                "default": False,
                "untagged": [],
                "tagged": [],
                "control_sockets": [{"path": vlan30, "tagged": False}],
            }
        ],
    }


async def test_removing_the_last_vlan_turns_vlans_off(s: Session) -> None:
    await ask(s, "vlan/create 5")
    assert await ask_json(s, "vlan/remove 5") == {"removed": 5, "active": False}
    assert (await ask_json(s, "showinfo"))["vlans"] == {"active": False, "ids": [1]}


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("vlan/create 10", "1017 File exists: VLAN 10 exists"),
        ("vlan/create 0", "1022 Invalid argument: VLAN 0 is no VLAN"),
        ("vlan/create 4095", "1022 Invalid argument: VLAN must be from 1 to 4094, not 4095"),
        ("vlan/create ten", "1022 Invalid argument: VLAN must be a VLAN number from 1 to 4094"),
        ("vlan/remove 1", "1022 Invalid argument: VLAN 1 is the default VLAN"),
        ("vlan/remove 20", "1098 Address already in use: VLAN 20 is in use by port 1"),
        ("vlan/remove 99", "1006 No such device or address: no VLAN 99"),
        ("vlan/addport 99 1", "1006 No such device or address: no VLAN 99"),
        ("vlan/addport 20 1", "1017 File exists: port 1 is in VLAN 20 untagged already"),
        ("vlan/addport 10 7", "1006 No such device or address: no port 7"),
        ("vlan/delport 20 1", "1098 Address already in use: VLAN 20 is port 1's untagged"),
        ("vlan/delport 10 1", "1006 No such device or address: port 1 is not in VLAN 10"),
        ("port/setvlan 1 99", "1006 No such device or address: no VLAN 99"),
        ("port/setvlan 7 10", "1006 No such device or address: no port 7"),
        ("vlan/print 99", "1006 No such device or address: no VLAN 99"),
    ],
)
async def test_vlan_command_errors_as_vde_switch_numbers_them(
    switch: FakeSwitch, s: Session, line: str, status: str
) -> None:
    switch.fabric.vlans.create(10)
    switch.attach(1, Membership(20))
    assert (await failure(s, line)).startswith(status)


# --- impairment -------------------------------------------------------------------------------


async def test_port_impair_sets_shows_and_restores(
    switch: FakeSwitch, s: Session, lan: tuple[MemoryPort, MemoryPort]
) -> None:
    a, b = lan
    assert await text(s, "port/impair 2") == ["port 2 (mem:2)", " in:  none", " out: none"]
    lines = await text(s, "port/impair 2 out loss=5 delay=40ms seed=42")
    assert lines == [
        "port 2 (mem:2)",
        " in:  none",
        " out: loss 5%, delay 40ms, limit 1000; seed 42",
        "      queued 0; dropped: loss 0, queue full 0; none",
    ]
    doc = await ask_json(s, "port/impair 2")
    assert doc["in"] is None and doc["out"]["seed"] == 42
    assert (doc["out"]["setting"]["loss"], doc["out"]["setting"]["delay"]) == (5.0, 0.04)
    switch.fabric.forward(a, frame(MAC_A, MAC_B))  # waits in port 2's delay queue
    assert (await ask_json(s, "port/impair 2"))["out"]["queued"] == 1
    printed = (await ask_json(s, "port/print 2"))["ports"][0]
    assert printed["impair"]["out"]["seed"] == 42
    both = await ask_json(s, "port/impair 1 duplicate=1")  # both directions by default
    assert both["in"]["setting"]["duplicate"] == both["out"]["setting"]["duplicate"] == 1
    assert both["in"]["seed"] == both["out"]["seed"]
    assert await ask_json(s, "port/impair 2 off") == {
        "id": 2,
        "name": "mem:2",
        "in": None,
        "out": None,
    }
    assert len(b.sent) == 2  # switching off sent the waiting frame at once
    assert (await ask_json(s, "port/print 2"))["ports"][0]["impair"] is None
    assert (await ask_json(s, "port/impair 1 in off"))["in"] is None
    assert (await ask_json(s, "port/impair 1"))["out"]["setting"]["duplicate"] == 1


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("port/impair", "1022 Invalid argument: usage: port/impair N"),
        ("port/impair 9 loss=1", "1006 No such device or address: no port 9"),
        ("port/impair 1 in", "1022 Invalid argument: give KEY=VALUE settings"),
        ("port/impair 1 in loss=1 off", "1022 Invalid argument: give KEY=VALUE settings"),
        ("port/impair 1 sideways loss=1", "1022 Invalid argument: expected KEY=VALUE"),
        (
            "port/impair 1 loss=200",
            "1022 Invalid argument: loss= must be a percentage from 0 to 100",
        ),
        ("port/impair 1 delay=40", "1022 Invalid argument: delay= must be a duration with a unit"),
        ("port/impair 1 rate=20mb", "1022 Invalid argument: rate=: unknown unit 'mb'"),
        ("port/impair 1 reorder=5", "1022 Invalid argument: reorder needs a delay"),
    ],
)
async def test_port_impair_refuses_what_it_cannot_do(
    switch: FakeSwitch, s: Session, line: str, status: str
) -> None:
    switch.attach(1)
    assert (await failure(s, line)).startswith(status)
    assert (await ask_json(s, "port/impair 1")) == {
        "id": 1,
        "name": "mem:1",
        "in": None,
        "out": None,
    }


# --- spanning tree and storm control ----------------------------------------------------------


async def test_stp_commands_off_say_so(
    switch: FakeSwitch, s: Session, lan: tuple[MemoryPort, MemoryPort]
) -> None:
    assert await ask_json(s, "fstp/print") == {"stp": False}
    assert await text(s, "fstp/print") == ["spanning tree off (fstp/setfstp 1 turns it on)"]
    assert (await ask_json(s, "port/print 1"))["ports"][0]["stp"] is None
    off = "1022 Invalid argument: the spanning tree is off (fstp/setfstp 1)"
    tuning = ["fstp/setpriority 4096", "fstp/setportprio 1 16", "fstp/setcost 1 10"]
    for line in [*tuning, "fstp/setedge 1 1"]:
        assert await failure(s, line) == off
    assert await ask_json(s, "fstp/setfstp 0") == {"stp": False}  # off already: stays off


async def test_stp_commands_on(
    switch: FakeSwitch, s: Session, lan: tuple[MemoryPort, MemoryPort]
) -> None:
    assert await ask_json(s, "fstp/setfstp 1") == {"stp": True}
    bridge = switch.guard.stp
    assert bridge is not None
    assert await ask_json(s, "fstp/setfstp 1") == {"stp": True}
    assert switch.guard.stp is bridge  # on already: the same tree
    doc = await ask_json(s, "fstp/print")
    assert doc["is_root"] and doc["root"] == doc["bridge"] and doc["bridge"].startswith("32768.")
    assert doc["timers"] == {"hello": 2.0, "max_age": 20.0, "forward_delay": 15.0}
    assert [(p["id"], p["role"], p["state"], p["edge"]) for p in doc["ports"]] == [
        (1, "designated", "forwarding", True),
        (2, "designated", "forwarding", True),
    ]
    assert await ask_json(s, "fstp/setpriority 4096") == {"priority": 4096}
    assert (await ask_json(s, "fstp/print"))["bridge"].startswith("4096.")
    assert await ask_json(s, "fstp/setportprio 1 16") == {"port": 1, "priority": 16}
    assert await ask_json(s, "fstp/setcost 2 2000") == {"port": 2, "cost": 2000}
    assert await ask_json(s, "fstp/setedge 2 0") == {"port": 2, "edge": False}
    one, two = (await ask_json(s, "port/print"))["ports"]
    assert (one["stp"]["priority"], two["stp"]["cost"], two["stp"]["edge"]) == (16, 2000, False)
    lines = await text(s, "fstp/print")
    assert lines[0] == f"bridge {(await ask_json(s, 'fstp/print'))['bridge']}"
    assert lines[1].endswith("(this switch), cost 0")
    assert lines[2] == "timers hello 2 s, max age 20 s, forward delay 15 s"
    assert lines[4] == "PORT NAME                 ROLE        STATE       PROTO EDGE PRIO   COST"
    assert lines[5] == "   1 mem:1                designated  forwarding  rstp  yes    16    100"
    assert lines[6].startswith("   2 mem:2                designated  ") and lines[6].endswith(
        " no    128   2000"
    )
    assert await ask_json(s, "fstp/setfstp 0") == {"stp": False}
    assert switch.guard.stp is None
    assert (await ask_json(s, "port/print 1"))["ports"][0]["stp"] is None


async def test_stp_of_the_command_line_is_on_from_the_start(nursery: trio.Nursery) -> None:
    config = SwitchConfig(stp=True, stp_priority=8192, stp_cost=300)
    switch = await FakeSwitch(config).start(nursery)
    switch.attach(1, stp_edge=False)
    s = session(switch)
    doc = await ask_json(s, "fstp/print")
    assert doc["bridge"].startswith("8192.")
    assert [(p["state"], p["edge"], p["cost"]) for p in doc["ports"]] == [
        ("discarding", False, 300)  # not an edge port: it waits out the forward delay
    ]
    await ask(s, "fstp/setfstp 0")
    await ask(s, "fstp/setfstp 1")  # on again: the tree takes the command line's settings
    assert (await ask_json(s, "fstp/print"))["bridge"].startswith("8192.")


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("fstp/setfstp 2", "1022 Invalid argument: fstp/setfstp takes 1 (on) or 0 (off)"),
        (
            "fstp/setpriority 65536",
            "1022 Invalid argument: bridge priority must be from 0 to 65535",
        ),
        (
            "fstp/setportprio 1 17",
            "1022 Invalid argument: port priority must be from 0 to 240 in steps of 16",
        ),
        ("fstp/setportprio 9 16", "1006 No such device or address: no port 9"),
        ("fstp/setcost 1 0", "1022 Invalid argument: path cost must be from 1 to 200000000"),
        ("fstp/setedge 1 yes", "1022 Invalid argument: fstp/setedge takes 1 (edge) or 0 (not)"),
        (
            "port/setstormlimit 1 10000001",
            "1022 Invalid argument: storm limit must be from 0 to 10000000",
        ),
        ("port/setstormlimit 9 1", "1006 No such device or address: no port 9"),
        ("port/setstormlimit any 1", "1022 Invalid argument: port must be a number, not 'any'"),
    ],
)
async def test_stp_and_storm_errors(switch: FakeSwitch, s: Session, line: str, status: str) -> None:
    switch.attach(1)
    await ask(s, "fstp/setfstp 1")
    assert await failure(s, line) == status


async def test_storm_limit_of_one_port_and_of_all(switch: FakeSwitch, s: Session) -> None:
    switch.attach(1)
    assert await ask_json(s, "port/setstormlimit 1 5") == {"port": 1, "storm_limit": 5}
    assert (await ask_json(s, "port/print 1"))["ports"][0]["storm_limit"] == 5
    assert await ask_json(s, "port/setstormlimit all 7") == {"port": None, "storm_limit": 7}
    switch.attach(2)  # a port attached later gets the limit of all
    assert [p["storm_limit"] for p in (await ask_json(s, "port/print"))["ports"]] == [7, 7]
    await ask(s, "port/setstormlimit all 0")
    assert [p["storm_limit"] for p in (await ask_json(s, "port/print"))["ports"]] == [0, 0]
    assert " storm limit" not in "\n".join(await text(s, "port/print"))


# --- packet capture ---------------------------------------------------------------------------


async def test_pcap_commands(
    switch: FakeSwitch, s: Session, lan: tuple[MemoryPort, MemoryPort], tmp_path: Path
) -> None:
    a, _ = lan
    path = tmp_path / "port2.pcap"
    assert await text(s, "pcap/showinfo") == ["capture off"]
    started = await ask_json(s, f"pcap/start {path} 2")
    assert (started["running"], started["file"], started["port"]) == (True, str(path), 2)
    other = tmp_path / "other.pcap"
    assert await failure(s, f"pcap/start {other}") == (
        f"1016 Device or resource busy: already capturing to {path}"
    )
    assert not other.exists()
    switch.fabric.forward(a, frame(MAC_A, MAC_B, 18))
    stopped = await text(s, "pcap/stop")
    assert stopped == [
        f"capture stopped: port 2 to {path}",
        "frames 1 captured, 1 written, 0 dropped (writer behind); 58 bytes",
    ]
    assert path.stat().st_size == 24 + 16 + 18
    assert (await ask_json(s, "pcap/showinfo"))["running"] is False
    assert (await ask_json(s, "showinfo"))["capture"]["file"] == str(path)
    assert await failure(s, "pcap/stop") == "1022 Invalid argument: no capture is running"
    assert (await text(s, f"pcap/start {path}"))[0] == f"capturing: every port to {path}"
    await ask(s, "pcap/stop")


@pytest.mark.parametrize(
    ("line", "peer", "status"),
    [
        (
            "pcap/start x.pcap",
            ME,
            f"1022 Invalid argument: give an absolute path (the switch runs in '{os.getcwd()}')",
        ),
        ("pcap/start {tmp}/x.pcap", STRANGER, "1013 Permission denied: only root or uid"),
        ("pcap/start {tmp}/x.pcap 9", ME, "1006 No such device or address: no port 9"),
        ("pcap/start {tmp}/no/dir/x.pcap", ME, "1002 No such file or directory: cannot write '"),
        ("pcap/start", ME, "1022 Invalid argument: usage: pcap/start FILE [PORT]"),
    ],
)
async def test_pcap_start_errors(
    switch: FakeSwitch, tmp_path: Path, line: str, peer: PeerCred, status: str
) -> None:
    line = line.format(tmp=tmp_path)
    assert (await failure(session(switch, peer), line)).startswith(status)
    assert switch.capture.current is None and not (tmp_path / "x.pcap").exists()


async def test_the_rc_file_may_start_a_capture(switch: FakeSwitch, tmp_path: Path) -> None:
    path = tmp_path / "boot.pcap"
    await run_rc_file(switch, str(tmp_path / "start.rc"), f"pcap/start {path}\n")
    current = switch.capture.current
    assert current is not None and current.path == str(path)  # the switch's own user may
    assert path.stat().st_size == 24  # the pcap header
    await switch.capture.stop()


# --- sessions ---------------------------------------------------------------------------------


async def test_logout_ends_the_session(s: Session) -> None:
    reply = await ask(s, "logout")
    assert (reply.code, reply.message, reply.lines) == (9999, "END OF SESSION", None)
    assert s.ended and not s.shutdown


async def test_shutdown_ends_the_session_and_asks_to_stop(s: Session) -> None:
    reply = await ask(s, "json shutdown")
    assert reply.code == 9999 and reply.lines is not None
    assert json.loads(reply.lines[0]) == {"shutdown": True, "pid": os.getpid()}
    assert s.ended and s.shutdown


async def test_shutdown_says_what_it_does(s: Session) -> None:
    reply = await ask(s, "shutdown")
    assert reply.lines == (f"shutting down: pid {os.getpid()} stops and removes its socket files",)


async def test_restart_answers_with_the_new_pid(switch: FakeSwitch, s: Session) -> None:
    sent: list[str] = []
    s.send_now = sent.append
    reply = await ask(s, "restart")
    assert switch.restart_requests == 1
    assert sent == [  # written at once, before the process would exit
        "0000 DATA END WITH '.'\n"
        f"restarted: pid {os.getpid()} handed the switch over to pid {NEW_PID}\n"
        ".\n9999 END OF SESSION\n"
    ]
    assert reply.ok


async def test_a_failed_restart_says_why_and_that_the_switch_serves_on(
    switch: FakeSwitch, s: Session
) -> None:
    switch.restart_refusal = "the new process (pid 1234) exited 1 before it took over"
    assert await failure(s, "restart") == (
        "1125 Operation canceled: restart failed: the new process (pid 1234) exited 1 before "
        f"it took over; this switch (pid {os.getpid()}) serves on"
    )


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("no/such", "1038 Function not implemented: unknown command 'no/such'; try 'help'"),
        ("json", "1022 Invalid argument: json needs a command, e.g. 'json port/print'"),
        ("json json", "1022 Invalid argument: json needs a command, e.g. 'json port/print'"),
        ("port/print x", "1022 Invalid argument: port must be a number, not 'x'"),
        ("port/print -1", "1022 Invalid argument: port must not be negative"),
        ("port/print 9", "1006 No such device or address: no port 9"),
        ("port/sethub 2", "1022 Invalid argument: port/sethub takes 1 (hub) or 0 (switch)"),
        ("port/sethub", "1022 Invalid argument: usage: port/sethub 0/1"),
        ("hash/find nope", "1022 Invalid argument: not a MAC address: 'nope'"),
        (
            "hash/find 02:00:00:00:00:99",
            "1019 No such device: 02:00:00:00:00:99 is not in the table",
        ),
        ("hash/flush 9", "1006 No such device or address: no port 9"),
        ("hash/setexpire 0", "1022 Invalid argument: expire time must be at least 1 second"),
        ("hash/setexpire soon", "1022 Invalid argument: expire time must be a number, not 'soon'"),
        ("help a b", "1022 Invalid argument: usage: help [PREFIX]"),
    ],
)
async def test_bad_commands_and_arguments(s: Session, line: str, status: str) -> None:
    assert await failure(s, line) == status


async def test_a_json_error_is_one_document_with_the_status(s: Session) -> None:
    reply = await ask(s, "json port/print 9")
    assert reply.code == 1006 and reply.lines is not None
    assert json.loads(reply.lines[0]) == {
        "error": {"code": 1006, "message": "No such device or address: no port 9"}
    }


async def test_changes_are_logged_with_the_client_and_reads_are_not(
    s: Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="umlswitch.mgmt")
    await ask(s, "port/print")
    await ask(s, "hash/setexpire 60")
    await ask(s, "json hash/setexpire 0")
    assert [r.getMessage() for r in caplog.records if r.name == "umlswitch.mgmt"] == [
        f"management client {ME}: hash/setexpire 60",
        f"management client {ME}: json hash/setexpire 0: failed: "
        "expire time must be at least 1 second",
    ]


# --- every command ----------------------------------------------------------------------------

# A valid use of each command, given the ``every`` fixture's switch; earlier lines set it up.
VALID: dict[str, list[str]] = {
    "help": ["help"],
    "json": ["json showinfo"],
    "logout": ["logout"],
    "shutdown": ["shutdown"],
    "restart": ["restart"],
    "showinfo": ["showinfo"],
    "port/print": ["port/print 1"],
    "port/remove": ["port/remove 2"],
    "port/resetcounter": ["port/resetcounter 1"],
    "port/sethub": ["port/sethub 1"],
    "port/setvlan": ["port/setvlan 1 30"],
    "port/impair": ["port/impair 1 out loss=1 seed=1"],
    "hash/print": ["hash/print"],
    "hash/find": [f"hash/find {MAC_A}"],
    "hash/flush": ["hash/flush 1"],
    "hash/showinfo": ["hash/showinfo"],
    "hash/setexpire": ["hash/setexpire 60"],
    "vlan/create": ["vlan/create 10"],
    "vlan/remove": ["vlan/remove 30"],
    "vlan/addport": ["vlan/addport 30 1"],
    "vlan/delport": ["vlan/delport 40 2"],
    "vlan/print": ["vlan/print 40"],
    "pcap/start": ["pcap/start {tmp}/x.pcap 1"],
    "pcap/stop": ["pcap/start {tmp}/x.pcap", "pcap/stop"],
    "pcap/showinfo": ["pcap/showinfo"],
    "pcap/stream": ["pcap/stream 1"],
    "events/stream": ["events/stream"],
    "metrics/start": ["metrics/start 127.0.0.1:0"],
    "metrics/stop": ["metrics/start 127.0.0.1:0", "metrics/stop"],
    "metrics/showinfo": ["metrics/showinfo"],
    "fstp/print": ["fstp/setfstp 1", "fstp/print"],
    "fstp/setfstp": ["fstp/setfstp 1"],
    "fstp/setpriority": ["fstp/setfstp 1", "fstp/setpriority 4096"],
    "fstp/setportprio": ["fstp/setfstp 1", "fstp/setportprio 1 32"],
    "fstp/setcost": ["fstp/setfstp 1", "fstp/setcost 1 200"],
    "fstp/setedge": ["fstp/setfstp 1", "fstp/setedge 1 0"],
    "port/setstormlimit": ["port/setstormlimit 1 5"],
}


@pytest.fixture
def every(switch: FakeSwitch, lan: tuple[MemoryPort, MemoryPort]) -> FakeSwitch:
    """Ports 1 and 2 with a MAC each; VLAN 30 unused, port 2 carries VLAN 40 tagged."""
    vlans = switch.fabric.vlans
    vlans.create(30)
    vlans.create(40)
    vlans.add_tagged(40, 2)
    a, b = switch.fabric.ports[1], switch.fabric.ports[2]
    switch.fabric.forward(a, frame(MAC_A, BROADCAST))  # VLANs on: the table was flushed
    switch.fabric.forward(b, frame(MAC_B, MAC_A))
    return switch


def test_every_command_has_a_valid_use() -> None:
    assert set(VALID) == set(COMMANDS)


def well_formed(reply: protocol.Reply) -> None:
    """A status of vde_switch's kind: success, end of session, or 1000+errno and its text."""
    if reply.ok:
        assert reply.message in ("Success", "END OF SESSION")
    else:
        assert reply.errno in errno.errorcode, reply
        assert reply.message.startswith(os.strerror(reply.errno)), reply


@pytest.mark.parametrize(
    ("name", "as_json"),
    [(name, False) for name in COMMANDS] + [(name, True) for name in COMMANDS if name != "json"],
    ids=lambda value: {False: "text", True: "json"}.get(value, value),
)
async def test_every_command_answers_a_valid_use(
    every: FakeSwitch, tmp_path: Path, name: str, as_json: bool
) -> None:
    *setup, line = (line.format(tmp=tmp_path) for line in VALID[name])
    s = session(every)
    for earlier in setup:
        assert (await ask(s, earlier)).ok
    reply = await ask(s, f"json {line}" if as_json else line)
    assert reply.ok, reply
    well_formed(reply)
    assert s.ended == (name in ("logout", "shutdown"))
    invocation = protocol.parse_line(line)
    assert invocation is not None
    if as_json or invocation.json:  # one JSON document
        assert reply.lines is not None and len(reply.lines) == 1
        assert isinstance(json.loads(reply.lines[0]), dict)
    elif COMMANDS[name].render is None:
        assert reply.lines is None  # no renderer: the status line only, as vde_switch's
    else:
        assert reply.lines  # the renderer's lines
    await every.capture.stop()
    every.metrics.stop()


@pytest.mark.parametrize("name", list(COMMANDS))
async def test_every_command_with_no_arguments_answers(every: FakeSwitch, name: str) -> None:
    s = session(every)
    reply = await ask(s, name)
    well_formed(reply)
    as_json = await ask(session(every), f"json {name}")
    well_formed(as_json)
    assert as_json.lines is not None and len(as_json.lines) == 1
    document = json.loads(as_json.lines[0])
    if not as_json.ok:
        assert document["error"]["code"] == as_json.code


@pytest.mark.parametrize("name", [n for n in COMMANDS if n not in ("json", "port/impair")])
async def test_every_command_refuses_too_many_arguments_with_its_usage(
    every: FakeSwitch, name: str
) -> None:
    s = session(every)
    assert await failure(s, f"{name} 1 2 3") == (
        f"1022 Invalid argument: usage: {name} {COMMANDS[name].syntax}".rstrip()
    )
    assert not s.ended


# --- the --rc file and the server, on the same commands ---------------------------------------


async def test_the_rc_file_runs_in_order_and_stops_at_the_first_failure(
    switch: FakeSwitch, tmp_path: Path
) -> None:
    switch.attach(1)
    rc = str(tmp_path / "lab.rc")
    good = "vlan/create 10\n\n# a comment\nport/setvlan 1 10\nhash/setexpire 60\n"
    ran = await run_rc_file(switch, rc, good)
    assert not ran.ended and isinstance(ran.peer, PeerCred) and str(ran.peer) == f"--rc {rc}"
    assert switch.fabric.vlans.membership(1).untagged == 10
    assert switch.fabric.table.aging == 60.0
    with pytest.raises(StartupError) as failed:
        await run_rc_file(switch, rc, "hash/setexpire 61\nvlan/addport 10 3\nhash/setexpire 62\n")
    assert str(failed.value) == (
        f"--rc {rc} line 2: vlan/addport 10 3: No such device or address: no port 3"
    )
    assert switch.fabric.table.aging == 61.0  # the lines before it ran, the ones after did not


async def test_the_rc_file_ends_at_logout_and_passes_shutdown_on(
    switch: FakeSwitch, tmp_path: Path
) -> None:
    rc = str(tmp_path / "x.rc")
    ended = await run_rc_file(switch, rc, "hash/setexpire 61\nlogout\nhash/setexpire 62\n")
    assert ended.ended and not ended.shutdown and switch.fabric.table.aging == 61.0
    stopped = await run_rc_file(switch, rc, "shutdown\nhash/setexpire 63\n")
    assert stopped.shutdown and switch.fabric.table.aging == 61.0


async def read_exactly(conn: trio.socket.SocketType, expected: str) -> str:
    """What the server sends, up to the length of ``expected`` (or what it sent before EOF)."""
    got = b""
    with trio.fail_after(5):
        while len(got) < len(expected.encode()):
            data = await conn.recv(65536)
            if not data:
                break
            got += data
    return got.decode()


Connect = Callable[[], Awaitable[trio.socket.SocketType]]


@pytest.fixture
async def connect(switch: FakeSwitch, tmp_path: Path) -> AsyncIterator[Connect]:
    """Serve the management socket in-process; connect() opens a session past the banner."""
    path = str(tmp_path / "mgmt")

    async def connect() -> trio.socket.SocketType:
        conn = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await conn.connect(path)
        banner = protocol.banner(__version__)
        assert await read_exactly(conn, banner) == banner
        return conn

    with trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM) as listener:
        await listener.bind(path)
        listener.listen()
        server = MgmtServer(listener, switch, max_sessions=2)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            yield connect
            nursery.cancel_scope.cancel()


async def test_the_server_answers_every_line_of_a_read(connect: Connect) -> None:
    with await connect() as conn:
        await conn.send(b"port/sethub 1\r\n\n# nothing\nport/sethub 0\n")
        answers = "1000 Success\n" + PROMPT + PROMPT + PROMPT + "1000 Success\n" + PROMPT
        assert await read_exactly(conn, answers) == answers


async def test_the_server_takes_a_line_without_newline_after_a_pause(connect: Connect) -> None:
    with await connect() as conn:
        await conn.send(b"port/sethub 2")  # vdeterm's way: no newline
        answer = "1022 Invalid argument: port/sethub takes 1 (hub) or 0 (switch)\n" + PROMPT
        assert await read_exactly(conn, answer) == answer


async def test_logout_closes_the_session_and_skips_the_rest(
    switch: FakeSwitch, connect: Connect
) -> None:
    with await connect() as conn:
        await conn.send(b"logout\nport/sethub 1\n")
        with trio.fail_after(5):
            assert await conn.recv(100) == b"9999 END OF SESSION\n"
            assert await conn.recv(100) == b""
    assert not switch.fabric.hub and switch.shutdowns == 0


async def test_shutdown_stops_the_switch_after_the_answer(
    switch: FakeSwitch, connect: Connect
) -> None:
    with await connect() as conn:
        await conn.send(b"shutdown\n")
        with trio.fail_after(5):
            assert (
                await conn.recv(200)
                == (
                    "0000 DATA END WITH '.'\n"
                    f"shutting down: pid {os.getpid()} stops and removes its socket files\n"
                    ".\n9999 END OF SESSION\n"
                ).encode()
            )
            assert await conn.recv(100) == b""
    await trio.testing.wait_all_tasks_blocked()
    assert switch.shutdowns == 1


async def test_a_line_too_long_ends_the_session(connect: Connect) -> None:
    with await connect() as conn:
        await conn.send(b"help " + b"x" * protocol.MAX_LINE + b"\n")
        with trio.fail_after(5):
            answer = await conn.recv(200)
            assert await conn.recv(100) == b""
    assert (
        answer
        == (
            f"1007 Argument list too long: command line longer than {protocol.MAX_LINE} bytes\n"
        ).encode()
    )


async def test_one_session_too_many_is_told_so(connect: Connect, tmp_path: Path) -> None:
    with await connect() as one, await connect() as two:
        extra = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        with extra:
            await extra.connect(str(tmp_path / "mgmt"))
            with trio.fail_after(5):
                assert (
                    await extra.recv(200) == b"1087 Too many users: at most 2 management sessions\n"
                )
        await two.send(b"port/sethub 1\n")
        assert await read_exactly(two, "1000 Success\n" + PROMPT) == "1000 Success\n" + PROMPT
        await one.send(b"logout\n")
        assert await read_exactly(one, "9999 END OF SESSION\n") == "9999 END OF SESSION\n"
        assert await one.recv(1) == b""
        await trio.testing.wait_all_tasks_blocked()
        with await connect() as three:  # one session ended: room for another
            await three.send(b"port/sethub 0\n")
            assert await read_exactly(three, "1000 Success\n" + PROMPT) == "1000 Success\n" + PROMPT


# --- bugs found by these tests ------------------------------------------------------------


@pytest.mark.parametrize("line", ["vlan/create ²", "port/setvlan 1 ²", "vlan/print ¹"])
async def test_a_superscript_digit_is_a_bad_vlan_not_a_crash(
    switch: FakeSwitch, s: Session, line: str
) -> None:
    switch.attach(1)
    assert (await failure(s, line)).startswith("1022 Invalid argument: VLAN must be")


async def test_resetting_every_counter_zeroes_every_total(switch: FakeSwitch, s: Session) -> None:
    switch.unknown = 3
    await ask(s, "port/resetcounter")
    drops = (await ask_json(s, "showinfo"))["totals"]["drops"]
    assert not any(drops.values()), drops


async def test_a_command_that_fails_unexpectedly_answers_an_error_and_the_switch_goes_on(
    s: Session, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in one command (here: a handler that raises KeyError) is one 1005 answer and one
    logged traceback, not the end of the management server and of the switch with it."""

    async def broken(session: Session, args: object) -> dict[str, object]:
        raise KeyError("no such thing")

    monkeypatch.setitem(COMMANDS, "showinfo", replace(COMMANDS["showinfo"], handler=broken))
    with caplog.at_level(logging.ERROR, logger="umlswitch.mgmt"):
        status = await failure(s, "showinfo")
    assert status.startswith("1005 Input/output error: internal error (KeyError: 'no such thing')")
    assert "internal error" in caplog.text and "Traceback" in caplog.text
    assert (await ask(s, "port/sethub 0")).ok  # the session goes on
