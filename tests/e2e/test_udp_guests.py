"""End-to-end: UML guests on eth0=mcast and eth0=ucast share one segment with eth0=daemon guests.

One switch runs with ``-mcast`` (UML's default group, 239.192.168.1:1102) and one ``-ucast`` peer.
Two ``eth0=daemon`` guests and one ``eth0=mcast`` guest all ping each other, an ``eth0=ucast``
guest pings across the switch, and iperf3 runs between a daemon guest and the mcast guest.
Everything runs in a private network namespace with a multicast route on lo (the ``netns``
fixture of tests/conftest.py), so the host's routing is never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from tests.netns import ip

from .test_uml_guests import IPERF3_SECONDS, IPERF3_SERVER, assert_no_loss, iperf3_client
from .uml import (
    BOOT_TIMEOUT,
    Guest,
    GuestPool,
    Switch,
    Switches,
    ip_for,
    mac_for,
    ping_command,
    switch_label,
)

pytestmark = pytest.mark.e2e

SWITCH_UCAST_PORT = 41200  # the switch's LOCALPORT, the ucast guest's rport
GUEST_UCAST_PORT = 41201  # the ucast guest's lport, the switch's REMOTEPORT


def boot(
    pool: GuestPool, switch: Switch, guests: Sequence[tuple[str | None, Sequence[str]]]
) -> list[Guest]:
    """Boot guests in parallel, each on ``eth0=daemon`` (transport None) or the given transport.

    Numbered after the pool's guests; each waits for all the others before its commands. The pool
    takes them down at teardown.
    """
    first = len(pool.guests) + 1
    names = [f"g{first + i}" for i in range(len(guests))]
    batch: list[Guest] = []
    for index, (transport, commands) in enumerate(guests, first):
        batch.append(
            Guest(
                index, pool.workdir, pool.uml_dir, switch.ctl, commands, names, transport=transport
            )
        )
    pool.guests += batch
    for guest in batch:
        guest.start()
    for guest in batch:
        guest.wait_up(BOOT_TIMEOUT)
    return batch


@pytest.fixture
def multicast_lo(netns: str) -> str:
    """The test's private namespace, with lo carrying multicast (as a host's LAN interface)."""
    ip("link", "set", "lo", "multicast", "on")
    ip("route", "add", "224.0.0.0/4", "dev", "lo")
    return netns


def test_daemon_mcast_and_ucast_guests_reach_each_other(
    multicast_lo: str,
    switch: Switches,
    guests: GuestPool,
    record_property: Callable[[str, object], None],
) -> None:
    if switch_label() != "umlswitch":
        pytest.skip(f"{switch_label()} has no -mcast/-ucast ports")
    sw = switch(
        False,
        "-mcast",
        "-ucast",
        f"{SWITCH_UCAST_PORT}:127.0.0.1:{GUEST_UCAST_PORT}",
    )
    pings = {i: [ping_command(ip_for(j)) for j in (1, 2, 3) if j != i] for i in (1, 2, 3)}
    g1, g2, g3, g4 = boot(
        guests,
        sw,
        [
            (None, [*pings[1], IPERF3_SERVER]),
            (None, pings[2]),
            (f"mcast,{mac_for(3)}", [*pings[3], iperf3_client(ip_for(1))]),
            (
                f"ucast,{mac_for(4)},127.0.0.1,{GUEST_UCAST_PORT},{SWITCH_UCAST_PORT}",
                [ping_command(ip_for(1)), ping_command(ip_for(3))],
            ),
        ],
    )

    # the daemon guests and the mcast guest all ping each other; the ucast guest gets through
    for result in [g1.result(0), g1.result(1), *g2.results(), g3.result(0), g3.result(1)]:
        assert_no_loss(result)
    for result in g4.results():
        assert_no_loss(result)

    run = g3.result(2, timeout=IPERF3_SECONDS + 30)
    assert run.returncode == 0, run.describe()
    received = run.json()["end"]["sum_received"]["bits_per_second"]
    assert received > 0, run.describe()
    served = g1.result(2)
    assert served.returncode == 0, served.describe()
    sw.check_alive()

    log = sw.log_path.read_text()
    assert "port 1 attached: mcast:239.192.168.1:1102" in log
    assert f"port 2 attached: ucast:{SWITCH_UCAST_PORT}->127.0.0.1:{GUEST_UCAST_PORT}" in log
    mbit_per_s = received / 1e6
    print(f"iperf3 mcast guest -> daemon guest: {mbit_per_s:.1f} Mbit/s ({IPERF3_SECONDS} s, TCP)")
    record_property("iperf3_mcast_mbit_per_s", round(mbit_per_s, 1))
