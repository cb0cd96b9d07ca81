"""Optional stages the fabric composes around the pipeline's steps, only while they are on.

* **Capture** wraps the decision: every frame admitted or not (giants aside) is offered to the
  capture once its egress is known, so that a capture of one port sees what it receives and what
  is sent to it. The flow cache is off meanwhile (the capture must see every frame).
* **Ingress hooks** (impairment of what a port receives) wrap the drivers: a frame from a port
  with a hook is the hook's first; it gives back what goes on (``IngressHook``).
* **Egress stages** (impairment of what is sent to a port) stand in for their port in the
  fabric's egress tables (``Fabric.egress_of``); what one needs besides the frame is which port
  sent it, for the frames it releases later (a backlog they fill holds that port back): the
  drivers are wrapped to note the ingress port in a ``SenderNote`` while any egress stage is on.
"""

from __future__ import annotations

from typing import Any

from umlswitch.fabric.batch import FrameBatch
from umlswitch.fabric.impair import IngressHook
from umlswitch.fabric.pipeline import (
    NO_RECEIVERS,
    Decide,
    EgressSet,
    FlowKey,
    Forward,
    ForwardBatch,
    Frame,
    Receivers,
)


def capturing(decide: Decide, capture: Any, max_frame: int) -> Decide:
    """``decide``, with every frame offered to the capture(s), which keep those they watch."""
    offer = capture.offer

    def decide_captured(
        ingress: Any, data: Frame, offset: int, size: int, key: FlowKey | None
    ) -> EgressSet:
        egress = decide(ingress, data, offset, size, None)
        if size <= max_frame:  # giants are not captured
            offer(data[offset : offset + size], ingress.id, egress)
        return egress

    return decide_captured


def with_ingress_hooks(
    forward: Forward, forward_batch: ForwardBatch, hooks: dict[int, IngressHook], max_frame: int
) -> tuple[Forward, ForwardBatch]:
    """The drivers, with the frames of a port that has a hook handed to the hook first."""
    hook_of = hooks.get

    def forward_hooked(ingress: Any, frame: Frame, size: int = -1) -> Receivers:
        hook = hook_of(ingress.id)
        if hook is not None and size <= max_frame:  # a giant is measured and dropped only
            if size >= 0:
                frame, size = frame[:size], -1
            if hook.take(frame):
                return NO_RECEIVERS  # lost or waiting; or sent altered or twice by the hook
        return forward(ingress, frame, size)

    def forward_batch_hooked(ingress: Any, batch: FrameBatch) -> Receivers:
        hook = hook_of(ingress.id)
        if hook is None:
            return forward_batch(ingress, batch)
        return hook.take_batch(batch)  # frame by frame, through forward

    return forward_hooked, forward_batch_hooked


class SenderNote:
    """The port whose frame the pipeline is sending, while an egress stage needs to know."""

    __slots__ = ("sender",)

    def __init__(self) -> None:
        self.sender: Any = None


def noting_sender(
    forward: Forward, forward_batch: ForwardBatch, note: SenderNote
) -> tuple[Forward, ForwardBatch]:
    """The drivers, noting the ingress port in ``note`` before they send."""

    def forward_noted(ingress: Any, frame: Frame, size: int = -1) -> Receivers:
        note.sender = ingress
        return forward(ingress, frame, size)

    def forward_batch_noted(ingress: Any, batch: FrameBatch) -> Receivers:
        note.sender = ingress
        return forward_batch(ingress, batch)

    return forward_noted, forward_batch_noted
