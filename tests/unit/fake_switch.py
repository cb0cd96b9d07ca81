"""A switch for the management console built from the real cheap parts, without a socket.

``FakeSwitch`` satisfies ``umlswitch.mgmt.managed.ManagedSwitch`` with what the daemon uses
itself: a ``Fabric`` with its ``MacTable``, the guard of ``guard_control.install``, a
``CaptureControl``, an ``ImpairControl``, the ``Attachments`` that detach ports, and a
``SwitchConfig``. What the daemon gets from its sockets (the attach paths' events, the shared
data socket's unknown senders, the socket paths) are plain attributes a test sets. Ports are
``MemoryPort``: a real ``Port`` that keeps what it is sent and says of itself what a test tells
it to.

Commands run as the management server runs them: ``parse_line``, ``commands.execute`` with a
``commands.Session``, ``format_reply``; ``ask`` also parses the text back, as a client does, and
checks that it is the same answer.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from umlswitch import guard_control
from umlswitch.capture import CaptureControl
from umlswitch.config import SwitchConfig
from umlswitch.counters import PortStats
from umlswitch.events import EventBus
from umlswitch.fabric.batch import FrameBatch
from umlswitch.fabric.fabric import Fabric
from umlswitch.fabric.guard import Guard
from umlswitch.fabric.mactable import MacTable
from umlswitch.fabric.vlan import DEFAULT_MEMBERSHIP, Membership
from umlswitch.impair_control import ImpairControl
from umlswitch.listener import PeerCred
from umlswitch.livecapture import LiveCaptures
from umlswitch.metrics import MetricsServer
from umlswitch.mgmt import commands
from umlswitch.mgmt.protocol import (
    PROMPT,
    Reply,
    clean_line,
    format_reply,
    parse_line,
    parse_reply,
)
from umlswitch.ports.attachments import Attachments
from umlswitch.ports.base import Frame, Port, PortInfo
from umlswitch.restart.handover import RestartFailed

ME = PeerCred(os.getpid(), os.geteuid(), os.getegid())


class MemoryPort(Port):
    """A port whose peer is a list: what the switch sends it is kept in ``sent``."""

    kind = "memory"

    def __init__(
        self,
        port_id: int,
        *,
        peer: PeerCred | None = None,
        description: str = "",
        data_socket: str | None = None,
        vteps: dict[str, list[str]] | None = None,
        stp_edge: bool = True,
    ) -> None:
        super().__init__(port_id, f"mem:{port_id}")
        self.peer = peer
        self.description = description
        self.data_socket = data_socket
        self.vteps = vteps
        self.stp_edge = stp_edge  # a guest's port is an edge port of the spanning tree
        self.sent: list[bytes] = []
        self.closed = False

    def _send(self, frame: Frame) -> None:
        self.sent.append(bytes(frame))

    def close(self) -> None:
        self.closed = True

    def describe(self) -> PortInfo:
        return replace(super().describe(), data_socket=self.data_socket, vteps=self.vteps)


class BarePort:
    """A fabric port that is no ``Port``: it says nothing of itself to the console."""

    def __init__(self, port_id: int) -> None:
        self.id = port_id
        self.name = f"bare:{port_id}"
        self.stats = PortStats()

    def send_nowait(self, frame: bytes | memoryview) -> bool:
        self.stats.tx_frames += 1
        return False

    def send_batch(self, batch: FrameBatch, indices: list[int]) -> bool:
        for index in indices:
            self.send_nowait(batch.frame(index))
        return False


NEW_PID = 4321  # the pid a FakeSwitch's restart hands over to


@dataclass
class FakeSwitch:
    """What the management console sees of a running switch (``ManagedSwitch``)."""

    config: SwitchConfig = field(default_factory=SwitchConfig)
    control_path: str = "/nonexistent/ctl"
    data_path: str | None = None
    mgmt_path: str | None = None
    started_at: float = field(default_factory=time.time)
    stream_names: list[str] = field(default_factory=list)
    attach_events: Counter[str] = field(default_factory=Counter)  # the attach paths' refusals
    unknown: int = 0  # datagrams of unknown senders on the shared data socket
    shutdowns: int = 0  # how often shutdown() was called
    restarts: int = 0  # seamless restarts the switch has been through
    restart_requests: int = 0  # how often restart() was called
    restart_refusal: str | None = None  # why restart() fails; None: it succeeds

    def __post_init__(self) -> None:
        config = self.config
        table = MacTable(
            aging=config.aging, max_entries=config.max_macs, max_per_port=config.max_macs_per_port
        )
        self.fabric = Fabric(
            hub=config.hub, table=table, max_frame=config.max_frame, port_queue=config.port_queue
        )
        self.guard: Guard = guard_control.install(self.fabric, config)
        self.capture = CaptureControl(self.fabric)
        self.bus = EventBus()
        self.fabric.publish = self.bus.publish
        self.live_captures = LiveCaptures(self.capture.sinks)
        self.metrics = MetricsServer(self)
        self.impair = ImpairControl(self.fabric)
        self.attachments = Attachments(self.fabric)

    async def start(self, nursery: trio.Nursery) -> FakeSwitch:
        """Run the tasks the commands need (the capture writer's and impairment's hosts)."""
        await nursery.start(self.capture.run)
        await nursery.start(self.impair.run)
        return self

    def attach(
        self, port_id: int, vlans: Membership = DEFAULT_MEMBERSHIP, **info: Any
    ) -> MemoryPort:
        """Attach a ``MemoryPort`` the way every attach path does (``Attachments.attach``)."""
        port = MemoryPort(port_id, **info)
        self.attachments.attach_now(port, vlans)
        return port

    # --- ManagedSwitch ---------------------------------------------------------------------

    def events(self) -> Counter[str]:
        events = Counter(self.fabric.events)
        events.update(self.attach_events)
        return events

    def unknown_senders(self) -> int:
        return self.unknown

    def reset_counters(self) -> None:
        self.unknown = 0

    def remove_port(self, port_id: int) -> trio.Event | None:
        return self.attachments.remove(port_id)

    def shutdown(self) -> None:
        self.shutdowns += 1

    async def restart(self, answer: Callable[[int], None] | None = None) -> None:
        """A fake has no process to hand over: with ``restart_refusal`` the restart fails, as a
        broken one does; without, it answers as a real one does (and returns, not exits)."""
        self.restart_requests += 1
        if self.restart_refusal is not None:
            raise RestartFailed(self.restart_refusal)
        if answer is not None:
            answer(NEW_PID)


def session(switch: FakeSwitch, peer: PeerCred = ME) -> commands.Session:
    return commands.Session(switch, peer)


async def ask(session: commands.Session, line: str) -> Reply:
    """Run one command line as the server does, and return the answer a client reads."""
    invocation = parse_line(line)
    assert invocation is not None, f"{line!r} is no command"
    reply = await commands.execute(session, invocation)
    text = format_reply(reply)
    assert text.endswith(PROMPT) != session.ended, text  # the prompt, unless the session ends
    read = parse_reply(text)
    sent = None if reply.lines is None else tuple(map(clean_line, reply.lines))
    assert (read.code, read.lines) == (reply.code, sent), text
    return read


async def text(session: commands.Session, line: str) -> list[str]:
    """The data lines of a command that must succeed."""
    reply = await ask(session, line)
    assert reply.code == 1000, reply
    return list(reply.lines or ())


async def ask_json(session: commands.Session, line: str) -> Any:
    """``json LINE``: the one JSON document of a command that must succeed."""
    reply = await ask(session, f"json {line}")
    assert reply.ok, reply
    assert reply.lines is not None and len(reply.lines) == 1, reply
    return json.loads(reply.lines[0])


async def failure(session: commands.Session, line: str) -> str:
    """The status line of a command that must fail, checked against its JSON error."""
    reply = await ask(session, line)
    assert not reply.ok, reply
    as_json = await ask(session, f"json {line}")
    assert as_json.lines is not None
    error = json.loads(as_json.lines[0])["error"]
    assert (error["code"], error["message"]) == (reply.code, reply.message)
    return f"{reply.code} {reply.message}"
