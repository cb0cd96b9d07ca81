"""End-to-end: impairment (`port/impair`) as real UML guests feel it, and gone after `off`.

Two guests ping each other and run iperf3 through the switch while the test impairs a port from
the management socket between the guests' commands (each command waits for a file the test
touches once the impairment is set):

* a 40 ms delay on the way to g2 raises g1's ping round trip by 40 ms (± 20 %);
* 20 % loss on the way to g2 loses that share of 500 pings (a binomial bound; seeded);
* a rate of 20 Mbit/s on both guests' ports holds iperf3's TCP to 20 Mbit/s (± 15 %);
* after `off`, no loss, the round trip of before, and TCP well above the rate again.

The guests have static neighbour entries, so no ARP exchange is lost or delayed in between.
Skipped against another switch program (`UMLSWITCH_E2E_SWITCH`): it has no `port/impair`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from umlswitch.config import mgmt_path_for
from umlswitch.mgmt.client import connect

from .test_uml_guests import IPERF3_PORT
from .uml import CommandResult, Guest, PingSummary, Switch, ip_for, mac_for, switch_label

pytestmark = pytest.mark.e2e

DELAY_MS = 40
LOSS_PERCENT = 20
PINGS = 500
RATE_MBIT = 20
IPERF3_SECONDS = 4  # measured, after one second left out (-O 1): TCP's start and queue filling
Z = 4.5  # binomial bound: standard deviations


@pytest.fixture(autouse=True)
def _umlswitch_only() -> None:
    if switch_label() != "umlswitch":
        pytest.skip(f"{switch_label()} has no port/impair")


def static_neighbour(index: int) -> str:
    """A guest command: reach guest `index` without ARP (its MAC is fixed)."""
    return f"ip neigh replace {ip_for(index)} lladdr {mac_for(index)} dev eth0 nud permanent"


def after(marker: str, command: str) -> str:
    """A guest command that waits until the test touches `marker`, then runs `command`."""
    return f'e2e_wait_file "$E2E_DIR/{marker}" 60 && {command}'


def ping(target: int, count: int, interval: float) -> str:
    return f"ping -n -q -c {count} -i {interval} -W 1 {ip_for(target)}"


_RTT = re.compile(r"rtt min/avg/max/mdev = [\d.]+/(?P<avg>[\d.]+)/")


def ping_result(result: CommandResult) -> tuple[PingSummary, float]:
    """Ping's summary and its average round trip in ms."""
    summary = PingSummary.parse(result.stdout)
    rtt = _RTT.search(result.stdout)
    assert summary is not None and rtt is not None, result.describe()
    return summary, float(rtt["avg"])


class Mgmt:
    """`umlswitch ctl` for the switch under test, from this process."""

    def __init__(self, switch: Switch) -> None:
        self.path = mgmt_path_for(str(switch.ctl))

    def __call__(self, line: str) -> Any:
        with connect(self.path) as client:
            return client.json(line)

    def port_of(self, index: int) -> int:
        """The port guest `index` is attached to (its MAC is learned)."""
        entry: dict[str, Any] = self(f"hash/find {mac_for(index)}")["entries"][0]
        return int(entry["port"])


def touch(directory: Path, marker: str) -> None:
    (directory / marker).touch()


def test_ping_feels_delay_and_loss_and_both_go_away_after_off(
    switch: Callable[..., Switch],
    guests: Callable[..., list[Guest]],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    sw = switch()
    g1, g2 = guests(
        sw,
        [
            static_neighbour(2),
            ping(2, 20, 0.05),
            after("delay.set", ping(2, 20, 0.05)),
            after("loss.set", ping(2, PINGS, 0.01)),
            after("off.set", ping(2, 100, 0.01)),
        ],
        [static_neighbour(1)],
    )
    mgmt = Mgmt(sw)
    for result in (g1.result(0), g2.result(0)):
        assert result.returncode == 0, result.describe()
    before, base_rtt = ping_result(g1.result(1))
    assert before.received == before.transmitted == 20
    port = mgmt.port_of(2)

    mgmt(f"port/impair {port} out delay={DELAY_MS}ms")
    touch(tmp_path, "delay.set")
    delayed, delayed_rtt = ping_result(g1.result(2))
    assert delayed.received == delayed.transmitted == 20
    added = delayed_rtt - base_rtt
    record_property("rtt_added_ms", round(added, 2))
    assert DELAY_MS * 0.8 <= added <= DELAY_MS * 1.2, (base_rtt, delayed_rtt)

    mgmt(f"port/impair {port} out loss={LOSS_PERCENT} seed=16")
    touch(tmp_path, "loss.set")
    lossy, _ = ping_result(g1.result(3))
    lost = lossy.transmitted - lossy.received
    counted = mgmt(f"port/impair {port}")["out"]["dropped"]["loss"]
    record_property("pings_lost", lost)
    assert lossy.transmitted == PINGS
    p = LOSS_PERCENT / 100
    assert abs(lost - PINGS * p) <= Z * math.sqrt(PINGS * p * (1 - p)), lost
    assert counted >= lost  # every lost echo request (and any other frame to g2 lost)

    assert mgmt(f"port/impair {port} off")["out"] is None
    touch(tmp_path, "off.set")
    after_off, after_rtt = ping_result(g1.result(4))
    assert after_off.received == after_off.transmitted == 100
    assert after_rtt < base_rtt + DELAY_MS * 0.2, (base_rtt, after_rtt)
    sw.check_alive()


def iperf3_server(marker: str) -> str:
    """Serve one iperf3 test; touch `marker` once listening."""
    return (
        f"iperf3 -s -1 -p {IPERF3_PORT} & server=$!\n"
        f'e2e_wait_listening {IPERF3_PORT} && touch "$E2E_DIR/{marker}"\n'
        "wait $server"
    )


def iperf3_client(*markers: str) -> str:
    """A TCP test to g1 once every marker is there, with a JSON report."""
    command = f"iperf3 -c {ip_for(1)} -p {IPERF3_PORT} -t {IPERF3_SECONDS + 1} -O 1 -J"
    for marker in markers:
        command = after(marker, command)
    return command


def received_mbit(result: CommandResult) -> float:
    assert result.returncode == 0, result.describe()
    bits: float = result.json()["end"]["sum_received"]["bits_per_second"]
    return bits / 1e6


def test_iperf3_keeps_to_the_rate_and_is_fast_again_after_off(
    switch: Callable[..., Switch],
    guests: Callable[..., list[Guest]],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    sw = switch()
    server, client = guests(
        sw,
        [iperf3_server("limited.listening"), after("off.set", iperf3_server("free.listening"))],
        [
            static_neighbour(1),
            iperf3_client("limited.listening", "rate.set"),
            iperf3_client("free.listening"),
        ],
    )
    client.result(0)
    mgmt = Mgmt(sw)
    ports = [port["id"] for port in mgmt("port/print")["ports"]]
    assert len(ports) == 2
    for port in ports:  # the data one way, the ACKs the other
        mgmt(f"port/impair {port} out rate={RATE_MBIT}mbit")
    touch(tmp_path, "rate.set")

    limited = received_mbit(client.result(1, timeout=IPERF3_SECONDS + 40))
    record_property("iperf3_limited_mbit", round(limited, 2))
    assert RATE_MBIT * 0.85 <= limited <= RATE_MBIT * 1.15, limited
    server.result(0)

    for port in ports:
        mgmt(f"port/impair {port} off")
    touch(tmp_path, "off.set")
    free = received_mbit(client.result(2, timeout=IPERF3_SECONDS + 40))
    record_property("iperf3_free_mbit", round(free, 2))
    assert free > RATE_MBIT * 2, free
    server.result(1)
    sw.check_alive()
