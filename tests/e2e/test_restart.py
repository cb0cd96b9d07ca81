"""End-to-end: real guests do not notice five seamless restarts of the switch under them.

One switch in a private network namespace serves two UML guests (``eth0=daemon``), a QEMU
guest on ``--stream unix:PATH``, a tap (the namespace's side addressed 10.0.0.254) and a UDP
peer (``-ucast``, played by the test). While guest 1 pings guest 2 every 10 ms and guest 2 runs
an iperf3 TCP flow to guest 1, the switch is restarted five times, one every 1.5 s,
alternating ``umlswitch ctl restart`` and SIGUSR2. Then the pings lost at most 1 %, the flow
ran through, and the QEMU guest, the tap and the UDP peer still reach the guests over the
connections and sockets they had from the start (none of them reconnects by itself).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.layers.l2 import ARP, Ether

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
from .uml import GuestPool, PingSummary, Switch, ip_for, switch_label

pytestmark = pytest.mark.e2e

TAP = "tapr0"
HOST_IP = "10.0.0.254"
SWITCH_UDP_PORT, PEER_UDP_PORT = 41310, 41311
PEER_MAC = "02:00:00:00:00:fe"
# E2E_RESTARTS=0 runs the same load without restarts: the baseline of the loss figure
RESTARTS = int(os.environ.get("E2E_RESTARTS", "5"))
PINGS = 1200  # 12 s at 10 ms: longer than the restarts take
IPERF3_SECONDS = 10


def ctl(sw: Switch, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "umlswitch", "ctl", "-unix", str(sw.ctl), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def serving_pid(sw: Switch) -> int:
    result = ctl(sw, "--json", "showinfo")
    assert result.returncode == 0, result.stderr
    return int(json.loads(result.stdout)["pid"])


@dataclass
class Lan:
    switch: Switch
    uml: list[InteractiveUmlGuest]
    qemu: QemuGuest
    peer: socket.socket


@pytest.fixture
def lan(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lan]:
    reason = _why_not_runnable() or why_no_qemu() or netns_unavailable()
    if reason is None and switch_label() != "umlswitch":
        reason = f"{switch_label()} has no seamless restart"
    if reason is not None:
        pytest.skip(reason)
    found = cloud_kernel()
    assert found is not None
    kernel, modules = found
    initramfs = build_initramfs(modules)
    with private_netns("umlsw-rst"):
        ip("tuntap", "add", TAP, "mode", "tap")
        ip("addr", "add", f"{HOST_IP}/24", "dev", TAP)
        ip("link", "set", TAP, "up")
        stream_path = tmp_path / "qemu.sock"
        argv = [
            sys.executable, "-m", "umlswitch", "-unix", str(tmp_path / "ctl"),
            "--stream", f"unix:{stream_path}", "-tap", TAP,
            "-ucast", f"{SWITCH_UDP_PORT}:127.0.0.1:{PEER_UDP_PORT}",
        ]  # fmt: skip
        sw = Switch(tmp_path / "ctl", argv, tmp_path / "switch.log")
        pool = GuestPool(tmp_path)
        netdev = f"stream,id=n0,server=off,addr.type=unix,addr.path={stream_path}"
        qemu = QemuGuest("stream", ip_for(11), f"{QEMU_MAC_PREFIX}11", netdev, tmp_path)
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", PEER_UDP_PORT))
        try:
            sw.start()
            uml = [InteractiveUmlGuest(i, tmp_path, pool.uml_dir, sw.ctl) for i in (1, 2)]
            pool.guests += uml
            for guest in uml:
                guest.start()
            qemu.start(kernel, initramfs)
            _add_logs(request, lambda: [sw.log_path, *pool.log_paths(), qemu.console_path])
            for guest in uml:
                guest.wait_up()
            qemu.wait_up()
            yield Lan(sw, uml, qemu, peer)
        finally:
            qemu.stop()
            pool.stop_all()
            # the switch serving now is not the process we started: stop it by its pid
            with contextlib.suppress(AssertionError, OSError, ValueError):
                os.kill(serving_pid(sw), signal.SIGTERM)
            sw.stop()
            peer.close()


def udp_peer_reaches(peer: socket.socket, target_ip: str) -> bool:
    """The UDP peer asks who has ``target_ip`` (a raw frame in a datagram); True if answered."""
    question = Ether(src=PEER_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        hwsrc=PEER_MAC, psrc=HOST_IP.replace("254", "253"), pdst=target_ip
    )
    peer.settimeout(0.5)
    for _ in range(10):
        peer.sendto(bytes(question), ("127.0.0.1", SWITCH_UDP_PORT))
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            try:
                frame = Ether(peer.recv(2048))
            except TimeoutError:
                break
            if ARP in frame and frame[ARP].op == 2 and frame[ARP].psrc == target_ip:
                return True
    return False


def test_guests_do_not_notice_five_restarts(lan: Lan) -> None:
    sw, (g1, g2), qemu, peer = lan.switch, lan.uml, lan.qemu, lan.peer
    assert udp_peer_reaches(peer, ip_for(1))  # every kind attached before the restarts
    pinging = g1.submit(f"ping -n -q -c {PINGS} -i 0.01 -W 2 {ip_for(2)}")
    flowing = g2.submit(f"iperf3 -c {ip_for(1)} -t {IPERF3_SECONDS} -J")
    time.sleep(1.0)
    pids = [serving_pid(sw)]
    for n in range(RESTARTS):
        if n % 2 == 0:
            result = ctl(sw, "restart")
            assert result.returncode == 0, result.stderr
        else:
            os.kill(pids[-1], signal.SIGUSR2)
        deadline = time.monotonic() + 15
        while serving_pid(sw) == pids[-1]:
            assert time.monotonic() < deadline, "the restart did not happen"
            time.sleep(0.05)
        pids.append(serving_pid(sw))
        time.sleep(1.5)
    assert len(set(pids)) == RESTARTS + 1
    pings = g1.result(pinging, timeout=60)
    summary = PingSummary.parse(pings.stdout)
    assert summary is not None and summary.transmitted == PINGS, pings.describe()
    assert summary.loss_percent <= 1.0, pings.describe()
    flow = g2.result(flowing, timeout=IPERF3_SECONDS + 60)
    assert flow.returncode == 0, flow.describe()
    received = flow.json()["end"]["sum_received"]["bytes"]
    assert received > 0, flow.describe()
    # The stream guest, the tap and the UDP peer kept their connection and sockets.
    for target in (ip_for(1), ip_for(2)):
        answered = qemu.run(f"ping -c 3 -i 0.2 -W 3 {target}", 60)
        assert answered.returncode == 0, answered.describe()
    host = subprocess.run(
        ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "3", ip_for(1)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert host.returncode == 0, host.stdout + host.stderr
    assert udp_peer_reaches(peer, ip_for(2))
    print(
        f"{RESTARTS} restarts: {summary.loss_percent}% of {PINGS} pings lost, "
        f"iperf3 {received * 8 / IPERF3_SECONDS / 1e6:.1f} Mbit/s"
    )
