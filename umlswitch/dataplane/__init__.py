"""The data plane: every frame socket served by one ``epoll`` loop, beside trio's control plane.

What runs where is the layout of this package:

* ``loop.py`` — **runs in the data-plane thread**: the epoll set of every frame socket, the
  rounds that read, decide (``Fabric.forward``) and send, egress backlogs drained on
  ``EPOLLOUT``, back-pressure holds and the stall watchdog as timers.
* ``timers.py`` — **runs in the data-plane thread**: the loop's timer heap.
* ``mailbox.py`` — both sides: a queue with an eventfd, one per direction.
* ``plane.py`` — **runs in trio**: starts and stops the thread, posts changes and awaits their
  application between two rounds (``call``, ``barrier``), turns the loop's events (a port
  closed, a crash) into trio-side effects.

The port kinds keep their OS-level I/O (``Port.sources``: what to read, and how, without
awaiting anything); the fabric keeps the forwarding decision.
"""

from umlswitch.dataplane.plane import (
    DataPlane,
    DataPlaneCrashed,
    current,
    parked,
    plane_of,
    running,
)

__all__ = ["DataPlane", "DataPlaneCrashed", "current", "parked", "plane_of", "running"]
