"""Three umlswitches in a ring of UDP links (``-ucast``), with ``--stp``: RSTP converges in well
under a second with one port discarding, one broadcast arrives once everywhere, and a client
attaching to any of them is an edge port that can talk at once.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.netns import netns_unavailable, private_netns
from umlswitch.testing import SwitchProcess, attach_sync

BASE = 41000
# link i joins (switch, switch): switch x's end listens on BASE + 2i, the other on BASE + 2i + 1
RING = [(0, 1), (1, 2), (2, 0)]


def ucast_args(switch: int) -> list[str]:
    args = []
    for i, (x, y) in enumerate(RING):
        if switch == x:
            args += ["-ucast", f"{BASE + 2 * i}:127.0.0.1:{BASE + 2 * i + 1}"]
        elif switch == y:
            args += ["-ucast", f"{BASE + 2 * i + 1}:127.0.0.1:{BASE + 2 * i}"]
    return args


def tree(sw: SwitchProcess) -> dict[str, Any]:
    with sw.manage() as client:
        doc: dict[str, Any] = client.json("fstp/print")
    return doc


def ring_states(switches: list[SwitchProcess]) -> list[str]:
    return sorted(
        p["state"] for sw in switches for p in tree(sw)["ports"] if p["name"].startswith("ucast")
    )


def converge(switches: list[SwitchProcess], since: float, root: str | None = None) -> float:
    """Seconds from ``since`` until the ring has exactly one discarding port (and every switch
    names ``root`` as the root)."""
    while time.monotonic() < since + 10:
        roots = {tree(sw)["root"] for sw in switches}
        if ring_states(switches) == ["discarding"] + ["forwarding"] * 5 and (
            root is None or roots == {root}
        ):
            return time.monotonic() - since
        time.sleep(0.01)
    raise AssertionError([tree(sw) for sw in switches])


def test_a_ring_of_three_converges_fast_and_passes_traffic_without_a_storm() -> None:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with private_netns():
        switches: list[SwitchProcess] = []
        try:
            for n in range(2):
                switches.append(SwitchProcess("--stp", *ucast_args(n)))
            started = time.monotonic()  # the third closes the ring
            switches.append(SwitchProcess("--stp", *ucast_args(2)))
            ready = time.monotonic() - started
            first = converge(switches, started)
            roots = {tree(sw)["root"] for sw in switches}
            assert len(roots) == 1
            # a new root: the one with the discarding port takes over, and all re-converge
            (blocked,) = [
                sw for sw in switches if any(p["state"] == "discarding" for p in tree(sw)["ports"])
            ]
            with blocked.manage() as client:
                changed = time.monotonic()
                client.json("fstp/setpriority 4096")
            again = converge(switches, changed, tree(blocked)["bridge"])
            assert tree(blocked)["is_root"]
            print(
                f"ring of 3 umlswitches (RSTP over -ucast): converged {first:.3f} s after the "
                f"third started (its start-up took {ready:.2f} s), {again:.3f} s after a new "
                "root was elected"
            )
            assert first - ready < 1.0 and again < 1.0

            a_mac, b_mac, c_mac, d_mac = (f"02:00:00:00:bb:0{n}" for n in range(1, 5))
            with (
                attach_sync(switches[0].control_path, mac=a_mac) as a,
                attach_sync(switches[1].control_path, mac=b_mac) as b,
                attach_sync(switches[2].control_path, mac=c_mac) as c,
            ):
                payload = b"one broadcast around the ring"
                a.send(a.ether() / payload)

                def has_payload(f: object) -> bool:
                    return payload in bytes(f)  # type: ignore[call-overload]

                # a's fence takes the broadcast's way along the tree: one copy each before it
                before_b, before_c = a.fence(b, c)
                assert len([f for f in before_b if has_payload(f)]) == 1
                assert len([f for f in before_c if has_payload(f)]) == 1
                # a newcomer on any switch talks at once: an edge port
                with attach_sync(switches[2].control_path, mac=d_mac) as d:
                    d.send(d.ether(dst=a_mac) / b"hello a")
                    # nothing a sent came back around the ring before it: no loop, no storm
                    came_back = []
                    while b"hello a" not in bytes(frame := a.receive(1.0)):
                        came_back.append(frame)
                    assert [f for f in came_back if f.src == a_mac] == []
                    a.send(a.ether(dst=d_mac) / b"hello d")
                    d.receive(1.0, match=lambda f: b"hello d" in bytes(f))
            for sw in switches:
                assert "LOOP?" not in sw.log
        finally:
            for sw in switches:
                sw.stop()
