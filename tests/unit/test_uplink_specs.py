"""Case tables for --stream-connect, --slirp, --slirp-net and --slirp-forward: the option
values, how they reach SwitchConfig, the helper's slirp:// URL, the link's back-off."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

from umlswitch.config import parse_args
from umlswitch.errors import StartupError
from umlswitch.fabric.impair import Impairment
from umlswitch.fabric.vlan import Membership
from umlswitch.ports.slirp.helper import find_program
from umlswitch.ports.slirp.private import remove_stale_directories
from umlswitch.ports.slirp.spec import (
    Forward,
    SlirpSpec,
    parse_forward,
    parse_slirp_net,
    slirp_problem,
    slirp_url,
)
from umlswitch.ports.stream.link import Backoff
from umlswitch.ports.stream.spec import StreamSpec, parse_stream_connect


@pytest.mark.parametrize(
    "text, spec",
    [
        ("unix:/run/passt.sock", StreamSpec("unix", path="/run/passt.sock")),
        ("tcp:127.0.0.1:5555", StreamSpec("tcp", host="127.0.0.1", port=5555)),
        ("tcp:switch2.example:5555", StreamSpec("tcp", host="switch2.example", port=5555)),
        ("tcp:[::1]:5555", StreamSpec("tcp", host="::1", port=5555)),
    ],
)
def test_stream_connect_specs(text: str, spec: StreamSpec) -> None:
    assert parse_stream_connect(text) == spec


@pytest.mark.parametrize(
    "text, message",
    [
        ("tcp:5555", "give the peer's address and port"),
        ("tcp:[]:5555", "is not a host name or an address"),
        ("tcp:a,b:5555", "is not a host name or an address"),
        ("tcp:127.0.0.1:0", "from 1 to 65535"),
        ("tcp:127.0.0.1:x", "from 1 to 65535"),
        ("unix:", "needs a socket path"),
        ("udp:1.2.3.4:5", "expected unix:PATH or tcp:HOST:PORT"),
        ("/run/passt.sock", "expected unix:PATH or tcp:HOST:PORT"),
    ],
)
def test_bad_stream_connect_specs(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_stream_connect(text)


def test_stream_connect_options_reach_the_config_with_their_vlans_and_impairment() -> None:
    config = parse_args(
        [
            "--stream-connect",
            "tcp:10.0.0.2:5555,vlan=10,out-loss=1",
            "--stream-connect",
            "unix:passt.sock",
        ]
    )
    assert config.stream_connects == (
        StreamSpec("tcp", host="10.0.0.2", port=5555),
        StreamSpec("unix", path="passt.sock"),
    )
    assert dict(config.vlans)["stream-connect:tcp:10.0.0.2:5555"] == Membership(10)
    impaired = dict(config.impair)["stream-connect:tcp:10.0.0.2:5555"]
    assert impaired.outbound == Impairment(loss=1.0) and impaired.inbound is None
    absolute = config.absolute().stream_connects[1]
    assert absolute.path == str(Path("passt.sock").resolve())


@pytest.mark.parametrize(
    "text, router",
    [
        ("10.0.2.0/24", "10.0.2.2/24"),
        ("192.168.50.0/24", "192.168.50.2/24"),
        ("10.1.0.0/16", "10.1.0.2/16"),
        ("10.1.0.1/16", "10.1.0.1/16"),  # an address that is not the network's: the router
    ],
)
def test_slirp_nets(text: str, router: str) -> None:
    assert parse_slirp_net(text) == ipaddress.IPv4Interface(router)


@pytest.mark.parametrize(
    "text, message",
    [
        ("10.0.2.0", "give the prefix length"),
        ("10.0.2.0/30", "from /8 to /27"),
        ("10.0.2.0/33", "expected an IPv4 network"),
        ("fd00::/64", "expected an IPv4 network"),
    ],
)
def test_bad_slirp_nets(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_slirp_net(text)


@pytest.mark.parametrize(
    "text, forward",
    [
        ("2222:10.0.2.15:22", Forward("127.0.0.1", 2222, "10.0.2.15", 22)),
        ("0.0.0.0:8080:10.0.2.16:80", Forward("0.0.0.0", 8080, "10.0.2.16", 80)),
    ],
)
def test_slirp_forwards(text: str, forward: Forward) -> None:
    assert parse_forward(text) == forward


@pytest.mark.parametrize(
    "text, message",
    [
        ("2222:22", "expected \\[HOSTADDR:\\]HOSTPORT:GUESTADDR:GUESTPORT"),
        ("0:10.0.2.15:22", "host port must be a number from 1 to 65535"),
        ("2222:guest:22", "guest address must be an IPv4 address"),
        ("2222:10.0.2.15:99999", "guest port must be"),
    ],
)
def test_bad_slirp_forwards(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_forward(text)


def test_the_helper_url_gives_router_dhcp_and_dns_of_the_network() -> None:
    spec = SlirpSpec(
        parse_slirp_net("10.9.0.0/16"),
        (parse_forward("2222:10.9.0.15:22"), parse_forward("8080:10.9.0.16:80")),
    )
    assert slirp_url(spec) == (
        "slirp:///addr=10.9.0.2\\/16/dhcp=10.9.0.15/vnameserver=10.9.0.3"
        "/tcpfwd=127.0.0.1:2222:10.9.0.15:22,127.0.0.1:8080:10.9.0.16:80"
    )
    assert slirp_url(SlirpSpec(), mtu=1400) == (
        "slirp:///addr=10.0.2.2\\/24/dhcp=10.0.2.15/vnameserver=10.0.2.3/mtu=1400"
    )


def test_slirp_options_reach_the_config() -> None:
    config = parse_args(
        ["--slirp", "--slirp-net", "10.5.0.0/24", "--slirp-forward", "80:10.5.0.15:80"]
    )
    assert config.slirp == SlirpSpec(
        ipaddress.IPv4Interface("10.5.0.2/24"), (Forward("127.0.0.1", 80, "10.5.0.15", 80),)
    )
    assert parse_args([]).slirp is None
    assert parse_args(["--slirp"]).slirp == SlirpSpec()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--slirp-net", "10.5.0.0/24"], "add --slirp"),
        (["--slirp", "--slirp-forward", "80:10.9.9.15:80"], "10.9.9.15 is not in --slirp-net"),
        (
            ["--slirp", "--slirp-forward", "80:10.0.2.15:80", "--slirp-forward", "80:10.0.2.16:80"],
            "host port 80 is forwarded twice",
        ),
    ],
)
def test_slirp_options_that_do_not_fit_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_slirp_problem_is_none_for_a_good_spec() -> None:
    assert slirp_problem(SlirpSpec(forwards=(parse_forward("22:10.0.2.15:22"),))) is None


def test_a_missing_helper_or_plugin_names_the_debian_packages(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="apt install vdeplug libvdeplug-slirp"):
        find_program("no-such-vde-plug-program")
    with pytest.raises(StartupError, match=r"the slirp plugin \(libvdeplug_slirp.so\)"):
        find_program("sh", (str(tmp_path),))


def test_backoff_doubles_from_1_to_30_seconds_and_starts_again_on_reset() -> None:
    backoff = Backoff()
    assert [backoff.delay() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    backoff.reset()
    assert backoff.delay() == 1


def test_private_directories_of_switches_that_are_gone_are_removed(tmp_path: Path) -> None:
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    for name in (f"umlswitch-slirp-{dead.pid}-abc", f"umlswitch-slirp-{os.getpid()}-abc"):
        (tmp_path / name).mkdir()
    (tmp_path / "umlswitch-slirp-other").mkdir()
    served = tmp_path / f"umlswitch-slirp-{dead.pid}-daemon"  # made before -daemon forked
    served.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(served / "ctl"))
        listener.listen()
        removed = remove_stale_directories(str(tmp_path), owners={os.geteuid()})
    assert removed == [str(tmp_path / f"umlswitch-slirp-{dead.pid}-abc")]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"umlswitch-slirp-{os.getpid()}-abc", "umlswitch-slirp-other", served.name]
    )
