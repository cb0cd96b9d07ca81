"""Case tables for the VXLAN header, the --vxlan and --vxvde option values, and the VTEP map."""

from __future__ import annotations

import pytest

from umlswitch import counters
from umlswitch.config import parse_args
from umlswitch.ports.overlay.spec import (
    VxlanSpec,
    VxvdeSpec,
    overlay_conflicts,
    parse_vxlan,
    parse_vxvde,
)
from umlswitch.ports.overlay.vtepmap import VtepMap
from umlswitch.ports.overlay.wire import BadHeader, pack_header, parse_header

# --- the header -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vni, wire",
    [
        (0, "08 00 00 00 00 00 00 00"),
        (1, "08 00 00 00 00 00 01 00"),
        (42, "08 00 00 00 00 00 2a 00"),
        (0x123456, "08 00 00 00 12 34 56 00"),
        (0xFFFFFF, "08 00 00 00 ff ff ff 00"),
    ],
)
def test_header_round_trip(vni, wire):
    header = pack_header(vni)
    assert header.hex(" ") == wire
    assert parse_header(header + b"frame", 13) == vni
    assert parse_header(bytearray(header), 8) == vni  # header only: vxvde's goodbye


@pytest.mark.parametrize("vni", [-1, 1 << 24])
def test_header_vni_out_of_range(vni):
    with pytest.raises(ValueError, match="from 0 to 16777215"):
        pack_header(vni)


@pytest.mark.parametrize(
    "wire, size, reason",
    [
        ("", 0, counters.VXLAN_SHORT),
        ("08 00 00 00 00 00 2a", 7, counters.VXLAN_SHORT),
        ("08 00 00 00 00 00 2a 00", 7, counters.VXLAN_SHORT),  # the size is what counts
        ("00 00 00 00 00 00 2a 00", 8, counters.VXLAN_BAD_FLAGS),  # I flag clear
        ("0c 00 00 00 00 00 2a 00", 8, counters.VXLAN_BAD_FLAGS),  # GPE's P bit
        ("88 00 00 00 00 00 2a 00", 8, counters.VXLAN_BAD_FLAGS),  # GBP's G bit
        ("08 00 00 01 00 00 2a 00", 8, counters.VXLAN_BAD_FLAGS),  # reserved byte 3
        ("08 00 00 00 00 00 2a 01", 8, counters.VXLAN_BAD_FLAGS),  # reserved byte 7
    ],
)
def test_bad_headers(wire, size, reason):
    data = bytes.fromhex(wire).ljust(64, b"\0")
    result = parse_header(data, size)
    assert isinstance(result, BadHeader)
    assert result.reason == reason


def test_bad_flags_detail_shows_the_header():
    result = parse_header(bytes.fromhex("0c000000 00002a00"), 8)
    assert isinstance(result, BadHeader)
    assert "0c 00 00 00 00 00 2a 00" in result.detail


# --- --vxlan ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, spec",
    [
        ("42@239.1.1.1", VxlanSpec(42, group="239.1.1.1")),
        ("42@239.1.1.1:8472", VxlanSpec(42, group="239.1.1.1", port=8472)),
        ("0@192.0.2.2", VxlanSpec(0, peers=("192.0.2.2",))),
        ("16777215@192.0.2.2", VxlanSpec(16777215, peers=("192.0.2.2",))),
        ("42@192.0.2.2+192.0.2.3", VxlanSpec(42, peers=("192.0.2.2", "192.0.2.3"))),
        (
            "42@192.0.2.2+192.0.2.3:4790,local=192.0.2.1,ttl=8",
            VxlanSpec(42, None, ("192.0.2.2", "192.0.2.3"), 4790, "192.0.2.1", 8),
        ),
        ("7@239.1.1.1,ttl=3,local=10.0.0.1", VxlanSpec(7, "239.1.1.1", (), 4789, "10.0.0.1", 3)),
        ("042@192.0.2.2", VxlanSpec(42, peers=("192.0.2.2",))),
    ],
)
def test_vxlan_specs(text, spec):
    assert parse_vxlan(text) == spec
    assert parse_vxlan(str(spec)) == spec  # str() gives an equivalent option value back


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "expected VNI@DEST[:PORT]"),
        ("42", "expected VNI@DEST[:PORT]"),
        ("42@", "expected VNI@DEST[:PORT]"),
        ("@192.0.2.2", "expected VNI@DEST[:PORT]"),
        ("x@192.0.2.2", "the VNI must be a number from 0 to 16777215, not 'x'"),
        ("16777216@192.0.2.2", "from 0 to 16777215, not '16777216'"),
        ("-1@192.0.2.2", "not '-1'"),
        ("42@192.0.2.2:0", "the VXLAN port must be a UDP port number from 1 to 65535"),
        ("42@192.0.2.2:", "not ''"),
        ("42@:4789", "DEST is a group or peers joined by '+'"),
        ("42@192.0.2.2++192.0.2.3", "DEST is a group or peers joined by '+'"),
        ("42@hostb", "each peer (or the group) must be an IPv4 address, not 'hostb'"),
        ("42@239.1.1.1+239.1.1.2", "one multicast group or unicast peers, not both"),
        ("42@192.0.2.2+239.1.1.1", "one multicast group or unicast peers, not both"),
        ("42@0.0.0.0", "0.0.0.0 cannot be a VXLAN peer"),
        ("42@255.255.255.255", "cannot be a VXLAN peer"),
        ("42@192.0.2.2+192.0.2.2", "peer 192.0.2.2 is given twice"),
        ("42@192.0.2.2,192.0.2.3", "expected local=... or ttl=..., not '192.0.2.3'"),
        ("42@192.0.2.2,port=5", "unknown option 'port'"),
        ("42@192.0.2.2,ttl=0", "ttl must be a number from 1 to 255"),
        ("42@192.0.2.2,ttl=256", "ttl must be a number from 1 to 255"),
        ("42@192.0.2.2,local=eth0", "local= (a local address) must be an IPv4 address"),
        ("42@192.0.2.2,local=239.1.1.1", "local= must be an address of this host"),
        ("42@192.0.2.2,local=0.0.0.0", "local= must be an address of this host"),
        ("42@192.0.2.2,ttl=2,ttl=3", "ttl= given twice"),
    ],
)
def test_bad_vxlan_specs(text, message):
    with pytest.raises(ValueError) as info:
        parse_vxlan(text)
    assert message in str(info.value)


def test_vxlan_names():
    assert parse_vxlan("42@239.1.1.1").name == "vxlan:42@239.1.1.1:4789"
    assert parse_vxlan("5@192.0.2.2+192.0.2.3:99").name == "vxlan:5@192.0.2.2+192.0.2.3:99"


# --- --vxvde ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, spec",
    [
        ("", VxvdeSpec("239.0.0.1", 14789, 1, 1)),
        ("239.0.0.1", VxvdeSpec()),
        ("239.5.5.5", VxvdeSpec(group="239.5.5.5")),
        ("vni=42", VxvdeSpec(vni=42)),
        (",port=5000", VxvdeSpec(port=5000)),
        ("239.5.5.5,port=5000,vni=7,ttl=2", VxvdeSpec("239.5.5.5", 5000, 7, 2)),
    ],
)
def test_vxvde_specs(text, spec):
    assert parse_vxvde(text) == spec
    assert parse_vxvde(str(spec)) == spec


@pytest.mark.parametrize(
    "text, message",
    [
        ("10.0.0.1", "10.0.0.1 is not a multicast group"),
        ("239.0.0.1:14789", "the vxvde group must be an IPv4 address"),
        ("port=0", "port= must be a UDP port number"),
        ("vni=16777216", "the VNI must be a number from 0 to 16777215"),
        ("ttl=0", "ttl must be a number from 1 to 255"),
        ("grp=users", "unknown option 'grp'"),
    ],
)
def test_bad_vxvde_specs(text, message):
    with pytest.raises(ValueError) as info:
        parse_vxvde(text)
    assert message in str(info.value)


# --- conflicts and the command line ----------------------------------------------------------


@pytest.mark.parametrize(
    "vxlan, vxvde, message",
    [
        (["42@239.1.1.1", "43@239.1.1.1", "42@192.0.2.2:4790"], [], None),
        (["42@239.1.1.1", "43@192.0.2.2"], ["", "vni=2", "239.0.0.2"], None),
        (["42@239.1.1.1", "42@192.0.2.2"], [], "VNI 42 on UDP port 4789 is given twice"),
        (["42@192.0.2.2,ttl=2", "43@192.0.2.3"], [], "give them the same local= and ttl="),
        (["42@192.0.2.2,local=192.0.2.1", "43@192.0.2.3"], [], "the same local= and ttl="),
        ([], ["", "239.0.0.1,vni=1"], "--vxvde 239.0.0.1,port=14789,vni=1 is given twice"),
        (["42@192.0.2.2:14789"], [""], "--vxvde port=14789 is also a --vxlan port"),
    ],
)
def test_overlay_conflicts(vxlan, vxvde, message):
    result = overlay_conflicts([parse_vxlan(t) for t in vxlan], [parse_vxvde(t) for t in vxvde])
    assert result == message or (message is not None and result is not None and message in result)


def test_command_line(capsys):
    argv = ["--vxlan", "42@192.0.2.2+192.0.2.3", "--vxlan", "43@239.1.1.1"]
    config = parse_args([*argv, "--vxvde", "--vxvde", "vni=2"])
    assert config.vxlan == (parse_vxlan("42@192.0.2.2+192.0.2.3"), parse_vxlan("43@239.1.1.1"))
    assert config.vxvde == (VxvdeSpec(), VxvdeSpec(vni=2))
    assert parse_args([]).vxlan == () and parse_args([]).vxvde == ()
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--vxlan", "42@192.0.2.2", "--vxlan", "42@192.0.2.3"])
    assert exit_info.value.code == 2
    assert "VNI 42 on UDP port 4789 is given twice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--vxlan", "42@10.0.0.1,10.0.0.2"])
    assert "argument --vxlan: '42@10.0.0.1,10.0.0.2': expected" in capsys.readouterr().err


# --- the VTEP map -----------------------------------------------------------------------------

A = ("192.0.2.2", 4789)
B = ("192.0.2.3", 4789)
C = ("192.0.2.4", 4789)


def mac(n: int) -> bytes:
    return bytes([2, 0, 0, 0, n >> 8, n & 0xFF])


def test_learn_and_lookup():
    vteps = VtepMap()
    assert vteps.lookup(mac(1)) is None
    assert vteps.learn(mac(1), A, now=0.0) is True
    assert vteps.learn(mac(1), A, now=1.0) is False  # a refresh is not news
    assert vteps.learn(mac(2), B, now=1.0) is True
    assert (vteps.lookup(mac(1)), vteps.lookup(mac(2))) == (A, B)
    assert vteps.remote_macs() == {A: [mac(1)], B: [mac(2)]}
    assert len(vteps) == 2


def test_group_sources_are_never_learned():
    vteps = VtepMap()
    assert vteps.learn(b"\x01\x00\x5e\x00\x00\x01", A, 0.0) is False
    assert vteps.learn(b"\xff" * 6, A, 0.0) is False
    assert len(vteps) == 0 and vteps.remote_macs() == {}


def test_a_mac_moves_to_another_vtep_at_once():
    vteps = VtepMap()
    vteps.learn(mac(1), A, 0.0)
    assert vteps.learn(mac(1), B, 0.1) is True  # no hold-down: a migrated guest is followed
    assert vteps.lookup(mac(1)) == B
    assert vteps.remote_macs() == {B: [mac(1)]}  # A has nothing left and is forgotten


def test_aging():
    vteps = VtepMap(aging=300.0)
    vteps.learn(mac(1), A, 0.0)
    vteps.learn(mac(2), B, 100.0)
    vteps.learn(mac(1), A, 200.0)  # refreshed
    assert vteps.expire(399.0) == []
    assert vteps.expire(400.0) == [(mac(2), B)]
    assert vteps.lookup(mac(2)) is None and vteps.lookup(mac(1)) == A
    vteps.aging = 10.0  # the port follows the switch's --aging and hash/setexpire
    assert vteps.expire(210.0) == [(mac(1), A)]
    assert len(vteps) == 0 and vteps.remote_macs() == {}


def test_size_bound_evicts_from_the_vtep_with_the_most_entries():
    vteps = VtepMap(max_entries=4)
    vteps.learn(mac(1), A, 0.0)
    for n in range(100, 103):
        vteps.learn(mac(n), B, 1.0)
    assert len(vteps) == 4
    # B floods new source addresses: it loses its own oldest ones, A keeps its entry
    for n in range(103, 200):
        vteps.learn(mac(n), B, 2.0)
    assert len(vteps) == 4
    assert vteps.lookup(mac(1)) == A
    assert vteps.remote_macs()[B] == [mac(197), mac(198), mac(199)]
    vteps.max_entries = 5  # the port sets the switch's --max-macs when it starts
    vteps.learn(mac(300), C, 3.0)
    assert len(vteps) == 5 and vteps.lookup(mac(300)) == C
    with pytest.raises(ValueError):
        vteps.max_entries = 0


def test_vteps_are_remembered_only_while_they_have_addresses():
    vteps = VtepMap(max_entries=2)
    for n in range(1000):  # every address from another VTEP (a spoofing flood in a group)
        vteps.learn(mac(n), (f"10.{n >> 8}.{n & 0xFF}.1", 4789), float(n))
    assert len(vteps) == 2
    assert len(vteps.remote_macs()) == 2
    assert len(vteps._ids) == len(vteps._vteps) == 2


def test_goodbye_forgets_everything_behind_a_vtep():
    vteps = VtepMap()
    vteps.learn(mac(1), A, 0.0)
    vteps.learn(mac(2), A, 0.0)
    vteps.learn(mac(3), B, 0.0)
    assert vteps.forget(A) == 2
    assert vteps.forget(A) == 0
    assert vteps.forget(C) == 0
    assert vteps.lookup(mac(1)) is None and vteps.lookup(mac(3)) == B
    assert vteps.remote_macs() == {B: [mac(3)]}
    assert vteps.learn(mac(1), A, 1.0) is True  # a VTEP that comes back is learned again
