"""End-to-end: a real UML guest on `eth0=daemon` reaches the host's network stack through `-tap`.

What a user checks after `umlswitch -unix CTL -tap tap0` with tap0 addressed on the host: the guest
pings the host's tap address, the host pings the guest, and bulk TCP (iperf3) gets through in both
directions. The tap, the switch and the guest share a private network namespace made by the test
(UML's data sockets are abstract unix sockets, which live in a namespace), so the host's own
interfaces and addresses are never touched. Run against the C reference with
`UMLSWITCH_E2E_SWITCH=uml_switch`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from .uml import (
    Guest,
    GuestPool,
    PingSummary,
    Switch,
    Switches,
    ip_for,
    kill_group,
    ping_command,
    switch_command,
    switch_label,
    wait_until,
)

pytestmark = pytest.mark.e2e

TAP = "tap0"
HOST_IP = "10.0.0.254"  # the tap's address, in the guests' 10.0.0.0/24 (uml.ip_for)
IPERF3_PORT = 5201
IPERF3_SECONDS = 2


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def tap_netns() -> Iterator[str]:
    """A network namespace holding tap0 (10.0.0.254/24, up); deleted at teardown.

    Request it before `switch` and `guests`, so that they are stopped before it goes.
    """
    ns = f"umlsw-e2e-tap-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    try:
        ip(ns, "link", "set", "lo", "up")
        ip(ns, "tuntap", "add", TAP, "mode", "tap")
        ip(ns, "addr", "add", f"{HOST_IP}/24", "dev", TAP)
        ip(ns, "link", "set", TAP, "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=10)


class NetnsGuest(Guest):
    """A guest booted inside network namespace `netns` (`ip netns exec` keeps the pid)."""

    def __init__(
        self, netns: str, index: int, pool: GuestPool, ctl: Path, commands: Sequence[str]
    ) -> None:
        super().__init__(index, pool.workdir, pool.uml_dir, ctl, commands)
        self.netns = netns

    def argv(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *super().argv()]


def start_switch_in(ns: str, switches: Switches, *extra_args: str) -> Switch:
    """The switch under test in `ns`, registered with the `switch` fixture for teardown."""
    ctl = switches.workdir / "switch.ctl"
    argv = ["ip", "netns", "exec", ns, *switch_command(ctl, *extra_args)]
    sw = Switch(ctl, argv, switches.workdir / "switch.log")
    switches.started.append(sw)
    sw.start()
    return sw


def boot_guest_in(ns: str, pool: GuestPool, sw: Switch, commands: list[str]) -> Guest:
    """Guest number 1 in `ns` on switch `sw`, registered with the `guests` fixture; once up."""
    guest = NetnsGuest(ns, len(pool.guests) + 1, pool, sw.ctl, commands)
    pool.guests.append(guest)
    guest.start()
    guest.wait_up()
    return guest


def iperf3_client(reverse: bool) -> str:
    return (
        'e2e_wait_file "$E2E_DIR/iperf3.listening" && '
        f"iperf3 -c {HOST_IP} -p {IPERF3_PORT} -t {IPERF3_SECONDS} -J{' -R' if reverse else ''}"
    )


@pytest.fixture
def host_iperf3(tap_netns: str, tmp_path: Path) -> Iterator[None]:
    """An iperf3 server on the host side of the tap; `iperf3.listening` appears once it listens."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", tap_netns, "iperf3", "-s", "-p", str(IPERF3_PORT)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def listening() -> bool:
            ss = ["ip", "netns", "exec", tap_netns, "ss", "-Hltn", f"sport = :{IPERF3_PORT}"]
            return bool(subprocess.run(ss, capture_output=True, text=True).stdout.strip())

        wait_until(listening, 10, "iperf3 server on the host side of the tap")
        (tmp_path / "iperf3.listening").touch()
        yield
    finally:
        kill_group(proc, 5)


def assert_no_loss(output: str, what: str) -> None:
    summary = PingSummary.parse(output)
    assert summary is not None, f"{what}: no ping summary\n{output}"
    assert summary.transmitted > 0 and summary.received == summary.transmitted, output


def test_guest_and_host_ping_and_iperf3_through_the_tap(
    tap_netns: str,
    switch: Switches,
    guests: GuestPool,
    host_iperf3: None,
    record_property: Callable[[str, object], None],
) -> None:
    sw = start_switch_in(tap_netns, switch, "-tap", TAP)
    guest = boot_guest_in(
        tap_netns,
        guests,
        sw,
        [ping_command(HOST_IP), iperf3_client(reverse=False), iperf3_client(reverse=True)],
    )

    host_ping = subprocess.run(
        ["ip", "netns", "exec", tap_netns, *ping_command(ip_for(guest.index)).split()],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert_no_loss(host_ping.stdout, "host pings the guest")
    guest_ping, upload, download = guest.results(timeout=IPERF3_SECONDS + 30)
    assert_no_loss(guest_ping.stdout, "guest pings the host")
    assert guest_ping.returncode == 0, guest_ping.describe()

    rates = {}
    for name, run in (("guest->host", upload), ("host->guest", download)):
        assert run.returncode == 0, run.describe()
        received = run.json()["end"]["sum_received"]["bits_per_second"]
        assert received > 0, run.describe()
        rates[name] = received / 1e6
        record_property(f"iperf3_{name}_mbit_per_s", round(rates[name], 1))
    sw.check_alive()
    print(
        f"iperf3 through {switch_label()} -tap ({IPERF3_SECONDS} s, TCP): "
        + ", ".join(f"{name} {mbit:.1f} Mbit/s" for name, mbit in rates.items())
    )
    if switch_label() == "umlswitch":
        log = sw.log_path.read_text()
        assert f"attached: tap:{TAP}" in log
        assert f"(tap:{TAP}): learned" in log  # the host's MAC, learned on the tap port
        assert f"(tap:{TAP}) detached" not in log
