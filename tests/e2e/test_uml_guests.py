"""End-to-end: real UML guests on `eth0=daemon` reach each other through the switch under test.

What a user checks after plugging guests into the switch: they ping each other without loss (as
a learning switch and as a hub, also when a guest joins later) and bulk TCP (iperf3) gets through.
Run against the C reference with `UMLSWITCH_E2E_SWITCH=uml_switch`.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .uml import CommandResult, GuestPool, PingSummary, Switches, ip_for, ping_command, switch_label

pytestmark = pytest.mark.e2e

IPERF3_PORT = 5201
# Server: listen for one test; tell the client (through the shared dir) once it listens.
IPERF3_SERVER = (
    f"iperf3 -s -1 -p {IPERF3_PORT} & server=$!\n"
    f'e2e_wait_listening {IPERF3_PORT} && touch "$E2E_DIR/iperf3.listening"\n'
    "wait $server"
)
IPERF3_SECONDS = 3


def iperf3_client(server_ip: str) -> str:
    """Wait for the server, then run a short TCP test with a JSON report on stdout."""
    return (
        'e2e_wait_file "$E2E_DIR/iperf3.listening" && '
        f"iperf3 -c {server_ip} -p {IPERF3_PORT} -t {IPERF3_SECONDS} -J"
    )


def assert_no_loss(result: CommandResult) -> PingSummary:
    """The ping ran, every echo was answered, and its summary says 0 % packet loss."""
    summary = PingSummary.parse(result.stdout)
    assert summary is not None, f"no ping summary line\n{result.describe()}"
    assert summary.transmitted > 0, result.describe()
    assert summary.received == summary.transmitted, result.describe()
    assert summary.loss_percent == 0.0, result.describe()
    assert result.returncode == 0, result.describe()
    return summary


def test_two_guests_ping_each_other(switch: Switches, guests: GuestPool) -> None:
    sw = switch(hub=False)
    g1, g2 = guests(sw, [ping_command(ip_for(2))], [ping_command(ip_for(1))])

    for guest in (g1, g2):
        (result,) = guest.results()
        assert_no_loss(result)
    sw.check_alive()


def test_iperf3_between_two_guests(
    switch: Switches, guests: GuestPool, record_property: Callable[[str, object], None]
) -> None:
    sw = switch(hub=False)
    server, client = guests(sw, [IPERF3_SERVER], [iperf3_client(ip_for(1))])

    (run,) = client.results(timeout=IPERF3_SECONDS + 30)
    assert run.returncode == 0, run.describe()
    report = run.json()
    received = report["end"]["sum_received"]["bits_per_second"]
    sent = report["end"]["sum_sent"]["bits_per_second"]
    assert received > 0, run.describe()
    assert sent > 0, run.describe()
    (served,) = server.results()
    assert served.returncode == 0, served.describe()
    sw.check_alive()

    mbit_per_s = received / 1e6
    print(f"iperf3 through {switch_label()}: {mbit_per_s:.1f} Mbit/s ({IPERF3_SECONDS} s, TCP)")
    record_property("iperf3_mbit_per_s", round(mbit_per_s, 1))
    record_property("switch", switch_label())


@pytest.mark.parametrize("hub", [False, True], ids=["switch", "hub"])
def test_third_guest_joins_and_all_ping_each_other(
    switch: Switches, guests: GuestPool, hub: bool
) -> None:
    sw = switch(hub=hub)
    then_ping_g3 = f"e2e_wait_up g3 && {ping_command(ip_for(3))}"
    g1, g2 = guests(
        sw,
        [ping_command(ip_for(2)), then_ping_g3],
        [ping_command(ip_for(1)), then_ping_g3],
    )
    # The first two talk (and the switch has learned them) before the third is plugged in.
    assert_no_loss(g1.result(0))
    assert_no_loss(g2.result(0))

    (g3,) = guests(sw, [ping_command(ip_for(1)), ping_command(ip_for(2))])

    for result in [g1.result(1), g2.result(1), *g3.results()]:
        assert_no_loss(result)
    sw.check_alive()
