"""Impairment options of static ports (``-tap tap0,loss=1``): parsed beside each kind's own."""

from __future__ import annotations

import pytest

from umlswitch.config import parse_args
from umlswitch.fabric.impair import Impairment, PortImpairment
from umlswitch.ports.overlay.spec import VxlanSpec, VxvdeSpec
from umlswitch.ports.udp.spec import McastSpec, UcastSpec

LOSS_1 = Impairment(loss=1)


def test_a_tap_takes_impairment_options_after_its_name() -> None:
    config = parse_args(["-tap", "tap0,loss=1", "-tap", "tap1"])
    assert config.taps == ("tap0", "tap1")
    assert config.impair == (("tap:tap0", PortImpairment(LOSS_1, LOSS_1)),)


def test_a_tap_name_with_a_comma_stays_a_name() -> None:
    config = parse_args(["-tap", "a,b"])
    assert config.taps == ("a,b",) and config.impair == ()


def test_each_direction_on_its_own_over_both() -> None:
    config = parse_args(["-tap", "tap0,loss=1,out-delay=40ms,in-loss=2,seed=7"])
    assert config.impair == (
        (
            "tap:tap0",
            PortImpairment(Impairment(loss=2, seed=7), Impairment(loss=1, delay=0.04, seed=7)),
        ),
    )


@pytest.mark.parametrize(
    ("argv", "name", "spec"),
    [
        (["-mcast", "loss=1"], "mcast:239.192.168.1:1102", McastSpec()),
        (
            ["-mcast", "239.1.2.3:5000,loss=1,ttl=2"],
            "mcast:239.1.2.3:5000",
            McastSpec(group="239.1.2.3", port=5000, ttl=2),
        ),
        (
            ["-ucast", "1102:127.0.0.1:1103,loss=1,bind=127.0.0.1"],
            "ucast:1102->127.0.0.1:1103",
            UcastSpec(1102, "127.0.0.1", 1103, bind="127.0.0.1"),
        ),
        (
            ["--vxlan", "42@239.1.1.1,loss=1,ttl=3"],
            "vxlan:42@239.1.1.1:4789",
            VxlanSpec(vni=42, group="239.1.1.1", ttl=3),
        ),
        (["--vxvde", "loss=1"], "vxvde:1@239.0.0.1:14789", VxvdeSpec()),
    ],
)
def test_udp_and_overlay_ports_take_them_among_their_options(
    argv: list[str], name: str, spec: object
) -> None:
    config = parse_args(argv)
    specs = (*config.mcast, *config.ucast, *config.vxlan, *config.vxvde)
    assert specs == (spec,)
    assert config.impair == ((name, PortImpairment(LOSS_1, LOSS_1)),)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-tap", "tap0,los=1"], "only VLAN and impairment options"),
        (["-tap", "tap0,loss=1,loss=2"], "given twice"),
        (["-mcast", "reorder=5"], "reorder needs a delay"),
        (["-ucast", "1102:127.0.0.1:1103,delay=40"], "duration with a unit"),
        (["--vxlan", "42@239.1.1.1,rate=fast"], "rate="),
    ],
)
def test_bad_impairment_options_are_command_line_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
