"""End-to-end: 802.1Q VLANs with real Linux VLAN devices in UML guests, and a tap as a trunk.

This host's kernel has no 802.1Q, but the UML guest kernel has it as modules: a guest loads
llc, stp, garp, mrp and 8021q from /usr/lib/uml/modules/<version>/kernel/net/ with insmod (kmod)
and makes eth0.10 and eth0.20. So:

* **Guests.** The trunk guest g1 attaches to a control socket that carries VLANs 10 and 20 tagged
  and has eth0.10 (10.0.10.1) and eth0.20 (10.0.20.1). g2 attaches to a VLAN 10 control socket,
  g3 to a VLAN 20 one, both also on 10.0.0.0/24 (the harness's address on eth0). Each pings the
  trunk guest on its own VLAN without loss; g2 and g3 ping each other (unicast after ARP, and
  the subnet's broadcast) and get nothing. Captures inside the guests prove it: neither access
  guest ever receives a frame from the other, and the trunk guest's eth0 sees g2's frames tagged
  10 and g3's tagged 20.
* **The tap as a trunk,** proven from the host side: `-tap tap0,trunk=10,20` in a private
  namespace, one guest on a VLAN 10 socket and one on a VLAN 20 socket, and an AF_PACKET socket
  on tap0 (the kernel moves the tag into PACKET_AUXDATA). A tagged ARP request for a guest is
  answered only on the guest's VLAN, tagged with it; untagged and VLAN 30 requests are not
  (VLAN 30 counted as `vlan_not_member` on the tap's port); a guest's ARP broadcast reaches
  the host tagged with its VLAN.

Skipped against another switch program (`UMLSWITCH_E2E_SWITCH`): uml_switch has no VLANs.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.l2 import ARP, Dot1Q, Ether

from tests.netns import entered_netns

from .test_tap import HOST_IP, TAP, NetnsGuest, start_switch_in
from .test_tap import tap_netns as tap_netns  # the fixture, used by name
from .test_uml_guests import assert_no_loss
from .uml import (
    GUEST_PATH,
    Guest,
    GuestPool,
    PingSummary,
    Switch,
    Switches,
    ip_for,
    mac_for,
    switch_label,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        any(shutil.which(tool, path=GUEST_PATH) is None for tool in ("insmod", "tcpdump")),
        reason="the guests need insmod (Debian package kmod) and tcpdump",
    ),
]

# The UML kernel's modules for 802.1Q, in dependency order.
LOAD_8021Q = (
    "M=/usr/lib/uml/modules/$(uname -r)/kernel/net\n"
    "for m in llc/llc.ko 802/stp.ko 802/garp.ko 802/mrp.ko 8021q/8021q.ko; do\n"
    '    insmod "$M/$m" || exit 1\n'
    "done"
)


def start_capture(name: str) -> str:
    """Capture eth0 into $E2E_DIR/NAME.pcap in the background; return once tcpdump listens."""
    return (
        f'tcpdump -Z root -U -nn -i eth0 -w "$E2E_DIR/{name}.pcap" '
        f'2> "$E2E_DIR/{name}.tcpdump.log" & echo $! > "$E2E_DIR/{name}.tcpdump.pid"\n'
        "n=0\n"
        f'until grep -q "listening on" "$E2E_DIR/{name}.tcpdump.log"; do\n'
        '    n=$((n + 1)); [ "$n" -gt 200 ] && exit 1; sleep 0.05\n'
        "done"
    )


def read_capture(name: str) -> str:
    """Stop the capture and print it, one frame a line, with MACs and tags (tcpdump -e)."""
    return (
        f'sleep 0.5; kill "$(cat "$E2E_DIR/{name}.tcpdump.pid")"; sleep 0.3\n'
        f'tcpdump -nn -e -r "$E2E_DIR/{name}.pcap"'
    )


def no_answer(target: str, *, broadcast: bool = False) -> str:
    """Ping ``target`` expecting no reply (exit status 0 only if none came)."""
    flag = "-b " if broadcast else ""
    return f"! ping -n {flag}-c 3 -i 0.2 -W 1 {target}"


def boot(pool: GuestPool, plan: Sequence[tuple[Path, list[str]]]) -> list[Guest]:
    """One guest per (control socket, commands), booted in parallel, each waiting for all of
    them to be up before its commands (GuestPool boots all of one call on one socket)."""
    first = len(pool.guests) + 1
    names = [f"g{first + i}" for i in range(len(plan))]
    batch = [
        Guest(first + i, pool.workdir, pool.uml_dir, ctl, commands, names)
        for i, (ctl, commands) in enumerate(plan)
    ]
    pool.guests += batch
    for guest in batch:
        guest.start()
    for guest in batch:
        guest.wait_up()
    return batch


def frames_from(capture: str, mac: str) -> list[str]:
    """The lines of a ``tcpdump -e`` listing whose source address is ``mac``."""
    return [line for line in capture.splitlines() if line.split()[1:2] == [mac]]


def mgmt_json(sw: Switch, command: str) -> dict[str, Any]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "umlswitch",
            "ctl",
            "-unix",
            str(sw.ctl),
            "--json",
            *command.split(),
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    doc: dict[str, object] = json.loads(result.stdout)
    return doc


def test_access_guests_reach_the_trunk_guest_on_their_vlan_and_never_each_other(
    switch: Switches, guests: GuestPool, tmp_path: Path
) -> None:
    if switch_label() != "umlswitch":
        pytest.skip(f"{switch_label()} has no VLANs")
    v10, v20, trunk = tmp_path / "v10.ctl", tmp_path / "v20.ctl", tmp_path / "trunk.ctl"
    sw = switch(False, "-unix", f"{v10},vlan=10", "-unix", f"{v20},vlan=20",
                "-unix", f"{trunk},trunk=10,20")  # fmt: skip
    trunk_setup = "\n".join(
        [
            LOAD_8021Q,
            "ip addr flush dev eth0",
            "for v in 10 20; do",
            "    ip link add link eth0 name eth0.$v type vlan id $v &&",
            "    ip addr add 10.0.$v.1/24 dev eth0.$v && ip link set eth0.$v up || exit 1",
            "done",
            start_capture("trunk"),
            'touch "$E2E_DIR/trunk.ready"',
            "ip -d -br link show type vlan",
        ]
    )

    def access(me: str, vlan: int, other: str, other_ip: str) -> list[str]:
        return [
            f"ip addr add 10.0.{vlan}.{me[1:]}/24 dev eth0\n{start_capture(me)}\n"
            f'touch "$E2E_DIR/{me}.capturing"',
            f'e2e_wait_file "$E2E_DIR/trunk.ready" && ping -n -c 3 -i 0.2 -W 2 10.0.{vlan}.1',
            f'e2e_wait_file "$E2E_DIR/{other}.capturing" && {no_answer(other_ip)} && '
            f"{no_answer('10.0.0.255', broadcast=True)}; status=$?; "
            f'touch "$E2E_DIR/{me}.pinged"; exit $status',
            f'e2e_wait_file "$E2E_DIR/{other}.pinged" && {read_capture(me)}',
        ]

    g1, g2, g3 = boot(
        guests,
        [
            (trunk, [trunk_setup, f'e2e_wait_file "$E2E_DIR/g2.pinged" && '
                     f'e2e_wait_file "$E2E_DIR/g3.pinged" && {read_capture("trunk")}']),
            (v10, access("g2", 10, "g3", ip_for(3))),
            (v20, access("g3", 20, "g2", ip_for(2))),
        ],
    )  # fmt: skip
    setup, trunk_capture = g1.results()
    assert setup.returncode == 0, setup.describe()
    assert "eth0.10@eth0" in setup.stdout and "eth0.20@eth0" in setup.stdout, setup.describe()
    results = {g.name: g.results() for g in (g2, g3)}
    for capturing, own_vlan, other_vlan, capture in results.values():
        assert capturing.returncode == 0, capturing.describe()
        assert_no_loss(own_vlan)  # the trunk guest, on this guest's VLAN
        assert other_vlan.returncode == 0, other_vlan.describe()  # no answer from the other
        summary = PingSummary.parse(other_vlan.stdout)
        assert summary is not None and summary.received == 0, other_vlan.describe()
        assert capture.returncode == 0, capture.describe()
    g2_capture, g3_capture = results["g2"][3].stdout, results["g3"][3].stdout

    # Neither access guest received anything from the other, broadcasts included; what they got
    # from the trunk guest came untagged.
    assert frames_from(g2_capture, mac_for(3)) == [], g2_capture
    assert frames_from(g3_capture, mac_for(2)) == [], g3_capture
    for seen_by_access in (g2_capture, g3_capture):
        from_trunk = frames_from(seen_by_access, mac_for(1))
        assert from_trunk and not any("802.1Q" in line for line in from_trunk), seen_by_access
    # The trunk's eth0 saw each access guest's frames tagged with its VLAN, broadcasts too.
    assert trunk_capture.returncode == 0, trunk_capture.describe()
    seen = trunk_capture.stdout
    for guest, vlan in ((g2, 10), (g3, 20)):
        lines = frames_from(seen, guest.mac)
        assert lines and all(f"vlan {vlan}," in line for line in lines), seen
        broadcasts = [line for line in lines if "> ff:ff:ff:ff:ff:ff," in line]
        assert any("Request who-has" in line for line in broadcasts), seen
        assert any("> 10.0.0.255: ICMP echo request" in line for line in broadcasts), seen

    # One MAC (the trunk guest's), two VLANs: two entries.
    entries = mgmt_json(sw, "hash/find " + mac_for(1))["entries"]
    assert sorted(e["vlan"] for e in entries) == [10, 20], entries
    ports = mgmt_json(sw, "port/print")["ports"]
    drops = sum(p["drops"]["vlan_not_member"] for p in ports)
    assert drops == 0, ports
    sw.check_alive()


# --- the tap as a trunk -------------------------------------------------------------------------

SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 0x10
PACKET_OUTGOING = 4
HOST_MAC = "02:00:00:00:00:fe"
AUXDATA = struct.Struct("IIIHHHH")  # struct tpacket_auxdata


def open_tap_reader(ns: str) -> socket.socket:
    """An AF_PACKET socket on the namespace's tap, with PACKET_AUXDATA on."""
    with entered_netns(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    sock.bind((TAP, 0))
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    return sock


def arp_frames(sock: socket.socket, seconds: float) -> list[tuple[Ether, int | None]]:
    """The ARP frames the tap received (not those the host sent) within ``seconds``: each with
    the VLAN the kernel put in PACKET_AUXDATA (None: untagged)."""
    got: list[tuple[Ether, int | None]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        data, ancillary, _, address = sock.recvmsg(65536, socket.CMSG_SPACE(AUXDATA.size))
        if address[2] == PACKET_OUTGOING:
            continue
        vlan = None
        for level, kind, raw in ancillary:
            if (level, kind) == (SOL_PACKET, PACKET_AUXDATA):
                status, _, _, _, _, tci, _ = AUXDATA.unpack_from(raw)
                if status & TP_STATUS_VLAN_VALID:
                    vlan = tci & 0xFFF
        frame = Ether(data)
        if ARP in frame:
            got.append((frame, vlan))
    return got


def who_has(ip: str, vlan: int | None) -> bytes:
    packet = Ether(src=HOST_MAC, dst="ff:ff:ff:ff:ff:ff")
    if vlan is not None:
        packet = packet / Dot1Q(vlan=vlan)
    return bytes(packet / ARP(op=1, hwsrc=HOST_MAC, psrc=HOST_IP, pdst=ip))


def replies(frames: list[tuple[Ether, int | None]], ip: str) -> list[int | None]:
    """The VLANs of the ARP replies from ``ip`` to the host among ``frames``."""
    return [
        vlan for f, vlan in frames if f[ARP].op == 2 and f[ARP].psrc == ip and f.dst == HOST_MAC
    ]


def test_the_tap_as_a_trunk_seen_from_the_host(
    tap_netns: str, switch: Switches, guests: GuestPool, tmp_path: Path
) -> None:
    if switch_label() != "umlswitch":
        pytest.skip(f"{switch_label()} has no VLANs")
    v10, v20 = tmp_path / "v10.ctl", tmp_path / "v20.ctl"
    sw = start_switch_in(tap_netns, switch, "-tap", f"{TAP},trunk=10,20",
                         "-unix", f"{v10},vlan=10", "-unix", f"{v20},vlan=20")  # fmt: skip
    reader = open_tap_reader(tap_netns)
    with reader:
        # Each guest says who it is once the host listens: an ARP broadcast on its VLAN.
        say_hello = f'e2e_wait_file "$E2E_DIR/host.listening" 60 && {no_answer(HOST_IP)}'
        first = len(guests.guests) + 1
        pair = [NetnsGuest(tap_netns, first + i, guests, ctl, [say_hello])
                for i, ctl in enumerate((v10, v20))]  # fmt: skip
        guests.guests += pair
        for guest in pair:
            guest.start()
        for guest in pair:
            guest.wait_up()
        g10, g20 = pair
        ip10, ip20 = ip_for(g10.index), ip_for(g20.index)

        (tmp_path / "host.listening").touch()
        hellos = arp_frames(reader, 3.0)
        for member, its_vlan in ((g10, 10), (g20, 20)):
            said = [v for f, v in hellos if f.src == member.mac and f[ARP].pdst == HOST_IP]
            assert said and set(said) == {its_vlan}, (member.name, hellos)

        cases: list[tuple[str, int | None, list[int | None]]] = [
            (ip10, 10, [10]),  # its VLAN: answered, tagged
            (ip20, 20, [20]),
            (ip20, 10, []),  # the other VLAN: never heard
            (ip10, 20, []),
            (ip10, None, []),  # untagged: VLAN 1, nobody there
            (ip10, 30, []),  # a VLAN the tap does not carry: dropped at once
        ]
        for ip, vlan, expected in cases:
            reader.send(who_has(ip, vlan))
            assert replies(arp_frames(reader, 1.0), ip) == expected, (ip, vlan)
        for guest in pair:
            (hello,) = guest.results()
            assert hello.returncode == 0, hello.describe()

    ports = mgmt_json(sw, "port/print")["ports"]
    (tap,) = [p for p in ports if p["name"] == f"tap:{TAP}"]
    assert tap["vlans"] == {"untagged": 1, "tagged": [10, 20]}
    assert tap["drops"]["vlan_not_member"] == 1, tap
    sw.check_alive()
    assert os.path.exists(sw.ctl)
