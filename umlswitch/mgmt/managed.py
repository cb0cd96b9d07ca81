"""What the management console needs of the running switch, and nothing more.

The commands and views (``commands.py``, ``views.py``) and the ``--rc`` file depend on this
narrow interface, not on the daemon: ``daemon.Switch`` provides it, and a test can hand the
commands a switch of its own making.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Protocol

import trio

from umlswitch.capture import CaptureControl
from umlswitch.config import SwitchConfig
from umlswitch.events import EventBus
from umlswitch.fabric.fabric import Fabric
from umlswitch.fabric.guard import Guard
from umlswitch.impair_control import ImpairControl
from umlswitch.livecapture import LiveCaptures
from umlswitch.metrics import MetricsServer


class ManagedSwitch(Protocol):
    """A running switch as the management console sees it."""

    @property
    def config(self) -> SwitchConfig:
        """The command line's settings (the spanning tree's, when ``fstp/setfstp 1``)."""

    @property
    def fabric(self) -> Fabric: ...

    @property
    def guard(self) -> Guard:
        """Spanning tree and storm control."""

    @property
    def capture(self) -> CaptureControl: ...

    @property
    def impair(self) -> ImpairControl: ...

    @property
    def bus(self) -> EventBus:
        """The switch's events (``events/stream``)."""

    @property
    def live_captures(self) -> LiveCaptures:
        """Captures streamed to management sessions (``pcap/stream``)."""

    @property
    def metrics(self) -> MetricsServer:
        """The Prometheus endpoint (``--metrics``, ``metrics/start``)."""

    @property
    def control_path(self) -> str: ...

    @property
    def data_path(self) -> str | None: ...

    @property
    def mgmt_path(self) -> str | None: ...

    @property
    def started_at(self) -> float:
        """When the switch started (``time.time()``)."""

    @property
    def stream_names(self) -> list[str]:
        """The ``--stream`` listeners, as ``unix:PATH`` or ``tcp:HOST:PORT``."""

    def events(self) -> Counter[str]:
        """Switch-wide event counters: the fabric's and every attach path's refusals."""

    def unknown_senders(self) -> int:
        """Datagrams dropped on the shared data socket because no port owns their sender."""

    def reset_counters(self) -> None:
        """Zero the switch-wide counters kept outside the ports (the unknown senders)."""

    def remove_port(self, port_id: int) -> trio.Event | None:
        """Detach a port: an event set once it is gone, or None if there is no such port."""

    def shutdown(self) -> None:
        """Stop the switch (after the current command's answer)."""

    @property
    def restarts(self) -> int:
        """Seamless restarts this switch has been through."""

    async def restart(self, answer: Callable[[int], None] | None = None) -> None:
        """Hand over to a new process, calling ``answer(new_pid)`` just before this one exits;
        ``RestartFailed`` (this process serves on) if it does not happen."""
