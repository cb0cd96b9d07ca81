"""umlswitch.testing tested from the outside: against umlswitch and against the C uml_switch."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Ether

from umlswitch.testing import (
    READY,
    FenceNotDelivered,
    SwitchProcess,
    attach,
    attach_sync,
    matches,
    run_switch,
    wait_until,
    wait_until_sync,
)

A, B, C = "02:00:00:00:0a:01", "02:00:00:00:0a:02", "02:00:00:00:0a:03"
BROADCAST = "ff:ff:ff:ff:ff:ff"


@pytest.fixture(params=["umlswitch", "uml_switch"])
def switch_ctl(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The control socket of a running switch: ours, then the C reference."""
    if request.param == "umlswitch":
        with SwitchProcess(directory=str(tmp_path)) as process:
            yield process.control_path
        return
    binary = shutil.which("uml_switch")
    if binary is None:
        pytest.skip("the C uml_switch is not installed (Debian package uml-utilities)")
    ctl = tmp_path / "c.ctl"
    proc = subprocess.Popen(
        [binary, "-unix", str(ctl)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_sync(ctl.exists, 10, "uml_switch creating its socket")
        yield str(ctl)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(5)


def test_learning_is_visible_from_outside(switch_ctl: str) -> None:
    with (
        attach_sync(switch_ctl, mac=A) as a,
        attach_sync(switch_ctl, mac=B) as b,
        attach_sync(switch_ctl, mac=C) as c,
    ):
        # Before A speaks, a frame to A is unknown unicast: flooded to everyone.
        b.send(b.ether(dst=A) / IP(dst="10.0.0.1") / ICMP())
        assert a.receive(match=ICMP)[Ether].src == B
        assert c.receive(match=ICMP)[Ether].dst == A
        # Once A has spoken, frames to A reach only A.
        a.send(a.ether(dst=BROADCAST) / ARP(psrc="10.0.0.1", hwsrc=A))
        heard_b, heard_c = a.fence(b, c)  # the ARP, and A learnt, before the fence
        assert [ARP in f for f in heard_b] == [ARP in f for f in heard_c] == [True]
        b.send(b.ether(dst=A) / IP(dst="10.0.0.1") / ICMP(seq=7))
        assert a.receive(match={"ICMP.seq": 7})[Ether].src == B
        assert b.fence(a, c) == [[], []]  # c got nothing of it (and a nothing more)


def test_source_mac_filled_in_and_raw_bytes(switch_ctl: str) -> None:
    with attach_sync(switch_ctl, mac=A) as a, attach_sync(switch_ctl, mac=B) as b:
        a.send(Ether(dst=BROADCAST) / ARP(pdst="10.0.0.2"))  # no src: the port's MAC is used
        frame = b.receive(match=ARP)
        assert frame.src == A
        raw = bytes.fromhex("ffffffffffff" + "020000000a02" + "88b5") + b"payload"
        b.send(raw)
        assert a.receive_bytes(match={"Ether.type": 0x88B5}) == raw


def test_receive_times_out_with_a_clear_error(switch_ctl: str) -> None:
    with attach_sync(switch_ctl, mac=A) as a, pytest.raises(TimeoutError, match="no matching"):
        a.receive(timeout=0.2)


def test_filters() -> None:
    arp_reply = Ether(src=A, dst=B) / ARP(op=2, psrc="10.0.0.1")
    assert matches(arp_reply, ARP)
    assert not matches(arp_reply, ICMP)
    assert matches(arp_reply, {"ARP.op": 2, "Ether.src": A.upper()})
    assert matches(arp_reply, {"psrc": "10.0.0.1"})
    assert not matches(arp_reply, {"ARP.op": 1})
    assert not matches(arp_reply, {"IP.src": "10.0.0.1"})
    assert matches(arp_reply, lambda p: p[ARP].op == 2)
    assert matches(arp_reply, None)


async def test_trio_api_against_an_in_process_switch() -> None:
    async with run_switch() as switch:
        async with attach(switch.control_path, mac=A) as a, attach(switch.control_path) as b:
            await a.send(a.ether() / ARP(psrc="10.0.0.1"))
            got = await b.receive(match=ARP)
            assert got.src == A
            await b.send(b.ether(dst=A) / IP() / ICMP())
            assert (await a.receive(match=ICMP)).dst == A
            assert switch.mac_table() == {A: 1, b.mac: 2}
            counters = switch.counters()
            assert counters["ports"][1]["rx_frames"] == 1
            assert counters["ports"][2]["tx_frames"] == 1
        # detached on exit
        await wait_until(lambda: switch.counters()["ports"] == {}, what="both ports detached")


async def test_the_plugin_fixture_gives_a_running_switch(umlswitch_switch) -> None:
    async with attach(umlswitch_switch.control_path) as a:
        assert len(umlswitch_switch.counters()["ports"]) == 1
        async with attach(umlswitch_switch.control_path) as b:
            assert await b.fence(a) == [[]]  # a new LAN: nothing but the fence


def test_the_plugin_attach_factory(umlswitch_attach, umlswitch_process) -> None:
    a, b = umlswitch_attach(mac=A), umlswitch_attach(mac=B)
    a.send(a.ether() / ARP())
    assert b.receive(match=ARP).src == A
    b.send(b"\x01" * 10)  # a runt
    wait_until_sync(
        lambda: umlswitch_process.counters()["ports"][2]["drops"]["runt"] == 1,
        what="the runt counted",
    )
    counters = umlswitch_process.counters()
    assert counters["ports"][1]["rx_frames"] == 1 and counters["ports"][2]["tx_frames"] == 1
    assert counters["ports"][2]["drops"]["runt"] == 1
    assert counters["info"]["macs"] == 1
    assert b.fence(a) == [[]]  # and it went nowhere


def test_a_fence_shows_what_arrived_and_proves_what_did_not(switch_ctl: str) -> None:
    """Against both switches: the frames sent before a fence are read up to it, and a frame the
    switch does not forward (one to the sender's own, learnt, MAC) is proven absent without
    waiting out a timeout."""
    with attach_sync(switch_ctl, mac=A) as a, attach_sync(switch_ctl, mac=B) as b:
        a.send(Ether(dst=BROADCAST) / b"first")
        a.send(Ether(dst=BROADCAST) / b"second")
        (before,) = a.fence(b)
        assert [bytes(p.payload) for p in before] == [b"first", b"second"]
        a.send(Ether(dst=A) / b"to myself")  # the switch learnt A on a's port: goes nowhere
        started = time.monotonic()
        assert a.fence(b) == [[]]
        assert time.monotonic() - started < 1.0


async def test_a_fence_to_an_unreachable_port_says_so() -> None:
    """A fence that cannot arrive (the switch drops all it sends the receiver) fails with
    FenceNotDelivered, not with an empty list that would prove nothing."""
    async with (
        run_switch() as switch,
        attach(switch.control_path) as a,
        attach(switch.control_path) as b,
    ):
        switch.impair(b, "out", loss=100)  # the switch drops everything it sends to b
        with pytest.raises(FenceNotDelivered, match="not reachable"):
            await a.fence(b, timeout=0.3)


def test_handshake_options_that_do_not_fit_are_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match="dialect must be one of v3, v1, v0, vde"):
        attach_sync("unused", dialect="v2")
    with pytest.raises(ValueError, match="go with dialect='vde'"):
        attach_sync("unused", description="qemu")
    with pytest.raises(ValueError, match="data_path="):
        attach_sync("unused", dialect="v0")
    with pytest.raises(ValueError, match="go with transport='daemon'"):
        attach_sync("unused", transport="stream", dialect="v1")
    with pytest.raises(ValueError, match="go with dialect='vde'"):
        attach("unused", requested_port=3)


def test_switch_process_runs_any_command_line_and_stops_with_a_signal(tmp_path: Path) -> None:
    with SwitchProcess(directory=str(tmp_path)) as first:
        second_ctl = str(tmp_path / "second.ctl")
        with SwitchProcess("-hub", directory=str(tmp_path), control_path=second_ctl) as second:
            assert second.log_path != first.log_path and "hub mode" in second.log
            with attach_sync(second_ctl):
                second.wait_for_log("port 1 attached")
            assert second.stop(sig=signal.SIGKILL) == -signal.SIGKILL
        # another switch on a live control socket: refused, exit status 1
        refused = SwitchProcess(
            "-unix", first.control_path, directory=str(tmp_path), unix=False, wait_ready=False
        )
        with pytest.raises(AssertionError, match=r"exited \(1\) before logging"):
            refused.wait_for_log(READY)
        assert refused.stop() == 1
        assert "has another server attached" in refused.log
