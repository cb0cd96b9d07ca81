"""The tap port as a user runs it: the switch joined to a host's network stack through a tap device.

Everything happens in a private network namespace made by the test: the tap, the daemon (run with
``ip netns exec``) and the test's clients, whose sockets are made in that namespace by a helper
thread that joins it with ``setns`` (abstract unix sockets are per namespace; a socket keeps the
namespace it was made in, whichever thread uses it later). The unprivileged runs use ``setpriv`` to
become ``nobody`` inside the daemon's own mount namespace (the one ``ip netns exec`` makes), where
``/dev/net/tun`` is replaced as each case needs, so the host's devices are never touched.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from tests.integration.frames import frame, mac
from umlswitch import dataplane
from umlswitch.fabric.fabric import Fabric
from umlswitch.ports.base import PortClosed
from umlswitch.tap.port import open_tap
from umlswitch.testing import SwitchProcess, SyncPort, attach_sync

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TUN = Path("/dev/net/tun")
NOBODY = "nobody"
HOST_IP, CLIENT_IP = "10.198.0.1", "10.198.0.2"
CLIENT_MAC = "02:00:00:00:00:01"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_names = itertools.count(1)


def _why_not_runnable() -> str | None:
    if os.geteuid() != 0:
        return "tap tests need root (network namespaces and tap devices)"
    if not TUN.exists():
        return f"{TUN} is missing (load the tun driver: modprobe tun)"
    for tool in ("ip", "setpriv", "mount"):
        if shutil.which(tool) is None:
            return f"tap tests need {tool}"
    return None


@pytest.fixture(autouse=True)
def _requirements() -> None:
    reason = _why_not_runnable()
    if reason is not None:
        pytest.skip(reason)


def ip(ns: str, *args: str) -> str:
    """Run ``ip -n NS ARGS`` and return its output."""
    return subprocess.run(
        ["ip", "-n", ns, *args], check=True, capture_output=True, text=True, timeout=10
    ).stdout


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace with lo up; deleted (with its taps) at teardown."""
    name = f"umlsw-tap-{os.getpid()}-{next(_names)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        ip(name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


def add_tap(ns: str, name: str, *, user: str | None = None, address: str | None = HOST_IP) -> str:
    """A persistent tap (``ip tuntap add``), addressed and up unless ``address`` is None."""
    ip(ns, "tuntap", "add", name, "mode", "tap", *(["user", user] if user else []))
    if address is not None:
        ip(ns, "addr", "add", f"{address}/24", "dev", name)
        ip(ns, "link", "set", name, "up")
    return name


def link(ns: str, name: str) -> dict[str, Any] | None:
    """``ip -j link show`` of one device, or None if there is no such device."""
    result = subprocess.run(
        ["ip", "-n", ns, "-j", "link", "show", name], capture_output=True, text=True, timeout=10
    )
    return json.loads(result.stdout)[0] if result.returncode == 0 else None


def tap_mac(ns: str, name: str) -> str:
    device = link(ns, name)
    assert device is not None, f"no device {name}"
    return str(device["address"])


def in_netns(ns: str, make: Callable[[], T]) -> T:
    """Call ``make`` on a thread that has joined network namespace ``ns``; return its result."""
    libc = ctypes.CDLL(None, use_errno=True)
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({ns})")
            finally:
                os.close(fd)
            results.append(make())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


# --- running the daemon in the namespace, as root or as nobody ---------------------------------


def _blocked_dir(path: Path) -> Path | None:
    """The first directory on the way to ``path`` that others may not search, if any."""
    for parent in [*reversed(path.parents), path]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None


def _reachable_for_nobody(stash: Path) -> list[str]:
    """Shell lines that let nobody run this interpreter and import this checkout.

    A Python under /root (pyenv) is out of reach for other users. Inside the daemon's private
    mount namespace, a blocked directory is covered by a searchable tmpfs that holds only the
    needed child, bind-mounted back in; nothing changes outside that namespace.
    """
    needed = {Path(os.path.realpath(p)) for p in (sys.base_prefix, sys.prefix, REPO)}
    children: dict[Path, set[str]] = {}
    for path in needed:
        blocked = _blocked_dir(path)
        if blocked is None:
            continue
        if blocked == path:
            pytest.skip(f"{path} is not searchable by other users")
        child = path.relative_to(blocked).parts[0]
        below = [p for p in [*path.parents, path] if blocked in p.parents]
        if any(not p.stat().st_mode & stat.S_IXOTH for p in below):
            pytest.skip(f"more than one directory on the way to {path} is private")
        children.setdefault(blocked, set()).add(child)
    lines = []
    for i, (blocked, names) in enumerate(sorted(children.items())):
        for name in sorted(names):
            keep = stash / f"{i}-{name}"
            keep.mkdir(parents=True)
            lines.append(f"mount --bind {shlex.quote(str(blocked / name))} {keep}")
        lines.append(f"mount -t tmpfs -o mode=0711 tmpfs {shlex.quote(str(blocked))}")
        for name in sorted(names):
            target = shlex.quote(str(blocked / name))
            lines.append(f"mkdir {target} && mount --bind {stash / f'{i}-{name}'} {target}")
    return lines


def as_nobody(tmp_path: Path, tun: str) -> list[str]:
    """An argv prefix that runs the rest as nobody, with ``/dev/net/tun`` set up as ``tun`` says.

    ``tun`` is ``open`` (a tun node of mode 0666), ``closed`` (mode 0600, root's) or ``missing``
    (an empty /dev/net). Meant to run under ``ip netns exec``, whose mount namespace is a slave of
    the host's: these mounts never reach the host.
    """
    lines = ["set -e", *_reachable_for_nobody(tmp_path / "stash")]
    if tun == "missing":
        lines.append(f"mount -t tmpfs -o mode=0755 tmpfs {TUN.parent}")
    else:
        node = tmp_path / f"tun-{tun}"
        os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(10, 200))
        os.chmod(node, 0o666 if tun == "open" else 0o600)
        lines.append(f"mount --bind {node} {TUN}")
    lines.append(f'exec setpriv --reuid={NOBODY} --regid=nogroup --clear-groups -- "$@"')
    return ["sh", "-c", "\n".join(lines), "sh"]


def umlswitch(*args: str) -> list[str]:
    return [sys.executable, "-m", "umlswitch", *args]


@pytest.fixture
def start_in_netns(tmp_path: Path, netns: str) -> Iterator[Callable[..., SwitchProcess]]:
    """Factory: start_in_netns(*args, prefix=[]) -> a ready switch in ``netns``, run by
    ``ip netns exec NS PREFIX python -m umlswitch ARGS`` (``args`` name the control socket)."""
    switches: list[SwitchProcess] = []

    def start(*args: str, prefix: list[str] | None = None) -> SwitchProcess:
        launcher = ["ip", "netns", "exec", netns, *(prefix or [])]
        switch = SwitchProcess(
            *args, directory=str(tmp_path), unix=False, launcher=launcher, cwd=REPO
        )
        switches.append(switch)
        return switch

    yield start
    for switch in switches:
        switch.stop()


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory for the control socket that nobody may write (pytest's tmp_path is private)."""
    path = Path(tempfile.mkdtemp(prefix="umlsw-tap-"))
    os.chown(path, 65534, 65534)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_in_netns(ns: str, prefix: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *prefix, *umlswitch(*args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
        cwd=REPO,
    )


# --- what a user checks --------------------------------------------------------------------------


def arp_request(src_mac: str, src_ip: str, target_ip: str) -> bytes:
    return bytes(
        Ether(src=src_mac, dst="ff:ff:ff:ff:ff:ff")
        / ARP(op="who-has", hwsrc=src_mac, psrc=src_ip, pdst=target_ip)
    )


def host_answers_arp(ns: str, ctl: str, tap: str) -> None:
    """A client asks the switch's LAN who has the tap's address; the host's kernel answers."""
    host_mac = tap_mac(ns, tap)
    with in_netns(ns, lambda: attach_sync(ctl, mac=CLIENT_MAC)) as client:
        client.send(arp_request(CLIENT_MAC, CLIENT_IP, HOST_IP))
        # the host also sends IPv6 noise: skip it
        reply = client.receive(timeout=5, match={"ARP.op": 2})
        assert reply.dst == CLIENT_MAC
        assert reply[ARP].hwsrc == host_mac and reply[ARP].psrc == HOST_IP
        assert reply[ARP].pdst == CLIENT_IP


def is_udp_to_client(packet: Ether) -> bool:
    return UDP in packet and packet[IP].dst == CLIENT_IP


def recv_from(client: SyncPort, src: bytes) -> bytes:
    """The next frame from ``src``, skipping what the host sent before (IPv6 chatter)."""
    while True:
        received = client.receive_bytes()
        if received[6:12] == src:
            return received


def test_client_and_host_exchange_frames_through_the_tap(netns, tmp_path, start_in_netns):
    tap = add_tap(netns, "tap0")
    ctl = str(tmp_path / "ctl")
    switch = start_in_netns("-unix", ctl, "-tap", tap)
    assert "port 1 attached: tap:tap0" in switch.log
    assert "tap device 'tap0'" in switch.log  # in the ready line, as uml_switch says it
    host_answers_arp(netns, ctl, tap)
    switch.wait_for_log(f"port 1 (tap:tap0): learned {tap_mac(netns, tap)}")


def test_giant_frames_from_the_host_are_dropped_and_measured(netns, tmp_path, start_in_netns):
    tap = add_tap(netns, "tap0")
    ip(netns, "link", "set", tap, "mtu", "9000")
    ip(netns, "neigh", "add", CLIENT_IP, "lladdr", CLIENT_MAC, "dev", tap)
    ctl = str(tmp_path / "ctl")
    switch = start_in_netns("-unix", ctl, "-tap", tap)
    with in_netns(netns, lambda: attach_sync(ctl)) as client:
        sender = in_netns(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        with sender:
            sender.sendto(b"x" * 3000, (CLIENT_IP, 9))
            sender.sendto(b"y" * 100, (CLIENT_IP, 9))
        # The small one comes through the tap after the giant: what came before it is all that
        # will ever come of the giant.
        before = []
        while not is_udp_to_client(packet := Ether(client.receive_bytes())):
            before.append(packet)
    assert len(packet[UDP].payload) == 100
    assert [f for f in before if is_udp_to_client(f)] == []  # the giant never came
    switch.wait_for_log("port 1 (tap:tap0): dropped giant frame of 3042 bytes (max 1518)")


def test_tap_deleted_at_run_time_detaches_only_that_port(netns, tmp_path, start_in_netns):
    tap = add_tap(netns, "tap0")
    ctl = str(tmp_path / "ctl")
    switch = start_in_netns("-unix", ctl, "-tap", tap)
    with (
        in_netns(netns, lambda: attach_sync(ctl)) as a,
        in_netns(netns, lambda: attach_sync(ctl)) as b,
    ):
        switch.wait_for_log("port 3 attached")
        ip(netns, "link", "del", tap)
        switch.wait_for_log("port 1 (tap:tap0) detached: tap device 'tap0' is gone")
        assert switch.process.poll() is None
        a.send(frame(mac(2), mac(1)))
        assert recv_from(b, mac(1)) == frame(mac(2), mac(1))
        b.send(frame(mac(1), mac(2)))
        assert recv_from(a, mac(2)) == frame(mac(1), mac(2))
    assert switch.stop() == 0
    assert "the switch keeps running" in switch.log


async def test_frames_to_a_down_tap_are_counted_and_failing_writes_detach_it(netns, caplog):
    tap = add_tap(netns, "tapw", address=None)  # left down
    port = in_netns(netns, lambda: open_tap(tap))  # the tun fd belongs to the netns it opened in
    fabric = Fabric()
    port.id = fabric.allocate_id()
    fabric.attach(port)
    try:
        port.send_nowait(frame(mac(1), mac(2)))
        port.send_nowait(frame(mac(1), mac(2)))
        assert port.stats.drops == {"egress_error": 2} and port.stats.tx_frames == 0
        assert caplog.text.count("the tap is down") == 1
        ip(netns, "link", "set", tap, "up")
        port.send_nowait(frame(mac(1), mac(2)))
        assert port.stats.tx_frames == 1
        ip(netns, "link", "del", tap)
        port.send_nowait(frame(mac(1), mac(2)))  # a write finds the device gone first
        assert port.stats.drops == {"egress_error": 3}
        async with dataplane.running(fabric):
            with trio.fail_after(5), pytest.raises(PortClosed, match="write failed"):
                await port.run(fabric)
    finally:
        port.close()


def test_missing_tap_is_created_down_when_permitted(netns, tmp_path, start_in_netns):
    switch = start_in_netns("-unix", str(tmp_path / "ctl"), "-tap", "newtap")
    assert "created tap device 'newtap'" in switch.log
    assert "must bring it up and address it" in switch.log
    created = link(netns, "newtap")
    assert created is not None and "UP" not in created["flags"]
    assert switch.stop() == 0
    assert link(netns, "newtap") is None  # not persistent: gone with the switch


def test_owner_attaches_without_root(netns, tmp_path, nobody_dir, start_in_netns):
    tap = add_tap(netns, "tapn", user=NOBODY)
    ctl = str(nobody_dir / "ctl")
    switch = start_in_netns("-unix", ctl, "-tap", tap, prefix=as_nobody(tmp_path, "open"))
    status = Path(f"/proc/{switch.process.pid}/status").read_text()
    assert re.search(r"^Uid:\s+65534\s+65534\s+65534\s+65534$", status, re.M), status
    assert re.search(r"^CapEff:\s+0+$", status, re.M), status
    assert "port 1 attached: tap:tapn" in switch.log
    host_answers_arp(netns, ctl, tap)


@pytest.mark.parametrize(
    "tun, tap_owner, message",
    [
        ("open", None, "-tap tapx: tap device 'tapx' does not exist and user nobody may not create "
         "it; create it with: ip tuntap add tapx mode tap user nobody"),
        ("open", "root", "-tap tapx: user nobody may not attach to tap device 'tapx' (it belongs "
         "to root); give it to this user: ip tuntap del tapx mode tap && "
         "ip tuntap add tapx mode tap user nobody"),
        ("closed", NOBODY, "-tap tapx: cannot open /dev/net/tun: permission denied for user "
         "nobody"),
        ("missing", NOBODY, "-tap tapx: /dev/net/tun does not exist; load the tun driver "
         "(modprobe tun)"),
    ],
    ids=["missing-tap", "not-the-owner", "tun-not-permitted", "tun-missing"],
)  # fmt: skip
def test_unprivileged_startup_errors_are_one_clear_line(
    netns, tmp_path, nobody_dir, tun, tap_owner, message
):
    if tap_owner is not None:
        add_tap(netns, "tapx", user=tap_owner)
    ctl = nobody_dir / "ctl"
    result = run_in_netns(netns, as_nobody(tmp_path, tun), "-unix", str(ctl), "-tap", "tapx")
    assert result.returncode == 1, result
    assert result.stderr.startswith(f"umlswitch: {message}"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert not ctl.exists()


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (["tuntap", "add", "notap", "mode", "tun"], "a tun device (layer 3, no ethernet frames)"),
        (["tuntap", "add", "notap", "mode", "tap", "multi_queue"], "a multi-queue tap"),
        (
            ["link", "add", "notap", "type", "veth", "peer", "name", "notap-peer"],
            "a veth interface",
        ),
        (["link", "add", "notap", "type", "bridge"], "a bridge interface"),
    ],
    ids=["tun", "multi-queue-tap", "veth", "bridge"],
)
def test_an_interface_that_is_not_a_tap_is_named_by_its_kind(netns, tmp_path, make, kind):
    ip(netns, *make)
    result = run_in_netns(netns, [], "-unix", str(tmp_path / "ctl"), "-tap", "notap")
    assert result.returncode == 1, result
    assert result.stderr == (
        f"umlswitch: -tap notap: 'notap' is not a tap device (it is {kind}); name a tap made "
        "with: ip tuntap add NAME mode tap user root\n"
    ), result.stderr
