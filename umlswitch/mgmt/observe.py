"""Management commands for observing the switch: live capture, the event stream, metrics.

``pcap/stream [PORT]`` and ``events/stream`` turn the session into a byte stream. The answer is
the status line alone, without the prompt (``1000 Success\\n``); every byte after it is the
stream, until the client closes the connection (or the switch stops):

* ``pcap/stream``: a classic pcap file (the 24-byte header, then a record per frame), the
  frames as they pass (written every 20 ms). A reader slower than the traffic loses capture
  frames, never switch traffic (``pcap/showinfo`` shows ``dropped``). Only root or the switch's
  user may capture (as ``pcap/start``).
* ``events/stream``: one JSON object per line (``umlswitch.events``), first
  ``{"event": "events/subscribed", ...}``; events a slow reader lost are reported by an
  ``{"event": "events/lost", "count": N}`` line.

``umlswitch capture`` and ``umlswitch events`` (``mgmt/streams.py``) are their clients.
``metrics/start``, ``metrics/stop`` and ``metrics/showinfo`` run the ``--metrics`` endpoint
(so the ``--rc`` file can start it too).
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Sequence

import trio

from umlswitch.events import EVENTS_LOST, Subscription
from umlswitch.livecapture import Send
from umlswitch.metrics import parse_listen
from umlswitch.mgmt.commands import CommandError, Session, _port, command
from umlswitch.mgmt.views import Doc

SUBSCRIBED = "events/subscribed"


def _may_capture(session: Session) -> None:
    euid = os.geteuid()
    if session.peer.uid not in (0, euid):
        raise CommandError(
            errno.EACCES, f"only root or uid {euid} (the switch's user) may capture traffic"
        )


@command("pcap/stream", "[PORT]", "this session becomes a live pcap stream (umlswitch capture)")
async def _pcap_stream(session: Session, args: Sequence[str]) -> Doc:
    port = _port(session, args[0]) if args else None
    _may_capture(session)
    live = session.switch.live_captures

    async def stream(send: Send) -> None:
        await live.stream(send, port)

    session.stream = stream
    return {"streaming": "pcap", "port": port}


def _lines(events: list[dict[str, object]]) -> bytes:
    return b"".join(json.dumps(event).encode() + b"\n" for event in events)


async def stream_events(subscription: Subscription, send: Send, ports: list[int]) -> None:
    """Write the subscription's events as JSON lines until cancelled or ``send`` fails."""
    hello = {"event": SUBSCRIBED, "ts": round(time.time(), 6), "ports": ports}
    await send(_lines([hello]))
    reported = 0
    while True:
        events = await subscription.get()
        lost = subscription.lost
        if lost > reported:  # lost after those queued: the queue was full
            events.append({"event": EVENTS_LOST, "ts": events[-1]["ts"], "count": lost - reported})
            reported = lost
        await send(_lines(events))


@command("events/stream", "", "this session becomes a stream of events (umlswitch events)")
async def _events_stream(session: Session, args: Sequence[str]) -> Doc:
    switch = session.switch
    ports = sorted(switch.fabric.ports)

    async def stream(send: Send) -> None:
        with switch.bus.subscribe() as subscription:
            await stream_events(subscription, send, ports)

    session.stream = stream
    return {"streaming": "events"}


def _metrics_lines(doc: Doc) -> list[str]:
    return [f"metrics on {doc['url']}" if doc["running"] else "metrics off (metrics/start)"]


@command(
    "metrics/start",
    "[ADDR:]PORT",
    "serve Prometheus metrics (as --metrics)",
    render=_metrics_lines,
    changes=True,
)
async def _metrics_start(session: Session, args: Sequence[str]) -> Doc:
    try:
        address, port = parse_listen(args[0])
    except ValueError as exc:
        raise CommandError(errno.EINVAL, str(exc)) from None
    metrics = session.switch.metrics
    if metrics.address is not None:
        raise CommandError(errno.EBUSY, f"metrics are served on {metrics.url} (metrics/stop)")
    try:
        metrics.start(address, port)
    except OSError as exc:
        raise CommandError(exc.errno or errno.EIO, f"cannot listen on {args[0]}") from None
    return metrics.info()


@command("metrics/stop", "", "stop serving Prometheus metrics", render=_metrics_lines, changes=True)
async def _metrics_stop(session: Session, args: Sequence[str]) -> Doc:
    metrics = session.switch.metrics
    if metrics.address is None:
        raise CommandError(errno.EINVAL, "metrics are not being served")
    await trio.to_thread.run_sync(metrics.stop)
    return metrics.info()


@command("metrics/showinfo", "", "where Prometheus metrics are served", render=_metrics_lines)
async def _metrics_showinfo(session: Session, args: Sequence[str]) -> Doc:
    return session.switch.metrics.info()
