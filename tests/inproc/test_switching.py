"""The real ``daemon.serve`` inside the test, with clients that attach exactly as UML does.

Each test starts the switch on ``tmp_path`` sockets in the pytest-trio ``nursery`` (cancelled at the
end of the test) and inspects the live ``Switch`` it reports: the fabric, the MAC table, the port
counters and the control-plane events. "A frame did not arrive" is checked without sleeping: a
later *fence* frame from the same sender must be the next thing the receiver gets.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import trio

from umlswitch.daemon import Switch
from umlswitch.fabric.queues import DEFAULT_PORT_QUEUE
from umlswitch.ports import vectorio
from umlswitch.ports.unix.clients import ClientPort, SharedPort
from umlswitch.testing import wait_until

from .client import (
    AttachRefused,
    SwitchClient,
    abstract_name,
    request_v1,
    request_v3,
    request_vde,
)
from .switch import (
    BROADCAST,
    MAC_A,
    MAC_B,
    MAC_D,
    attach_many,
    attach_uml_like,
    close_all,
    frame,
    port_of,
    raw_mac,
    start_switch,
    wait_attached,
)

# --- attaching ------------------------------------------------------------------------------------


async def test_reply_is_a_full_108_byte_abstract_address(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    switch = await start_switch(nursery, tmp_path)
    async with await SwitchClient.attach(switch.control_path) as client:
        assert isinstance(client.switch_address, bytes)
        assert len(client.switch_address) == 108
        assert client.switch_address[0] == 0
        await wait_attached(switch, 1)
        port = port_of(switch, client)
        assert isinstance(port, ClientPort)
        assert port.sock.getsockname() == client.switch_address
        assert port.sock.getpeername() == client.address  # connected to us before the reply


@pytest.mark.parametrize("dialect", ["v1", "v3", "vde-abstract", "vde-path"])
async def test_each_dialect_attaches_and_exchanges_frames(
    nursery: trio.Nursery, tmp_path: Path, dialect: str
) -> None:
    switch = await start_switch(nursery, tmp_path)
    address: bytes | str = abstract_name()
    if dialect == "v1":
        assert isinstance(address, bytes)
        request = request_v1(address)
    elif dialect == "v3":
        assert isinstance(address, bytes)
        request = request_v3(address)
    elif dialect == "vde-abstract":
        request = request_vde(address, description="qemu user=root pid=1")
    else:
        address = str(tmp_path / ".4242-00000")
        request = request_vde(address, description="vde_plug user=root pid=4242")
    client = await SwitchClient.attach(switch.control_path, address=address, request=request)
    other = await SwitchClient.attach(switch.control_path)
    async with client, other:
        await wait_attached(switch, 2)
        hello = frame(MAC_A, BROADCAST, "hello")
        await client.send(hello)
        assert await other.recv() == hello
        reply = frame(MAC_B, MAC_A, "reply")
        await other.send(reply)
        assert await client.recv() == reply
        assert switch.fabric.table.lookup(raw_mac(MAC_A)) == port_of(switch, client).id


async def test_vde_requested_port_number(nursery: trio.Nursery, tmp_path: Path) -> None:
    switch = await start_switch(nursery, tmp_path)
    name1, name2 = abstract_name(), abstract_name()
    first = await SwitchClient.attach(
        switch.control_path, address=name1, request=request_vde(name1, port=7)
    )
    async with first:
        await wait_until(lambda: 7 in switch.fabric.ports)
        with pytest.raises(AttachRefused):
            await SwitchClient.attach(
                switch.control_path, address=name2, request=request_vde(name2, port=7)
            )
        assert switch.control.events == {"attach_failed": 1}
        assert sorted(switch.fabric.ports) == [7]
        async with await SwitchClient.attach(switch.control_path):
            await wait_attached(switch, 2)
            assert sorted(switch.fabric.ports) == [1, 7]


async def test_whole_108_byte_address_is_the_identity(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Two UML-like names that differ only in the garbage after byte 12 are two clients."""
    switch = await start_switch(nursery, tmp_path)
    pid = os.getpid().to_bytes(4, "little")  # unique per test process, like UML's pid field
    name1 = abstract_name("uml", garbage=pid + bytes(range(1, 93)))
    name2 = abstract_name("uml", garbage=pid + bytes(range(2, 94)))
    assert name1[:12] == name2[:12]
    assert name1 != name2
    one = await SwitchClient.attach(switch.control_path, address=name1)
    two = await SwitchClient.attach(switch.control_path, address=name2)
    three = await SwitchClient.attach(switch.control_path)
    async with one, two, three:
        await wait_attached(switch, 3)
        from_one = frame(MAC_A, BROADCAST, "one")
        await one.send(from_one)
        assert await two.recv() == from_one
        assert await three.recv() == from_one
        to_one = frame(MAC_B, MAC_A, "to-one")
        await two.send(to_one)
        assert await one.recv() == to_one
        fence = frame(MAC_B, BROADCAST, "fence")
        await two.send(fence)
        assert await three.recv() == fence  # three never got to_one
        assert await one.recv() == fence


async def test_eof_before_a_request_leaves_the_switch_serving(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    switch = await start_switch(nursery, tmp_path)
    quitter = await SwitchClient.open(switch.control_path)
    quitter.close()
    clients = await attach_many(switch, 2)
    try:
        f = frame(MAC_A, BROADCAST)
        await clients[0].send(f)
        assert await clients[1].recv() == f
        assert switch.control.events == {}
    finally:
        close_all(clients)


# --- switching ------------------------------------------------------------------------------------


async def test_learning_sends_known_unicast_only_to_its_port(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    switch = await start_switch(nursery, tmp_path)
    a, b, c = await attach_many(switch, 3)
    try:
        hello_a = frame(MAC_A, BROADCAST, "hello-a")
        await a.send(hello_a)
        assert await b.recv() == hello_a
        assert await c.recv() == hello_a
        hello_b = frame(MAC_B, BROADCAST, "hello-b")
        await b.send(hello_b)
        assert await a.recv() == hello_b
        assert await c.recv() == hello_b

        table = switch.fabric.table
        assert table.lookup(raw_mac(MAC_A)) == port_of(switch, a).id
        assert table.lookup(raw_mac(MAC_B)) == port_of(switch, b).id

        to_b = frame(MAC_A, MAC_B, "to-b")
        await a.send(to_b)
        assert await b.recv() == to_b
        to_a = frame(MAC_B, MAC_A, "to-a")
        await b.send(to_a)
        assert await a.recv() == to_a

        fence = frame(MAC_A, BROADCAST, "fence")
        await a.send(fence)
        assert await c.recv() == fence  # C got neither unicast frame
        assert await b.recv() == fence
        assert [a.pending(), b.pending(), c.pending()] == [[], [], []]

        port_c = port_of(switch, c)
        assert port_c.stats.tx_frames == 3
        assert port_c.stats.rx_frames == 0
        assert port_of(switch, a).stats.rx_frames == 3
    finally:
        close_all([a, b, c])


async def test_broadcast_and_unknown_unicast_flood_to_all_others(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    switch = await start_switch(nursery, tmp_path)
    clients = await attach_many(switch, 4)
    try:
        sender, *others = clients
        for dst in (BROADCAST, "01:00:5e:00:00:fb", MAC_D):
            f = frame(MAC_A, dst, dst)
            await sender.send(f)
            for other in others:
                assert await other.recv() == f
        fence = frame(MAC_B, BROADCAST, "fence")
        await others[0].send(fence)
        assert await sender.recv() == fence  # nothing of its own came back to the sender
        assert sender.pending() == []
    finally:
        close_all(clients)


async def test_detach_forgets_the_ports_macs(nursery: trio.Nursery, tmp_path: Path) -> None:
    switch = await start_switch(nursery, tmp_path)
    a, b, c = await attach_many(switch, 3)
    try:
        await b.send(frame(MAC_B, BROADCAST, "b"))
        await b.send(frame(MAC_D, BROADCAST, "d"))  # a second host behind B's port
        await a.recv()
        await a.recv()
        assert c.pending() and len(switch.fabric.table) == 2
        port_b = port_of(switch, b)

        b.close()  # EOF on the control connection
        with trio.fail_after(5):
            await port_b.detached.wait()
        assert port_b.id not in switch.fabric.ports
        assert switch.fabric.table.lookup(raw_mac(MAC_B)) is None
        assert switch.fabric.table.lookup(raw_mac(MAC_D)) is None
        assert len(switch.fabric.table) == 0
        assert port_b.id not in switch.attachments

        to_b = frame(MAC_A, MAC_B, "to-b")
        await a.send(to_b)
        assert await c.recv() == to_b  # unknown again: flooded to whoever is left
    finally:
        close_all([a, b, c])


async def test_mac_entries_age_out(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """With --aging 2 (the ticker runs every 0.25 s): a silent MAC is forgotten after about 2 s,
    one that keeps talking is kept, and frames to a forgotten MAC are flooded again."""
    switch = await start_switch(nursery, tmp_path, aging=2.0)
    a, b, c = await attach_many(switch, 3)
    table = switch.fabric.table
    try:
        await a.send(frame(MAC_A, BROADCAST, "a"))
        await b.recv()
        await c.recv()
        await b.send(frame(MAC_B, BROADCAST, "b"))
        await a.recv()
        await c.recv()
        start = trio.current_time()
        assert table.lookup(raw_mac(MAC_A)) == port_of(switch, a).id
        assert table.lookup(raw_mac(MAC_B)) == port_of(switch, b).id

        await trio.sleep_until(start + 1.0)
        await a.send(frame(MAC_A, BROADCAST, "a-again"))  # refresh A only
        await b.recv()
        await c.recv()

        await trio.sleep_until(start + 2.5)
        assert table.lookup(raw_mac(MAC_B)) is None
        assert table.lookup(raw_mac(MAC_A)) == port_of(switch, a).id
        assert switch.fabric.events["mac_expired"] == 1

        to_b = frame(MAC_A, MAC_B, "to-b")
        await a.send(to_b)
        assert await b.recv() == to_b
        assert await c.recv() == to_b  # B was forgotten: flooded

        await trio.sleep_until(start + 5.0)
        assert len(table) == 0
        assert switch.fabric.events["mac_expired"] == 2
    finally:
        close_all([a, b, c])


async def test_receiver_that_never_reads_does_not_stop_the_others(
    nursery: trio.Nursery, tmp_path: Path, client_io: str
) -> None:
    """C never drains its socket. A and B exchange 2,000 frames each way with no loss while C's
    backlog fills up to --port-queue and every broadcast beyond it is dropped and counted as
    egress_full."""
    switch = await start_switch(nursery, tmp_path)
    a, b, c = await attach_many(switch, 3)
    total, window = 2000, 8
    # scapy takes ~1 ms per packet: build two packets once and number the copies in a trailer
    # (bytes after the IP packet, as ethernet padding), which the switch forwards untouched.
    from_a, from_b = frame(MAC_A, BROADCAST, "a"), frame(MAC_B, MAC_A, "b")
    try:
        for start in range(0, total, window):
            frames = [from_a + i.to_bytes(4, "big") for i in range(start, start + window)]
            for f in frames:
                await a.send(f)
            for f in frames:
                assert await b.recv(timeout=2) == f
            replies = [from_b + i.to_bytes(4, "big") for i in range(start, start + window)]
            for r in replies:
                await b.send(r)
            for r in replies:
                assert await a.recv(timeout=2) == r

        port_a, port_b, port_c = (port_of(switch, x) for x in (a, b, c))
        # The data-plane thread counts a frame just after the kernel took it: a reader may be
        # quicker than that count (counters are read from trio without a lock).
        await wait_until(lambda: port_a.stats.tx_frames == port_b.stats.tx_frames == total)
        assert port_a.stats.drops == {}
        assert port_b.stats.drops == {}
        assert port_b.stats.tx_frames == total
        assert port_a.stats.tx_frames == total
        full = port_c.stats.drops["egress_full"]
        assert full >= total - 1000
        assert port_c.stats.queued == port_c.stats.queue_high == DEFAULT_PORT_QUEUE
        assert port_c.stats.tx_frames + port_c.stats.queued + full == total
        # what was queued is intact (the thread counts a frame a moment after the kernel took it)
        await wait_until(lambda: len(c.pending()) == port_c.stats.tx_frames)
        # C's full backlog held A back once; C drained nothing within STALL_TIMEOUT, so it was
        # declared stalled and held nobody after that (A's 2,000 frames all went through).
        assert port_c.stats.stalls == 1
        assert port_a.stats.paused >= 1
    finally:
        close_all([a, b, c])


@pytest.fixture(params=["vector-io", "no-vector-io"])
def client_io(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Client ports read and written with recvmmsg/sendmmsg, or a frame per system call, as
    where Linux's vector calls are missing: the backlog rules must hold for both."""
    if request.param == "no-vector-io":
        monkeypatch.setattr(vectorio, "available", lambda: False)
    return str(request.param)


async def _burst_to_paused_receiver(
    switch: Switch, sender: SwitchClient, receiver: SwitchClient, count: int
) -> list[bytes]:
    """``sender`` sends ``count`` numbered frames to ``receiver``, which reads none until the
    switch has taken them all in; returns the frames sent."""
    learn = frame(MAC_B, MAC_A, "learn")
    await receiver.send(learn)
    assert await sender.recv() == learn  # flooded to A; B's address is learned now
    template = frame(MAC_A, MAC_B, "burst")
    burst = [template + i.to_bytes(4, "big") for i in range(count)]
    for f in burst:
        await sender.send(f)
    port_a = port_of(switch, sender)
    await wait_until(lambda: port_a.stats.rx_frames == count)
    return burst


async def test_burst_to_a_receiver_that_pauses_arrives_whole_and_in_order(
    nursery: trio.Nursery, tmp_path: Path, client_io: str
) -> None:
    """A guest's socket holds max_dgram_qlen frames (10 by default): a burst of 200 is more than
    that. The rest waits in the port's backlog and arrives, in order, once the guest reads."""
    switch = await start_switch(nursery, tmp_path)
    a, b = await attach_uml_like(switch, 2)
    try:
        burst = await _burst_to_paused_receiver(switch, a, b, 200)
        port_b = port_of(switch, b)
        assert port_b.stats.queued > 0  # the guest's queue overflowed: the backlog held the rest
        received = [await b.recv(timeout=2) for _ in burst]
        assert received == burst
        assert port_b.stats.drops == {}
        await wait_until(lambda: port_b.stats.queued == 0)
        assert port_b.stats.tx_frames == len(burst)
        assert 0 < port_b.stats.queue_high < len(burst)
    finally:
        close_all([a, b])


async def test_full_backlog_drops_the_newest_frames(
    nursery: trio.Nursery, tmp_path: Path, client_io: str
) -> None:
    """--port-queue bounds the backlog: what does not fit is dropped at the tail and counted;
    what was kept arrives intact and in order."""
    switch = await start_switch(nursery, tmp_path, port_queue=20)
    a, b = await attach_uml_like(switch, 2)
    try:
        burst = await _burst_to_paused_receiver(switch, a, b, 100)
        port_b = port_of(switch, b)
        assert port_b.stats.queued == port_b.stats.queue_high == 20
        dropped = port_b.stats.drops["egress_full"]
        received: list[bytes] = []
        with trio.move_on_after(0.5):
            while len(received) < len(burst) - dropped:
                received.append(await b.recv(timeout=2))
        assert received == burst[: len(received)]
        assert len(received) + dropped == len(burst)
        # the data plane counts a frame once the kernel took it: a moment after it can be read
        await wait_until(lambda: port_b.stats.tx_frames == len(received))
        fence = frame(MAC_A, MAC_B, "fence")
        await a.send(fence)
        assert await b.recv() == fence  # nothing else was left over
    finally:
        close_all([a, b])


# --- misbehaving clients --------------------------------------------------------------------------


async def test_byte_on_control_connection_detaches(nursery: trio.Nursery, tmp_path: Path) -> None:
    switch = await start_switch(nursery, tmp_path)
    a, b = await attach_many(switch, 2)
    try:
        await a.send(frame(MAC_A, BROADCAST))
        await b.recv()
        port_a = port_of(switch, a)
        await a.send_control(b"x")
        assert await a.recv_control() == b""  # the switch closed it
        await wait_until(lambda: port_a.id not in switch.fabric.ports)
        assert switch.control.events == {"bad_request": 1}
        assert switch.fabric.table.lookup(raw_mac(MAC_A)) is None
        assert list(switch.fabric.ports) == [port_of(switch, b).id]
    finally:
        close_all([a, b])


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"\xce\xfa", id="two-bytes"),
        pytest.param(request_v3(abstract_name())[:60], id="half-a-v3-request"),
    ],
)
async def test_silent_client_is_dropped_after_handshake_timeout(
    nursery: trio.Nursery, tmp_path: Path, sent: bytes
) -> None:
    switch = await start_switch(nursery, tmp_path, handshake_timeout=0.3)
    async with await SwitchClient.open(switch.control_path) as client:
        start = trio.current_time()
        if sent:
            await client.send_control(sent)
        assert await client.recv_control(timeout=3) == b""
        elapsed = trio.current_time() - start
        assert 0.25 <= elapsed < 2.0
        assert switch.control.events == {"handshake_timeout": 1}
        assert switch.fabric.ports == {}


@pytest.mark.parametrize("version", [2, 4, 99])
async def test_unsupported_version_is_refused(
    nursery: trio.Nursery, tmp_path: Path, version: int
) -> None:
    switch = await start_switch(nursery, tmp_path)
    name = abstract_name()
    with pytest.raises(AttachRefused):
        await SwitchClient.attach(
            switch.control_path, address=name, request=request_v3(name, version=version)
        )
    assert switch.control.events == {"unsupported_version": 1}
    assert switch.fabric.ports == {}


@pytest.mark.parametrize("max_frame", [1518, 65535])
async def test_runt_and_giant_are_dropped_and_the_next_frame_passes(
    nursery: trio.Nursery, tmp_path: Path, max_frame: int
) -> None:
    switch = await start_switch(nursery, tmp_path, max_frame=max_frame)
    a, b = await attach_many(switch, 2)
    try:
        good = frame(MAC_A, BROADCAST, "good")
        await a.send(good[:10])
        await a.send(b"")
        await a.send(frame(MAC_A, BROADCAST, "giant", size=max_frame + 1))
        await a.send(good)
        assert await b.recv() == good
        biggest = frame(MAC_A, BROADCAST, "biggest", size=max_frame)
        await a.send(biggest)
        received = await b.recv()
        assert len(received) == max_frame  # never truncated
        assert received == biggest
        assert b.pending() == []
        stats = port_of(switch, a).stats
        assert stats.drops == {"runt": 2, "giant": 1}
        assert stats.rx_frames == 5
    finally:
        close_all([a, b])


# --- v0 and the shared data socket ----------------------------------------------------------------


async def test_v0_client_on_the_shared_data_socket(nursery: trio.Nursery, tmp_path: Path) -> None:
    data_path = str(tmp_path / "data")
    switch = await start_switch(nursery, tmp_path, data_path=data_path)
    assert switch.shared is not None
    old = await SwitchClient.attach_v0(switch.control_path, data_path)
    new = await SwitchClient.attach(switch.control_path)
    async with old, new:
        await wait_attached(switch, 2)
        assert not old.control_readable()  # a v0 request gets no reply
        assert isinstance(port_of(switch, old), SharedPort)

        from_old = frame(MAC_A, BROADCAST, "from-old")
        await old.send(from_old)
        assert await new.recv() == from_old
        to_old = frame(MAC_B, MAC_A, "to-old")
        await new.send(to_old)
        assert await old.recv() == to_old
        assert switch.fabric.table.lookup(raw_mac(MAC_A)) == port_of(switch, old).id
        assert switch.shared.unknown_senders == 0
        assert not old.control_readable()  # still nothing on the control connection

        old.close()
        await wait_attached(switch, 1)
        assert switch.fabric.table.lookup(raw_mac(MAC_A)) is None
        assert not switch.shared.is_registered(old.address)


async def test_v0_without_a_shared_data_socket_is_refused(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    switch = await start_switch(nursery, tmp_path)
    async with await SwitchClient.attach_v0(switch.control_path, str(tmp_path / "data")) as old:
        assert await old.recv_control() == b""
        assert switch.control.events == {"attach_failed": 1}
        assert switch.fabric.ports == {}


@pytest.mark.parametrize("bound", [True, False], ids=["bound-sender", "unbound-sender"])
async def test_unregistered_sender_on_the_shared_socket_is_dropped_not_flooded(
    nursery: trio.Nursery, tmp_path: Path, bound: bool
) -> None:
    data_path = str(tmp_path / "data")
    switch = await start_switch(nursery, tmp_path, data_path=data_path)
    assert switch.shared is not None
    victim, other = await attach_many(switch, 2)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rogue:
            if bound:
                rogue.bind(abstract_name())
            rogue.sendto(frame(MAC_D, BROADCAST, "injected"), data_path)
            rogue.sendto(frame(MAC_D, MAC_A, "injected-unicast"), data_path)
            await wait_until(
                lambda: switch.shared is not None and switch.shared.unknown_senders == 2
            )
        fence = frame(MAC_B, BROADCAST, "fence")
        await other.send(fence)
        assert await victim.recv() == fence
        assert victim.pending() == []
        assert switch.fabric.table.lookup(raw_mac(MAC_D)) is None
    finally:
        close_all([victim, other])
