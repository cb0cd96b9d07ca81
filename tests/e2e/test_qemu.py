"""End-to-end: real QEMU guests on every QEMU transport, with UML guests, on one umlswitch.

One switch serves all of them, in a private network namespace (with multicast routed on lo):
``--vde DIR`` (also the control socket of the UML ``eth0=daemon`` guests), ``--stream unix:PATH``,
``--stream tcp:127.0.0.1:PORT``, ``-mcast``, two ``-ucast`` and ``--vxvde``. Nine QEMU guests,
each on one transport, and two UML guests boot once for the module, in parallel (see
``qemu.py``); each test uses its own pair, so the tests stay independent:

1. ``-netdev vde,sock=DIR``;
2. ``-netdev stream`` (unix) and ``-netdev socket,connect=127.0.0.1:PORT`` (TCP);
3. ``-netdev socket,mcast=`` and ``-netdev dgram`` (inet, unicast); and, with pings only, the
   other QEMU lines of docs/guests.md: ``-netdev dgram`` on the multicast group, ``socket,udp=``,
   ``-netdev stream`` over TCP, ``-netdev vde,sock=vxvde://`` against ``--vxvde``;
4. two QEMU and two UML guests on one LAN, every pair pinging.

Each path: ping both ways between the QEMU guest and a UML guest, and a short iperf3 each way
between them. docs/guests.md runs the same -netdev values through examples/qemu-guest.sh.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.netns import ip, netns_unavailable, private_netns

from .conftest import _add_logs, _why_not_runnable
from .qemu import (
    QEMU_MAC_PREFIX,
    InteractiveUmlGuest,
    QemuGuest,
    build_initramfs,
    cloud_kernel,
    why_no_qemu,
)
from .uml import CommandResult, GuestPool, Switch, ip_for, switch_label

pytestmark = pytest.mark.e2e

TCP_PORT = 5555
SWITCH_UCAST_PORT = 41300  # the switch's -ucast LOCALPORT
QEMU_UCAST_PORT = 41301  # the dgram guest's local port
SWITCH_UDP_PORT = 41302  # a second -ucast port, for -netdev socket,udp=
QEMU_UDP_PORT = 41303
MCAST = "239.192.168.1:1102"
IPERF3_SECONDS = 2
PING_TIMEOUT = 60.0


@dataclass
class Lan:
    """The module's switch and guests."""

    switch: Switch
    vde_dir: Path
    stream_path: Path
    qemu: dict[str, QemuGuest]
    uml: list[InteractiveUmlGuest]
    logs: list[Path]


def qemu_netdevs(vde_dir: Path, stream_path: Path) -> dict[str, str]:
    """Guest name -> its ``-netdev`` value (docs/guests.md shows the same values)."""
    return {
        "vde": f"vde,id=n0,sock={vde_dir}",
        "stream": f"stream,id=n0,server=off,addr.type=unix,addr.path={stream_path}",
        "socket-tcp": f"socket,id=n0,connect=127.0.0.1:{TCP_PORT}",
        "mcast": f"socket,id=n0,mcast={MCAST}",
        "dgram": (
            f"dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={QEMU_UCAST_PORT},"
            f"remote.type=inet,remote.host=127.0.0.1,remote.port={SWITCH_UCAST_PORT}"
        ),
        # the other spellings docs/guests.md gives: dgram on the multicast group, socket,udp=
        "dgram-mcast": "dgram,id=n0,remote.type=inet,remote.host=239.192.168.1,remote.port=1102",
        "socket-udp": (
            f"socket,id=n0,udp=127.0.0.1:{SWITCH_UDP_PORT},localaddr=127.0.0.1:{QEMU_UDP_PORT}"
        ),
        "stream-inet": (
            f"stream,id=n0,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port={TCP_PORT}"
        ),
        # libvdeplug4's vxvde:// through QEMU's vde netdev, against --vxvde
        "vxvde": "vde,id=n0,sock=vxvde://239.0.0.1",
    }


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    reason = _why_not_runnable() or why_no_qemu() or netns_unavailable()
    if reason is None and switch_label() != "umlswitch":
        reason = f"{switch_label()} has no --stream, --vde, -mcast or -ucast"
    if reason is not None:
        pytest.skip(reason)
    found = cloud_kernel()
    assert found is not None
    kernel, modules = found
    initramfs = build_initramfs(modules)
    workdir = tmp_path_factory.mktemp("qemu")
    with private_netns("umlsw-qemu"):
        ip("link", "set", "lo", "multicast", "on")
        ip("route", "add", "224.0.0.0/4", "dev", "lo")
        vde_dir = workdir / "vde"
        stream_path = workdir / "qemu.sock"
        switch = Switch(
            vde_dir / "ctl",
            [
                sys.executable,
                "-m",
                "umlswitch",
                "--vde",
                str(vde_dir),
                "--stream",
                f"unix:{stream_path}",
                "--stream",
                f"tcp:127.0.0.1:{TCP_PORT}",
                "-mcast",
                "-ucast",
                f"{SWITCH_UCAST_PORT}:127.0.0.1:{QEMU_UCAST_PORT}",
                "-ucast",
                f"{SWITCH_UDP_PORT}:127.0.0.1:{QEMU_UDP_PORT}",
                "--vxvde",
            ],
            workdir / "switch.log",
        )
        pool = GuestPool(workdir)
        qemu: dict[str, QemuGuest] = {}
        try:
            switch.start()
            uml = [InteractiveUmlGuest(i, workdir, pool.uml_dir, switch.ctl) for i in (1, 2)]
            pool.guests += uml
            for uml_guest in uml:
                uml_guest.start()
            for number, (name, netdev) in enumerate(qemu_netdevs(vde_dir, stream_path).items(), 11):
                guest = QemuGuest(
                    name, ip_for(number), f"{QEMU_MAC_PREFIX}{number:02x}", netdev, workdir
                )
                qemu[name] = guest
                guest.start(kernel, initramfs)
            logs = [switch.log_path, *pool.log_paths(), *(g.console_path for g in qemu.values())]
            yield Lan(switch, vde_dir, stream_path, qemu, uml, logs)
        finally:
            for guest in qemu.values():
                guest.stop()
            pool.stop_all()
            switch.stop()


@pytest.fixture
def net(lan: Lan, request: pytest.FixtureRequest) -> Lan:
    """The module's LAN, with its logs attached to a failing test's report."""
    _add_logs(request, lambda: lan.logs)
    return lan


def ping(target: str) -> str:
    return f"ping -c 3 -i 0.2 -W 3 {target}"


_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")


def assert_answered(result: CommandResult) -> None:
    """Every echo answered (iputils' and busybox's summary lines both)."""
    match = _SUMMARY.search(result.stdout)
    assert match is not None, f"no ping summary\n{result.describe()}"
    sent, received = int(match[1]), int(match[2])
    assert sent > 0 and received == sent, result.describe()
    assert result.returncode == 0, result.describe()


Guest = QemuGuest | InteractiveUmlGuest


def ping_both_ways(a: Guest, b: Guest) -> None:
    """``a`` pings ``b`` while ``b`` pings ``a``."""
    first, second = a.submit(ping(b.ip)), b.submit(ping(a.ip))
    assert_answered(a.result(first, PING_TIMEOUT))
    assert_answered(b.result(second, PING_TIMEOUT))


def iperf3(client: QemuGuest, server: InteractiveUmlGuest, *, reverse: bool = False) -> float:
    """A short TCP iperf3 from ``client`` to ``server`` (an iperf3 server runs in every guest), or
    from ``server`` to ``client`` (``reverse``); the received rate in Mbit/s."""
    flags = " -R" if reverse else ""
    command = f"iperf3 -c {server.ip} -t {IPERF3_SECONDS}{flags} -J"
    run = client.run(command, IPERF3_SECONDS + 60)
    assert run.returncode == 0, run.describe()
    end = run.json().get("end", {})
    assert "sum_received" in end, run.describe()
    received = end["sum_received"]["bits_per_second"]
    assert received > 0, run.describe()
    return float(received) / 1e6


def prove_path(
    net: Lan, name: str, record_property: Callable[[str, object], None], uml_index: int = 0
) -> None:
    guest = net.qemu[name]
    guest.wait_up()
    uml = net.uml[uml_index]
    uml.wait_up()
    ping_both_ways(guest, uml)
    sent = iperf3(guest, uml)
    received = iperf3(guest, uml, reverse=True)
    net.switch.check_alive()
    print(
        f"QEMU {name}: booted in {guest.boot_seconds:.1f} s; iperf3 QEMU->UML {sent:.0f} Mbit/s, "
        f"UML->QEMU {received:.0f} Mbit/s"
    )
    record_property(f"qemu_{name}_boot_s", round(guest.boot_seconds or 0.0, 1))
    record_property(f"iperf3_qemu_{name}_to_uml_mbit_per_s", round(sent, 1))
    record_property(f"iperf3_uml_to_qemu_{name}_mbit_per_s", round(received, 1))


def test_qemu_vde_guest(net: Lan, record_property: Callable[[str, object], None]) -> None:
    prove_path(net, "vde", record_property)
    assert "v3-vde client" in net.switch.log_path.read_text()


def test_qemu_stream_unix_guest(net: Lan, record_property: Callable[[str, object], None]) -> None:
    prove_path(net, "stream", record_property)
    log = net.switch.log_path.read_text()
    assert "stream client pid=" in log and f"on unix:{net.stream_path}" in log


def test_qemu_socket_connect_tcp_guest(
    net: Lan, record_property: Callable[[str, object], None]
) -> None:
    prove_path(net, "socket-tcp", record_property)
    assert f"on tcp:127.0.0.1:{TCP_PORT}" in net.switch.log_path.read_text()


def test_qemu_socket_mcast_guest(net: Lan, record_property: Callable[[str, object], None]) -> None:
    prove_path(net, "mcast", record_property)


def test_qemu_dgram_inet_guest(net: Lan, record_property: Callable[[str, object], None]) -> None:
    prove_path(net, "dgram", record_property)


def test_the_other_spellings(net: Lan) -> None:
    """``-netdev dgram`` on the group (beside the ``socket,mcast=`` guest), the older
    ``-netdev socket,udp=``, ``-netdev stream`` over TCP, and ``-netdev vde,sock=vxvde://``
    against ``--vxvde``: ping both ways with a UML guest (the iperf3 runs are above)."""
    uml = net.uml[1]
    uml.wait_up()
    for name in ("dgram-mcast", "socket-udp", "stream-inet", "vxvde"):
        net.qemu[name].wait_up()
        ping_both_ways(net.qemu[name], uml)
    net.switch.check_alive()


def test_two_qemu_and_two_uml_guests_on_one_lan(net: Lan) -> None:
    guests: list[Guest] = [net.qemu["vde"], net.qemu["stream"], *net.uml]
    for guest in guests:
        guest.wait_up()
    # every guest pings every other one, all at once
    started = [(g, g.submit("; ".join(ping(o.ip) for o in guests if o is not g))) for g in guests]
    for guest, number in started:
        result = guest.result(number, PING_TIMEOUT * 3)
        summaries = _SUMMARY.findall(result.stdout)
        assert len(summaries) == 3, result.describe()
        assert all(sent == received for sent, received in summaries), result.describe()
    net.switch.check_alive()
