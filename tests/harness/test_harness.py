"""umlswitch.testing tested from the outside: against umlswitch and against the C uml_switch."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Ether

from umlswitch.testing import (
    FenceNotDelivered,
    SwitchProcess,
    attach,
    attach_sync,
    matches,
    run_switch,
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
        deadline = time.monotonic() + 10
        while not ctl.exists():
            assert time.monotonic() < deadline, "uml_switch did not create its socket"
            time.sleep(0.02)
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
        b.collect(0.3)
        c.collect(0.3)
        b.send(b.ether(dst=A) / IP(dst="10.0.0.1") / ICMP(seq=7))
        assert a.receive(match={"ICMP.seq": 7})[Ether].src == B
        assert c.collect(0.5) == []


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
        await trio.sleep(0.1)
        assert switch.counters()["ports"] == {}  # detached on exit


async def test_the_plugin_fixture_gives_a_running_switch(umlswitch_switch) -> None:
    async with attach(umlswitch_switch.control_path) as a:
        frames = await a.collect(0.1)
        assert frames == []
        assert len(umlswitch_switch.counters()["ports"]) == 1


def test_the_plugin_attach_factory(umlswitch_attach, umlswitch_process) -> None:
    a, b = umlswitch_attach(mac=A), umlswitch_attach(mac=B)
    a.send(a.ether() / ARP())
    assert b.receive(match=ARP).src == A
    b.send(b"\x01" * 10)  # a runt
    time.sleep(0.2)
    counters = umlswitch_process.counters()
    assert counters["ports"][1]["rx_frames"] == 1 and counters["ports"][2]["tx_frames"] == 1
    assert counters["ports"][2]["drops"]["runt"] == 1
    assert counters["info"]["macs"] == 1


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
