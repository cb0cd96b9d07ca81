"""A scapy test harness for virtual LANs: attach to a switch as a UML guest does, send, capture.

Works with any switch that speaks the uml_switch daemon protocol: umlswitch or the C
``uml_switch``. Two flavours of the same port:

* trio: ``async with attach(ctl) as port: await port.send(pkt); reply = await port.receive()``
* synchronous: ``with attach_sync(ctl) as port: port.send(pkt); reply = port.receive()``

(``dialect=`` attaches as an older UML or a vde client does instead). Fence frames prove at
once that a frame did not arrive (``port.fence(receiver)``, ``umlswitch.testing.fence``).
Two ways to run a switch for a test: ``run_switch()`` (in-process, inside a trio test) and
``SwitchProcess`` (a subprocess, for synchronous suites, with any command line). The pytest plugin
(``umlswitch.testing.plugin``, registered through the ``pytest11`` entry point) turns them into
fixtures. scapy is imported here, never by the daemon.
"""

from umlswitch.daemon import READY
from umlswitch.testing.attaching import attach, attach_sync
from umlswitch.testing.fence import (
    FenceNotDelivered,
    fence_frame,
    frames_before_fence,
    frames_before_fence_sync,
    wait_until,
    wait_until_sync,
)
from umlswitch.testing.match import Match, matches
from umlswitch.testing.port import AsyncPort, SyncPort, guest_address
from umlswitch.testing.switch import RunningSwitch, SwitchProcess, run_switch

__all__ = [
    "READY",
    "AsyncPort",
    "FenceNotDelivered",
    "Match",
    "RunningSwitch",
    "SwitchProcess",
    "SyncPort",
    "attach",
    "attach_sync",
    "fence_frame",
    "frames_before_fence",
    "frames_before_fence_sync",
    "guest_address",
    "matches",
    "run_switch",
    "wait_until",
    "wait_until_sync",
]
