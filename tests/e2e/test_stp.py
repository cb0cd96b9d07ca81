"""End-to-end: umlswitch's spanning tree against the real Linux bridge, in a loop of two taps.

A kernel bridge ``br0`` (10.0.0.254/24) holds two taps, and umlswitch holds the same two taps
(``-tap tapa -tap tapb --stp``): a physical loop. With the bridge's STP on (802.1D: the kernel
speaks no RSTP) the two trees must agree that exactly one of the four tap ends blocks; with it
off, the bridge is a dumb hub in the loop and only umlswitch can cut it: its own BPDUs come back
on the other tap. A harness port's broadcast must arrive once, and a UML guest on umlswitch must
ping the bridge's address. The bridge runs the shortest 802.1D timers Linux allows (hello 1 s,
max age 6 s, forward delay 2 s), which umlswitch's ports adopt from the root's BPDUs.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from umlswitch.mgmt.client import connect
from umlswitch.testing import SyncPort, attach_sync

from ..netns import entered_netns
from .test_tap import assert_no_loss, boot_guest_in, start_switch_in
from .uml import GuestPool, PingSummary, Switch, Switches, ping_command, switch_label, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(switch_label() != "umlswitch", reason="--stp is umlswitch's own"),
]

TAPS = ("tapa", "tapb")
BRIDGE_IP = "10.0.0.254"
HELLO, MAX_AGE, FORWARD_DELAY = 1, 6, 2
BRPORT_STATES = {0: "disabled", 1: "listening", 2: "learning", 3: "forwarding", 4: "blocking"}


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, timeout=10)


def bridge_loop(stp: bool) -> Iterator[str]:
    ns = f"umlsw-e2e-stp-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    try:
        ip(ns, "link", "set", "lo", "up")
        # No IPv6: the kernel's own router solicitations would start a storm of their own in
        # the loop, before the test's one broadcast, and fill the harness port's queue.
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
            check=True,
            timeout=10,
        )
        ip(
            ns,
            *("link", "add", "br0", "type", "bridge", "stp_state", "1" if stp else "0"),
            *("priority", "4096", "hello_time", str(HELLO * 100)),
            *("max_age", str(MAX_AGE * 100), "forward_delay", str(FORWARD_DELAY * 100)),
        )
        for tap in TAPS:
            ip(ns, "tuntap", "add", tap, "mode", "tap")
            ip(ns, "link", "set", tap, "master", "br0")
            ip(ns, "link", "set", tap, "up")
        ip(ns, "addr", "add", f"{BRIDGE_IP}/24", "dev", "br0")
        ip(ns, "link", "set", "br0", "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=10)


@pytest.fixture
def stp_bridge_loop() -> Iterator[str]:
    """br0 with STP on (802.1D) and tapa, tapb in it; request it before `switch`."""
    yield from bridge_loop(stp=True)


@pytest.fixture
def hub_loop() -> Iterator[str]:
    """br0 with STP off (it floods our BPDUs like any multicast) and tapa, tapb in it."""
    yield from bridge_loop(stp=False)


def kernel_states(ns: str) -> dict[str, str]:
    states = {}
    for tap in TAPS:
        out = subprocess.run(
            ["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{tap}/brport/state"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        states[tap] = BRPORT_STATES.get(int(out or 0), out)
    return states


def tree(sw: Switch) -> dict[str, Any]:
    with connect(str(sw.ctl) + ".mgmt") as client:
        doc: dict[str, Any] = client.json("fstp/print")
    return doc


def our_states(sw: Switch) -> dict[str, tuple[str, str]]:
    return {p["name"].removeprefix("tap:"): (p["role"], p["state"]) for p in tree(sw)["ports"]}


def harness(ns: str, sw: Switch, mac: str) -> SyncPort:
    """A harness port on `sw`, its data socket made in `ns` (abstract sockets live there)."""
    with entered_netns(ns):
        return attach_sync(str(sw.ctl), mac=mac)


def copies_of_one_broadcast(ns: str, sw: Switch, seconds: float) -> int:
    """Send one broadcast from a harness port; how many copies another port got in `seconds`."""
    payload = f"stp-e2e-{time.monotonic_ns()}".encode()
    with harness(ns, sw, "02:00:00:00:aa:01") as a, harness(ns, sw, "02:00:00:00:aa:02") as b:
        a.send(a.ether() / payload)
        frames = b.collect(seconds, match=lambda f: payload in bytes(f))
    return len(frames)


def test_umlswitch_and_the_linux_bridge_with_stp_block_one_tap_end_and_fail_over(
    stp_bridge_loop: str,
    switch: Switches,
    guests: GuestPool,
    record_property: Callable[[str, object], None],
) -> None:
    ns = stp_bridge_loop
    started = time.monotonic()
    sw = start_switch_in(ns, switch, "-tap", "tapa", "-tap", "tapb", "--stp")

    def converged() -> bool:
        ours = our_states(sw)
        kernel = kernel_states(ns)
        blocking = [s[1] for s in ours.values() if s[1] == "discarding"]
        blocking += [s for s in kernel.values() if s == "blocking"]
        forwarding = [s[1] for s in ours.values() if s[1] == "forwarding"]
        forwarding += [s for s in kernel.values() if s == "forwarding"]
        return len(blocking) == 1 and len(forwarding) == 3

    wait_until(
        converged, 3 * (MAX_AGE + 2 * FORWARD_DELAY), "the two trees converge", log=sw.log_path
    )
    convergence = time.monotonic() - started
    record_property("stp_convergence_s", round(convergence, 1))
    doc = tree(sw)
    assert not doc["is_root"] and doc["root"].startswith("4096.")  # the bridge is the root
    assert doc["timers"] == {"hello": HELLO, "max_age": MAX_AGE, "forward_delay": FORWARD_DELAY}
    assert {p["protocol"] for p in doc["ports"]} == {"stp"}  # fell back to 802.1D
    assert copies_of_one_broadcast(ns, sw, 2.0) == 1

    guest = boot_guest_in(
        ns,
        guests,
        sw,
        [
            ping_command(BRIDGE_IP),
            f'e2e_wait_file "$E2E_DIR/failover" 60 && {ping_command(BRIDGE_IP)}',
        ],
    )
    first = guest.result(0)
    assert_no_loss(first.stdout, "the guest pings the bridge")

    ours = our_states(sw)
    (forwarding,) = [tap for tap, (role, state) in ours.items() if role == "root"]
    (other,) = [tap for tap in TAPS if tap != forwarding]
    down_at = time.monotonic()
    ip(ns, "link", "set", forwarding, "down")
    wait_until(
        lambda: our_states(sw)[other] == ("root", "forwarding"),
        2 * (MAX_AGE + 2 * FORWARD_DELAY),
        f"{other} takes over",
        log=sw.log_path,
    )
    failover = time.monotonic() - down_at
    record_property("stp_failover_s", round(failover, 1))
    (Path(guest.workdir) / "failover").touch()
    second = guest.result(1)
    assert_no_loss(second.stdout, "the guest pings the bridge after the failover")
    assert failover <= MAX_AGE + 2 * FORWARD_DELAY + 1.5, failover
    log = sw.log_path.read_text()
    assert "neighbour speaks 802.1D" in log and "topology change" in log
    print(
        f"Linux bridge (802.1D, hello {HELLO} s, max age {MAX_AGE} s, forward delay "
        f"{FORWARD_DELAY} s) and umlswitch --stp: converged in {convergence:.1f} s, "
        f"failed over to {other} in {failover:.1f} s"
    )
    sw.check_alive()


def test_with_a_dumb_hub_in_the_loop_only_umlswitch_cuts_it(
    hub_loop: str,
    switch: Switches,
    guests: GuestPool,
    record_property: Callable[[str, object], None],
) -> None:
    ns = hub_loop
    # Without --stp: the loop melts, and the log says why.
    plain = start_switch_in(ns, switch, "-tap", "tapa", "-tap", "tapb")
    wait_until(  # the carrier of a tap reaches the bridge through linkwatch, up to 1 s later
        lambda: set(kernel_states(ns).values()) == {"forwarding"},
        10,
        "the bridge forwards on both taps",
    )
    storm = copies_of_one_broadcast(ns, plain, 2.0)
    plain.stop()
    record_property("broadcast_copies_without_stp_2s", storm)
    assert storm > 20, plain.log_path.read_text()[-3000:]
    log = plain.log_path.read_text()
    assert "LOOP?" in log and "(tap:tapa)" in log and "(tap:tapb)" in log, log[-3000:]
    switch.started.remove(plain)

    sw = start_switch_in(ns, switch, "-tap", "tapa", "-tap", "tapb", "--stp")

    def cut() -> bool:
        states = sorted(our_states(sw).values())
        return states == [("backup", "discarding"), ("designated", "forwarding")]

    started = time.monotonic()
    wait_until(cut, 10, "umlswitch cuts the loop with its own BPDUs", log=sw.log_path)
    record_property("stp_hub_loop_cut_s", round(time.monotonic() - started, 2))
    copies = copies_of_one_broadcast(ns, sw, 2.0)
    assert copies <= 1, copies
    guest = boot_guest_in(ns, guests, sw, [ping_command(BRIDGE_IP)])
    ping = guest.result(0)
    assert_no_loss(ping.stdout, "the guest pings the bridge")
    summary = PingSummary.parse(ping.stdout)
    assert summary is not None and summary.received == summary.transmitted
    print(
        f"dumb hub in the loop: one broadcast came back {storm} times in 2 s without --stp, "
        f"{copies} time(s) with it"
    )
    sw.check_alive()
