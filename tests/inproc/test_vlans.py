"""VLANs in the real daemon, with clients that attach as UML guests do: control sockets bound to
VLANs (``-unix PATH,vlan=N`` / ``trunk=``), the ``--rc`` file, and membership changed at run time.

"A frame did not arrive" is checked without sleeping: once the sender's port has counted the
frame, the switch has sent it wherever it goes (forwarding is synchronous), so what is not queued
at a receiver by then never will be.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet, Raw

from umlswitch.daemon import StartupError, Switch
from umlswitch.fabric.vlan import Membership
from umlswitch.ports.stream.spec import StreamSpec
from umlswitch.testing import attach, run_switch, wait_until

from .client import SwitchClient, request_vde
from .switch import BROADCAST, MAC_A, MAC_B, MAC_C, port_of, start_switch

MAC_T = "02:00:00:00:00:74"


def frame(src: str, dst: str = BROADCAST, *tags: Packet, text: str = "") -> bytes:
    packet = Ether(src=src, dst=dst)
    for tag in tags:
        packet = packet / tag
    return bytes(packet / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP() / Raw(text.encode()))


async def sent_and_counted(switch: Switch, client: SwitchClient, data: bytes) -> None:
    """Send ``data`` from ``client`` and wait until the switch has handled it."""
    port = port_of(switch, client)
    before = port.stats.rx_frames
    await client.send(data)
    await wait_until(lambda: port.stats.rx_frames > before)


async def vlan_switch(nursery: trio.Nursery, tmp_path: Path, **options: object) -> Switch:
    controls = (
        (str(tmp_path / "v10.ctl"), Membership(10)),
        (str(tmp_path / "v20.ctl"), Membership(20)),
        (str(tmp_path / "trunk.ctl"), Membership(1, frozenset({10, 20}))),
    )
    return await start_switch(nursery, tmp_path, vlan_controls=controls, **options)


async def test_guests_on_vlan_sockets_meet_only_their_vlan_and_the_trunk(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    switch = await vlan_switch(nursery, tmp_path)
    a10 = await SwitchClient.attach(str(tmp_path / "v10.ctl"))
    b10 = await SwitchClient.attach(str(tmp_path / "v10.ctl"))
    a20 = await SwitchClient.attach(str(tmp_path / "v20.ctl"))
    trunk = await SwitchClient.attach(str(tmp_path / "trunk.ctl"))
    plain = await SwitchClient.attach(switch.control_path)
    clients = [a10, b10, a20, trunk, plain]
    async with a10, b10, a20, trunk, plain:
        await wait_until(lambda: len(switch.fabric.ports) == 5)
        vlans = switch.fabric.vlans
        assert vlans.membership(port_of(switch, a10).id) == Membership(10)
        assert vlans.membership(port_of(switch, a20).id) == Membership(20)
        assert vlans.membership(port_of(switch, trunk).id) == Membership(1, frozenset({10, 20}))
        assert vlans.membership(port_of(switch, plain).id) == Membership()

        # a VLAN 10 broadcast: the other VLAN 10 guest as sent, the trunk tagged, nobody else
        await sent_and_counted(switch, a10, frame(MAC_A))
        assert [c.pending() for c in clients] == [
            [],
            [frame(MAC_A)],
            [],
            [frame(MAC_A, BROADCAST, Dot1Q(vlan=10))],
            [],
        ]
        # the trunk on VLAN 20: untagged to the VLAN 20 guest only
        await sent_and_counted(switch, trunk, frame(MAC_T, BROADCAST, Dot1Q(vlan=20)))
        assert [c.pending() for c in clients] == [[], [], [frame(MAC_T)], [], []]
        # the trunk untagged: VLAN 1, the main control socket's guest
        await sent_and_counted(switch, trunk, frame(MAC_T))
        assert [c.pending() for c in clients] == [[], [], [], [], [frame(MAC_T)]]
        # unicast inside VLAN 10 goes to the learned port only; the trunk's MAC is known in
        # VLANs 1 and 20, not 10, so a frame to it from VLAN 10 is flooded there (tagged)
        await sent_and_counted(switch, b10, frame(MAC_B, MAC_A))
        await sent_and_counted(switch, b10, frame(MAC_B, MAC_T, text="to the trunk"))
        assert [c.pending() for c in clients] == [
            [frame(MAC_B, MAC_A), frame(MAC_B, MAC_T, text="to the trunk")],
            [],
            [],
            [frame(MAC_B, MAC_T, Dot1Q(vlan=10), text="to the trunk")],
            [],
        ]
        # a guest on an access port that sends tagged frames is not heard
        await sent_and_counted(switch, a20, frame(MAC_C, BROADCAST, Dot1Q(vlan=10)))
        assert [c.pending() for c in clients] == [[], [], [], [], []]
        assert port_of(switch, a20).stats.drops["vlan_not_member"] == 1


async def test_a_vde_client_on_a_vlan_socket_gets_its_data_socket_beside_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    vde_dir = tmp_path / "v10"
    vde_dir.mkdir()
    switch = await start_switch(
        nursery, tmp_path, vlan_controls=((str(vde_dir / "ctl"), Membership(10)),)
    )
    address = str(tmp_path / ".4242-00000")
    client = await SwitchClient.attach(
        str(vde_dir / "ctl"), address=address, request=request_vde(address)
    )
    async with client:
        assert isinstance(client.switch_address, str)
        assert Path(client.switch_address).parent == vde_dir
        await wait_until(lambda: len(switch.fabric.ports) == 1)
        assert switch.fabric.vlans.membership(port_of(switch, client).id) == Membership(10)


async def test_membership_changed_at_run_time_takes_effect_at_once(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    switch = await start_switch(nursery, tmp_path)
    one = await SwitchClient.attach(switch.control_path)
    two = await SwitchClient.attach(switch.control_path)
    async with one, two:
        await wait_until(lambda: len(switch.fabric.ports) == 2)
        tagged = frame(MAC_A, BROADCAST, Dot1Q(vlan=30))
        await sent_and_counted(switch, one, tagged)
        assert two.pending() == [tagged]  # no VLANs: tags pass through
        vlans = switch.fabric.vlans
        vlans.create(30)
        await sent_and_counted(switch, one, tagged)
        assert two.pending() == []  # VLANs on: port 1 does not carry 30
        vlans.add_tagged(30, port_of(switch, one).id)
        vlans.set_untagged(port_of(switch, two).id, 30)
        await sent_and_counted(switch, one, tagged)
        assert two.pending() == [frame(MAC_A)]


async def test_the_rc_file_runs_before_anything_attaches(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    rc = tmp_path / "switch.rc"
    rc.write_text("# lab VLANs\n\nvlan/create 30\njson vlan/print 30\nhash/setexpire 60\n")
    switch = await vlan_switch(nursery, tmp_path, rc=str(rc))
    assert switch.fabric.vlans.vlans == {1, 10, 20, 30}
    assert switch.fabric.table.aging == 60


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("vlan/create 30\n# fine so far\nvlan/addport 30 9\n", "line 3: vlan/addport 30 9: "),
        ("vlan/create 0\n", "line 1: vlan/create 0: Invalid argument: VLAN 0 is no VLAN"),
        ("no/such\n", "line 1: no/such: Function not implemented"),
        ("vlan/remove 10\n", "line 1: vlan/remove 10: Address already in use: VLAN 10 is in use"),
    ],
)
async def test_a_failing_rc_line_stops_the_start_with_its_number(
    tmp_path: Path, text: str, message: str
) -> None:
    rc = tmp_path / "switch.rc"
    rc.write_text(text)
    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            await vlan_switch(nursery, tmp_path, rc=str(rc))
    matched, rest = caught.value.split(StartupError)
    assert rest is None and matched is not None
    (error,) = leaves(matched)
    assert str(error).startswith(f"--rc {rc} line ")
    assert message in str(error)
    assert not (tmp_path / "ctl").exists()  # cleaned up as on any failed start
    assert not (tmp_path / "v10.ctl").exists()


def leaves(group: BaseExceptionGroup[StartupError]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


async def test_a_stream_listener_for_a_vlan_puts_qemu_guests_in_it(tmp_path: Path) -> None:
    """``--stream unix:PATH,vlan=10``: every connection is an access port of VLAN 10."""
    streams = (_stream_spec(f"unix:{tmp_path}/q10.sock,vlan=10"),)
    controls = ((str(tmp_path / "v10.ctl"), Membership(10)),)
    async with run_switch(tmp_path, streams=streams, vlan_controls=controls) as running:
        (address,) = running.stream_addresses
        async with (
            attach(address, mac=MAC_A, transport="stream") as qemu,
            attach(str(tmp_path / "v10.ctl"), mac=MAC_B) as uml,
            attach(running.control_path, mac=MAC_C) as other,
        ):
            await qemu.send(qemu.ether() / ARP(pdst="10.0.0.2"))
            got = await uml.receive(match=ARP)
            assert got.src == MAC_A and Dot1Q not in got
            assert await other.collect(0.2) == []
            fabric = running.switch.fabric
            stream_ports = [p for p in fabric.ports.values() if p.name.startswith("stream")]
            assert [fabric.vlans.membership(p.id) for p in stream_ports] == [Membership(10)]


def _stream_spec(text: str) -> StreamSpec:
    from umlswitch.config import parse_args

    (spec,) = parse_args(["--stream", text]).streams
    assert spec.vlans == Membership(10) and str(spec) == text
    return spec
