"""Command-line parsing: every Debian uml_switch form, the extra options, and the errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from umlswitch import __version__
from umlswitch.config import SwitchConfig, parse_args

DEFAULTS = SwitchConfig()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param([], {}, id="no-arguments"),
        pytest.param(["-unix", "/run/sw.ctl"], {"control_path": "/run/sw.ctl"}, id="unix-ctl"),
        pytest.param(
            ["-unix", "ctl", "data"],
            {"control_path": "ctl", "data_path": "data"},
            id="unix-ctl-data",
        ),
        pytest.param(["-hub"], {"hub": True}, id="hub"),
        pytest.param(["-tap", "tap0"], {"taps": ("tap0",)}, id="tap"),
        pytest.param(["-daemon"], {"daemon": True}, id="daemon"),
        pytest.param(
            ["-compat-v0"],
            {"compat_v0": True, "data_path": "/tmp/uml.data"},
            id="compat-v0-default-data",
        ),
        pytest.param(
            ["-compat-v0", "-unix", "ctl", "data"],
            {"compat_v0": True, "control_path": "ctl", "data_path": "data"},
            id="compat-v0-unix-ctl-data",
        ),
        pytest.param(
            ["-unix", "ctl", "-compat-v0"],
            {"compat_v0": True, "control_path": "ctl", "data_path": "/tmp/uml.data"},
            id="compat-v0-after-unix-ctl",
        ),
        pytest.param(
            ["-unix", "/var/run/uml-utilities/uml_switch.ctl", "-hub", "-tap", "tap0", "-daemon"],
            {
                "control_path": "/var/run/uml-utilities/uml_switch.ctl",
                "hub": True,
                "taps": ("tap0",),
                "daemon": True,
            },
            id="debian-init-style",
        ),
        pytest.param(
            ["-daemon", "-tap", "tap1", "-hub", "-unix", "c", "d"],
            {"control_path": "c", "data_path": "d", "hub": True, "taps": ("tap1",), "daemon": True},
            id="any-order",
        ),
        pytest.param(
            ["-hub", "-unix", "c", "-tap", "tap1"],
            {"control_path": "c", "hub": True, "taps": ("tap1",)},
            id="unix-in-the-middle",
        ),
        pytest.param(
            ["--unix", "c", "d", "--hub", "--tap", "tap0", "--daemon", "--compat-v0"],
            {
                "control_path": "c",
                "data_path": "d",
                "hub": True,
                "taps": ("tap0",),
                "daemon": True,
                "compat_v0": True,
            },
            id="long-spellings",
        ),
        pytest.param(["--pidfile", "/run/sw.pid"], {"pidfile": "/run/sw.pid"}, id="pidfile"),
        pytest.param(["--aging", "30"], {"aging": 30.0}, id="aging"),
        pytest.param(["--aging", "0.5"], {"aging": 0.5}, id="aging-fraction"),
        pytest.param(["--max-macs", "100"], {"max_macs": 100}, id="max-macs"),
        pytest.param(
            ["--max-macs-per-port", "16"], {"max_macs_per_port": 16}, id="max-macs-per-port"
        ),
        pytest.param(["--max-frame", "9018"], {"max_frame": 9018}, id="max-frame-jumbo"),
        pytest.param(["--max-frame", "65535"], {"max_frame": 65535}, id="max-frame-65535"),
        pytest.param(["--max-frame", "64"], {"max_frame": 64}, id="max-frame-64"),
        pytest.param(["--log-level", "debug"], {"log_level": "debug"}, id="log-level"),
        pytest.param(["--log-file", "/tmp/sw.log"], {"log_file": "/tmp/sw.log"}, id="log-file"),
        pytest.param(
            ["--handshake-timeout", "0.3"], {"handshake_timeout": 0.3}, id="handshake-timeout"
        ),
        pytest.param(
            ["-hub", "--aging", "60", "-unix", "ctl", "--max-macs", "10", "-daemon"],
            {"hub": True, "aging": 60.0, "control_path": "ctl", "max_macs": 10, "daemon": True},
            id="old-and-new-mixed",
        ),
    ],
)
def test_parse(argv: list[str], expected: dict[str, object]) -> None:
    config = parse_args(argv)
    assert config == SwitchConfig(**expected)  # type: ignore[arg-type]


def test_defaults_are_uml_switchs() -> None:
    config = parse_args([])
    assert config.control_path == "/tmp/uml.ctl"
    assert config.data_path is None
    assert not config.hub
    assert config.taps == ()
    assert config.max_frame == 1518
    assert config.aging == 300.0


def test_several_taps_are_kept_in_order() -> None:
    assert parse_args(["-tap", "tap0", "--tap", "tap1"]).taps == ("tap0", "tap1")


def test_absolute_makes_every_path_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = parse_args(
        ["-unix", "ctl", "data", "--pidfile", "p.pid", "--log-file", "l.log"]
    ).absolute()
    assert config.control_path == f"{tmp_path}/ctl"
    assert config.data_path == f"{tmp_path}/data"
    assert config.pidfile == f"{tmp_path}/p.pid"
    assert config.log_file == f"{tmp_path}/l.log"


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        pytest.param(["-bogus"], "-bogus", id="unknown-single-dash"),
        pytest.param(["--bogus"], "--bogus", id="unknown-long"),
        pytest.param(["stray"], "stray", id="stray-positional"),
        pytest.param(["-unix", "a", "b", "c"], "-unix", id="unix-three-paths"),
        pytest.param(["-unix"], "-unix", id="unix-without-path"),
        pytest.param(["-tap"], "-tap", id="tap-without-device"),
        pytest.param(["-unix", "same", "same"], "differ", id="data-equals-control"),
        pytest.param(["--max-frame", "65536"], "--max-frame", id="max-frame-65536"),
        pytest.param(["--max-frame", "10"], "--max-frame", id="max-frame-10"),
        pytest.param(["--max-frame", "63"], "--max-frame", id="max-frame-63"),
        pytest.param(["--max-frame", "big"], "--max-frame", id="max-frame-not-a-number"),
        pytest.param(["--aging", "0"], "--aging", id="aging-zero"),
        pytest.param(["--aging", "-5"], "--aging", id="aging-negative"),
        pytest.param(["--aging", "soon"], "--aging", id="aging-not-a-number"),
        pytest.param(["--max-macs", "0"], "--max-macs", id="max-macs-zero"),
        pytest.param(["--max-macs", "1.5"], "--max-macs", id="max-macs-fraction"),
        pytest.param(["--max-macs-per-port", "0"], "--max-macs-per-port", id="per-port-zero"),
        pytest.param(["--handshake-timeout", "0"], "--handshake-timeout", id="handshake-zero"),
        pytest.param(["--log-level", "loud"], "--log-level", id="log-level-unknown"),
        pytest.param(["--hu"], "--hu", id="no-abbreviations"),
    ],
)
def test_bad_command_line_exits_2_with_one_error_line(
    argv: list[str], mentions: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc_info:
        parse_args(argv)
    assert exc_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1, err
    assert errors[0].startswith("umlswitch: error: ")
    assert mentions in errors[0]
    assert err.startswith("usage: umlswitch")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        parse_args(["--version"])
    assert exc_info.value.code == 0
    assert capsys.readouterr().out == f"umlswitch {__version__}\n"


def test_help_shows_the_uml_switch_forms(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        parse_args(["--help"])
    assert exc_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("-unix", "-hub", "-tap", "-daemon", "-compat-v0", "--max-frame"):
        assert option in out
