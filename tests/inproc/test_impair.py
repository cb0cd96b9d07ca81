"""Impairment of live ports (``umlswitch/impair_control.py``) in the real daemon, inside the test.

The switch runs in the test's trio run (``run_switch``) with harness ports (``attach``), and most
tests use ``autojump_clock``: delays and rates are scheduled on trio's clock, so 100 ms of delay
takes no real time and arrival times are exact.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio
import trio.testing

from umlswitch.ports.base import Port
from umlswitch.ports.udp.spec import parse_ucast
from umlswitch.ports.unix.clients import ClientPort
from umlswitch.testing import AsyncPort, RunningSwitch, attach, run_switch, wait_until

from .switch import BROADCAST, MAC_A, MAC_B


def frame(src: str, dst: str, number: int, size: int = 100) -> bytes:
    """A frame from ``src`` to ``dst`` carrying ``number`` (``size`` bytes in all)."""
    header = bytes.fromhex(dst.replace(":", "") + src.replace(":", "")) + b"\x88\xb5"
    return header + number.to_bytes(4, "big") + bytes(size - 18)


def number(data: bytes) -> int:
    return int.from_bytes(data[14:18], "big")


async def learn(a: AsyncPort, b: AsyncPort) -> None:
    """Each port's MAC learned by the switch, so frames between them are unicast."""
    await a.send(frame(a.mac, BROADCAST, 0))
    await b.receive_bytes()
    await b.send(frame(b.mac, BROADCAST, 0))
    await a.receive_bytes()


def switch_port(switch: RunningSwitch, port: AsyncPort) -> Port:
    found = switch.switch.fabric.ports[switch.port_number(port)]
    assert isinstance(found, Port)
    return found


async def drain(port: AsyncPort, timeout: float = 1.0) -> list[tuple[float, bytes]]:
    """(trio time, frame) of everything ``port`` receives until nothing comes for ``timeout``."""
    got: list[tuple[float, bytes]] = []
    while True:
        try:
            data = await port.receive_bytes(timeout=timeout)
        except TimeoutError:
            return got
        got.append((trio.current_time(), data))


async def test_delay_out_holds_frames_for_the_delay_in_order(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        run_switch(tmp_path) as switch,
        attach(switch.control_path, mac=MAC_A) as a,
        attach(switch.control_path, mac=MAC_B) as b,
    ):
        await learn(a, b)
        doc = switch.impair(b, "out", delay="100ms")
        assert doc["in"] is None and doc["out"]["text"] == "delay 100ms, limit 1000"
        start = trio.current_time()
        for i in range(1, 21):
            await a.send(frame(MAC_A, MAC_B, i))
        got = await drain(b)
        assert [number(data) for _, data in got] == list(range(1, 21))
        assert all(at - start == pytest.approx(0.1, abs=1e-6) for at, _ in got)
        assert switch.counters()["ports"][2]["tx_frames"] == 21  # 1 to learn, 20 delayed
        assert switch.impairment(b)["out"]["events"]["delayed"] == 20


async def test_delay_in_holds_what_the_port_sends_and_counts_it_when_it_enters(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        run_switch(tmp_path) as switch,
        attach(switch.control_path, mac=MAC_A) as a,
        attach(switch.control_path, mac=MAC_B) as b,
    ):
        await learn(a, b)
        switch.impair(a, "in", delay="50ms")
        start = trio.current_time()
        await a.send(frame(MAC_A, MAC_B, 1))
        await trio.sleep(0.049)
        assert switch.counters()["ports"][1]["rx_frames"] == 1  # still only the learning one
        at, data = (await drain(b))[0]
        assert number(data) == 1 and at - start == pytest.approx(0.05, abs=1e-6)
        assert switch.counters()["ports"][1]["rx_frames"] == 2


async def test_loss_in_drops_before_the_switch_sees_the_frame(tmp_path: Path) -> None:
    async with (
        run_switch(tmp_path) as switch,
        attach(switch.control_path, mac=MAC_A) as a,
        attach(switch.control_path, mac=MAC_B) as b,
    ):
        switch.impair(a, "in", loss=100)
        for i in range(30):
            await a.send(frame(MAC_A, BROADCAST, i))
        await a.send(frame(MAC_A, BROADCAST, 99, size=2000))  # a giant stays a giant
        await b.send(frame(MAC_B, BROADCAST, 0))  # a fence: b's frame comes back to a
        await a.receive_bytes()
        await wait_until(
            lambda: switch.counters()["ports"][1]["drops"].get("impair_loss_in", 0) == 30,
            what="30 frames lost on the way in",
        )
        drops = switch.counters()["ports"][1]["drops"]
        assert drops["impair_loss_in"] == 30 and drops["giant"] == 1
        assert MAC_A not in switch.mac_table()  # lost frames are never learned from
        with pytest.raises(TimeoutError):
            await b.receive_bytes(timeout=0.2)


async def test_rate_spaces_frames_and_its_queue_bound_drops_the_rest(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """20 frames of 1000 bytes at once into 8 Mbit/s with room for 5: one every 1 ms, 15
    dropped and counted. On the way in, where the frames arrive as one batch (recvmmsg)."""
    async with (
        run_switch(tmp_path) as switch,
        attach(switch.control_path, mac=MAC_A) as a,
        attach(switch.control_path, mac=MAC_B) as b,
    ):
        await learn(a, b)
        switch.impair(a, "in", rate="8mbit", limit=5)
        start = trio.current_time()
        for i in range(1, 21):
            await a.send(frame(MAC_A, MAC_B, i, size=1000))
        got = await drain(b)
        assert [number(data) for _, data in got] == [1, 2, 3, 4, 5]
        assert [round(at - start, 6) for at, _ in got] == [0.001, 0.002, 0.003, 0.004, 0.005]
        assert switch.counters()["ports"][1]["drops"]["impair_full_in"] == 15
        assert switch.impairment(a)["in"]["dropped"] == {"loss": 0, "full": 15}


async def test_waiting_frames_go_at_once_when_the_impairment_ends_and_the_path_is_restored(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        run_switch(tmp_path) as switch,
        attach(switch.control_path, mac=MAC_A) as a,
        attach(switch.control_path, mac=MAC_B) as b,
    ):
        await learn(a, b)
        port_a, port_b = switch_port(switch, a), switch_port(switch, b)
        fabric = switch.switch.fabric
        assert type(port_b) is ClientPort and not fabric.stages  # the plain pipeline
        switch.impair(b, "both", delay="10s", loss=0.5, seed=1)  # seeded: none of 3 is lost
        switch.impair(a, "in", duplicate=1, seed=1)  # nor duplicated
        # Stages in the pipeline, standing in for b on egress; no class swapped.
        assert list(fabric.stages) == ["impair-in", "impair-out"] and type(port_b) is ClientPort
        assert fabric.egress_of(port_b) is not port_b
        for i in range(1, 4):
            await a.send(frame(MAC_A, MAC_B, i))
        await trio.sleep(1)
        start = trio.current_time()
        doc = switch.restore(b)
        assert doc["in"] is None and doc["out"] is None
        got = await drain(b, timeout=0.5)
        assert [number(data) for _, data in got] == [1, 2, 3]
        assert all(at == start for at, _ in got)
        # Exactly the path of a port never impaired: its own sends, no hook, no instance send.
        assert fabric.egress_of(port_b) is port_b and list(fabric.stages) == ["impair-in"]
        assert "send_nowait" not in vars(port_b) and "send_batch" not in vars(port_b)
        switch.restore(a)
        assert not fabric.stages and type(port_a) is ClientPort


async def test_impaired_context_restores_the_link_when_the_block_ends(tmp_path: Path) -> None:
    async with (
        run_switch(tmp_path) as switch,
        attach(switch.control_path, mac=MAC_A) as a,
    ):
        switch.impair(a, "in", loss=1)
        with switch.impaired(a, "out", delay=0.2, seed=7) as doc:
            assert doc["out"]["setting"]["delay"] == 0.2 and doc["out"]["seed"] == 7
            assert doc["in"]["setting"]["loss"] == 1
        after = switch.impairment(a)
        assert after["out"] is None and after["in"]["setting"]["loss"] == 1
        with pytest.raises(ZeroDivisionError), switch.impaired(a, loss=50):
            1 / 0  # noqa: B018
        assert switch.impairment(a)["in"]["setting"]["loss"] == 1
        with pytest.raises(ValueError, match="rate="):
            switch.impair(a, rate="fast")
        with pytest.raises(LookupError):
            switch.impair(99, loss=1)


async def test_a_port_that_leaves_takes_its_waiting_frames_along(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with run_switch(tmp_path) as switch, attach(switch.control_path, mac=MAC_A) as a:
        async with attach(switch.control_path, mac=MAC_B) as b:
            await learn(a, b)
            switch.impair(b, "out", delay="1s")
            port_b = switch_port(switch, b)
            for i in range(5):
                await a.send(frame(MAC_A, MAC_B, i))
            await trio.sleep(0.1)
            assert switch.impairment(b)["out"]["queued"] == 5
        with trio.fail_after(5):
            await port_b.detached.wait()
        await trio.sleep(2)  # the release task finds its port gone
        assert port_b.stats.drops["impair_full_out"] == 5
        assert switch.switch.fabric.queue_budget.used == 0
        async with attach(switch.control_path) as c:  # port 2 again: a new port, unimpaired
            await a.send(frame(MAC_A, BROADCAST, 9))
            assert number(await c.receive_bytes()) == 9
            assert switch.impairment(c) == {"id": 2, "name": switch_port(switch, c).name,
                                            "in": None, "out": None}  # fmt: skip


async def test_frames_released_late_still_go_through_the_backlog(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """b never reads: the delayed frames fill its socket, then its backlog (--port-queue 16),
    and only then are dropped, as egress_full, exactly as undelayed frames would be."""
    async with (
        run_switch(tmp_path, port_queue=16) as switch,
        attach(switch.control_path, mac=MAC_A) as a,
        attach(switch.control_path, mac=MAC_B) as b,
    ):
        await learn(a, b)
        switch.impair(b, "out", delay="10ms")
        for i in range(100):
            await a.send(frame(MAC_A, MAC_B, i))
        await trio.sleep(0.2)
        stats = switch.counters()["ports"][2]
        assert stats["queued"] == 16 and stats["drops"]["egress_full"] > 0
        assert stats["tx_frames"] - 1 + stats["queued"] + stats["drops"]["egress_full"] == 100
        assert stats["drops"].get("impair_full_out", 0) == 0


EVERYTHING = {
    "loss": 10,
    "delay": "5ms",
    "jitter": "4ms",
    "duplicate": 10,
    "reorder": 20,
    "corrupt": 10,
    "seed": 1234,
}


async def one_seeded_run(directory: Path) -> list[tuple[float, bytes]]:
    async with (
        run_switch(directory) as switch,
        attach(switch.control_path, mac=MAC_A) as a,
        attach(switch.control_path, mac=MAC_B) as b,
    ):
        await learn(a, b)
        switch.impair(b, "out", **EVERYTHING)
        start = trio.current_time()
        for i in range(1, 201):
            await a.send(frame(MAC_A, MAC_B, i))
            await trio.sleep(0.001)
        return [(round(at - start, 6), data) for at, data in await drain(b)]


async def test_a_seeded_run_gives_the_same_frames_twice(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    first = await one_seeded_run(tmp_path / "1")
    second = await one_seeded_run(tmp_path / "2")
    assert first == second
    numbers = [number(data) for _, data in first]
    assert len(set(numbers)) < 200 < len(numbers) + 60  # some lost, some twice
    assert numbers != sorted(numbers)  # jitter and reordering
    assert any(data[18:] != bytes(82) for _, data in first)  # some corrupted


async def test_giving_the_seed_again_replays_and_keeps_the_waiting_frames(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        run_switch(tmp_path) as switch,
        attach(switch.control_path, mac=MAC_A) as a,
        attach(switch.control_path, mac=MAC_B) as b,
    ):
        await learn(a, b)

        async def crossing() -> list[int]:
            for i in range(1, 41):
                await a.send(frame(MAC_A, MAC_B, i))
            return [number(data) for _, data in await drain(b, timeout=0.5)]

        switch.impair(b, "out", loss=50, seed=5)
        first = await crossing()
        switch.impair(b, "out", loss=50)  # no seed: the stream goes on
        assert await crossing() != first
        switch.impair(b, "out", loss=50, seed=5)  # the seed again: the same frames cross
        assert await crossing() == first and 0 < len(first) < 40

        switch.impair(b, "out", delay="100ms", seed=1)
        start = trio.current_time()
        for i in range(1, 4):
            await a.send(frame(MAC_A, MAC_B, i))
        await trio.sleep(0.05)
        switch.impair(b, "out", delay="100ms", seed=2)  # a new stream takes the queue along
        got = await drain(b)
        assert [number(data) for _, data in got] == [1, 2, 3]
        assert all(at - start == pytest.approx(0.1, abs=1e-6) for at, _ in got)


async def test_the_rc_file_impairs_a_port_given_on_the_command_line(tmp_path: Path) -> None:
    """--rc runs any management command before the switch serves: port/impair included, for a
    port given on the command line (here a UDP peer, which is port 1)."""
    rc = tmp_path / "switch.rc"
    rc.write_text("# a bad line to port 1 from the start\nport/impair 1 out delay=40ms seed=7\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    ucast = parse_ucast(f"{free}:127.0.0.1:9,bind=127.0.0.1")
    async with run_switch(str(tmp_path), ucast=(ucast,), rc=str(rc)) as running:
        switch = running.switch
        (port,) = switch.fabric.ports.values()
        setting = switch.impair.setting(port)
        assert setting.inbound is None
        assert setting.outbound is not None and setting.outbound.delay == 0.04
