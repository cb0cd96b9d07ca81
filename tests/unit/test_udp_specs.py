"""Case tables for the -mcast and -ucast option values, and how they reach SwitchConfig."""

from __future__ import annotations

import pytest

from umlswitch.config import parse_args
from umlswitch.ports.udp.spec import McastSpec, UcastSpec, conflicts, parse_mcast, parse_ucast

UML_DEFAULT = McastSpec("239.192.168.1", 1102, ttl=1, interface=None)


@pytest.mark.parametrize(
    "text, spec",
    [
        ("", UML_DEFAULT),
        ("239.192.168.1:1102", UML_DEFAULT),
        ("239.1.2.3:5000", McastSpec("239.1.2.3", 5000)),
        ("239.1.2.3", McastSpec("239.1.2.3", 1102)),
        ("224.0.0.251:5353,ttl=4", McastSpec("224.0.0.251", 5353, ttl=4)),
        ("239.1.2.3:5000,if=192.0.2.2", McastSpec("239.1.2.3", 5000, interface="192.0.2.2")),
        ("239.1.2.3:5000,if=10.0.0.1,ttl=0", McastSpec("239.1.2.3", 5000, 0, "10.0.0.1")),
        ("ttl=2", McastSpec(ttl=2)),
        (",ttl=2", McastSpec(ttl=2)),
        (",if=127.0.0.1", McastSpec(interface="127.0.0.1")),
    ],
)
def test_mcast_specs(text, spec):
    assert parse_mcast(text) == spec


@pytest.mark.parametrize(
    "text, message",
    [
        ("10.0.0.1:1102", "10.0.0.1 is not a multicast group"),
        ("255.255.255.255:1102", "is not a multicast group"),
        ("ff02::1:1102", "must be an IPv4 address"),
        ("mygroup:1102", "must be an IPv4 address"),
        ("239.1.2.3:0", "from 1 to 65535, not '0'"),
        ("239.1.2.3:65536", "from 1 to 65535"),
        ("239.1.2.3:", "not ''"),
        ("239.1.2.3:x", "not 'x'"),
        ("239.1.2.3:1102,ttl=256", "ttl must be a number from 0 to 255"),
        ("239.1.2.3:1102,ttl=-1", "ttl must be a number from 0 to 255"),
        ("239.1.2.3:1102,ttl=", "expected ttl=... or if=..."),
        ("239.1.2.3:1102,2", "expected ttl=... or if=..."),
        ("239.1.2.3:1102,loop=0", "unknown option 'loop'"),
        ("239.1.2.3:1102,ttl=1,ttl=2", "ttl= given twice"),
        ("239.1.2.3:1102,if=eth0", "if= (the interface's local address) must be an IPv4 address"),
    ],
)
def test_bad_mcast_specs(text, message):
    with pytest.raises(ValueError) as info:
        parse_mcast(text)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "text, spec",
    [
        ("1102:127.0.0.1:1103", UcastSpec(1102, "127.0.0.1", 1103)),
        ("1:10.0.0.2:65535", UcastSpec(1, "10.0.0.2", 65535)),
        ("1102:any:1103", UcastSpec(1102, "any", 1103)),
        ("1102:ANY:1103", UcastSpec(1102, "any", 1103)),
        ("1102:peer-host.example:1103", UcastSpec(1102, "peer-host.example", 1103)),
        ("1102:localhost:1103,bind=127.0.0.1", UcastSpec(1102, "localhost", 1103, "127.0.0.1")),
    ],
)
def test_ucast_specs(text, spec):
    assert parse_ucast(text) == spec


@pytest.mark.parametrize(
    "text, message",
    [
        ("1102", "expected LOCALPORT:REMOTEHOST:REMOTEPORT"),
        ("1102:127.0.0.1", "expected LOCALPORT:REMOTEHOST:REMOTEPORT"),
        ("1102::1103", "expected LOCALPORT:REMOTEHOST:REMOTEPORT"),
        ("1102:::1:1103", "expected LOCALPORT:REMOTEHOST:REMOTEPORT"),
        ("0:127.0.0.1:1103", "LOCALPORT must be a UDP port number from 1 to 65535, not '0'"),
        ("1102:127.0.0.1:70000", "REMOTEPORT must be a UDP port number"),
        ("1102:127.0.0.1:http", "REMOTEPORT must be a UDP port number"),
        ("1102:10.0.0.256:1103", "REMOTEHOST must be an IPv4 address, a host name or 'any'"),
        ("1102:bad_host!:1103", "REMOTEHOST must be an IPv4 address, a host name or 'any'"),
        ("1102:127.0.0.1:1103,bind=lo", "bind= must be an IPv4 address"),
        ("1102:127.0.0.1:1103,ttl=2", "unknown option 'ttl' (known: bind)"),
    ],
)
def test_bad_ucast_specs(text, message):
    with pytest.raises(ValueError) as info:
        parse_ucast(text)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "spec, name",
    [
        (McastSpec(), "mcast:239.192.168.1:1102"),
        (UcastSpec(1102, "127.0.0.1", 1103), "ucast:1102->127.0.0.1:1103"),
        (UcastSpec(1102, "any", 1103, "10.0.0.1"), "ucast:1102->any:1103"),
    ],
)
def test_port_names(spec, name):
    assert spec.name == name


@pytest.mark.parametrize("spec", [McastSpec(), McastSpec("239.1.1.1", 9, 3, "10.0.0.1")])
def test_mcast_spec_text_round_trips(spec):
    assert parse_mcast(str(spec)) == spec


@pytest.mark.parametrize(
    "spec", [UcastSpec(1102, "127.0.0.1", 1103), UcastSpec(5, "any", 6, "10.0.0.1")]
)
def test_ucast_spec_text_round_trips(spec):
    assert parse_ucast(str(spec)) == spec


@pytest.mark.parametrize(
    "mcast, ucast, message",
    [
        ([McastSpec(), McastSpec("239.192.168.1", 1103)], [], None),
        ([McastSpec(), McastSpec("239.192.168.2", 1102)], [], None),
        ([McastSpec(), McastSpec(ttl=5)], [], "-mcast 239.192.168.1:1102 is given twice"),
        ([], [UcastSpec(1, "a", 2), UcastSpec(3, "a", 2)], None),
        ([], [UcastSpec(1, "a", 2, "10.0.0.1"), UcastSpec(1, "b", 2, "10.0.0.2")], None),
        ([], [UcastSpec(1, "a", 2), UcastSpec(1, "b", 3)], "receive on local UDP port 1"),
        ([], [UcastSpec(1, "a", 2, "10.0.0.1"), UcastSpec(1, "b", 3)], "local UDP port 1"),
        ([], [UcastSpec(1, "a", 2, "10.0.0.1"), UcastSpec(1, "b", 3, "10.0.0.1")], "port 1"),
    ],
)
def test_conflicts(mcast, ucast, message):
    found = conflicts(mcast, ucast)
    if message is None:
        assert found is None
    else:
        assert found is not None and message in found


def test_options_reach_the_config():
    config = parse_args(
        ["-mcast", "-ucast", "1102:127.0.0.1:1103", "--mcast", "239.9.9.9:7", "--ucast=5:any:6"]
    )
    assert config.mcast == (UML_DEFAULT, McastSpec("239.9.9.9", 7))
    assert config.ucast == (UcastSpec(1102, "127.0.0.1", 1103), UcastSpec(5, "any", 6))
    assert config.absolute().mcast == config.mcast


def test_no_udp_ports_by_default():
    config = parse_args([])
    assert config.mcast == () and config.ucast == ()


def test_mcast_without_value_before_another_option():
    config = parse_args(["-mcast", "-hub"])
    assert config.mcast == (UML_DEFAULT,) and config.hub


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-mcast", "10.1.1.1:1102"], "argument -mcast/--mcast: 10.1.1.1 is not a multicast group"),
        (["-ucast"], "argument -ucast/--ucast: expected one argument"),
        (["-ucast", "1102"], "argument -ucast/--ucast: expected LOCALPORT:REMOTEHOST:REMOTEPORT"),
        (["-mcast", "-mcast"], "-mcast 239.192.168.1:1102 is given twice"),
        (["-ucast", "1:any:2", "-ucast", "1:any:3"], "two ports receive on local UDP port 1"),
    ],
)
def test_bad_command_lines_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
