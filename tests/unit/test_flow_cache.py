"""Kept decisions change nothing a user can see: a fabric that reuses decisions (the flow cache)
and one that decides every frame anew (a capture is on: it must see every frame) send the same
frames to the same ports in the same order, and agree on counters, MAC table and events, one
frame at a time and in batches, with VLANs on or off, in hub or switch mode."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes import FakePort
from tests.unit.test_batch import MAX_FRAME, SLOT, batches, fill, make, observed, vlan_batches
from umlswitch.fabric.batch import FrameBatch
from umlswitch.fabric.fabric import Fabric


class Sink:
    """A capture that watches a port that does not exist: it records nothing."""

    port = 99

    def record(self, frame: bytes | memoryview) -> None:
        raise AssertionError("nothing to record")


def run(fabric: Fabric, ports: list[FakePort], plan: list, batched: bool) -> object:
    batch = FrameBatch(SLOT, 16)
    now = 0.0
    for ingress, received, step in plan:
        now += step
        fabric.tick(now)
        if batched:
            fill(batch, received)
            fabric.forward_batch(ports[ingress], batch)
            continue
        for data in received:
            if len(data) > MAX_FRAME:
                fabric.reject(ports[ingress], "giant", len(data))
            else:
                fabric.forward(ports[ingress], data)
    return observed(fabric, ports)


def check(plan: list, hub: bool, vlans: bool, batched: bool) -> None:
    kept, kept_ports = make(hub, vlans)
    anew, anew_ports = make(hub, vlans)
    anew.capture = Sink()
    assert kept.stages == (("vlan",) if vlans else ()) and "capture" in anew.stages
    assert run(kept, kept_ports, plan, batched) == run(anew, anew_ports, plan, batched)


@settings(max_examples=300, deadline=None)
@given(batches, st.booleans(), st.booleans())
def test_kept_decisions_agree_with_decisions_made_anew(plan: list, hub: bool, batched: bool):
    check(plan, hub, vlans=False, batched=batched)


@settings(max_examples=300, deadline=None)
@given(vlan_batches, st.booleans(), st.booleans())
def test_kept_decisions_agree_with_decisions_made_anew_with_vlans(
    plan: list, hub: bool, batched: bool
) -> None:
    check(plan, hub, vlans=True, batched=batched)
