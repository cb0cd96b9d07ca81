"""``--metrics [ADDR:]PORT``: the switch's counters as Prometheus metrics on ``/metrics``.

A ``prometheus_client`` collector reads the switch's counters when Prometheus scrapes, and only
then: the data plane pays nothing per frame for metrics being on. The HTTP side is
``prometheus_client``'s own server (``start_http_server``) in a thread of its own, not a task of
trio's, for three reasons: it is the library's well-kept HTTP code (HEAD, gzip, keep-alive,
OpenMetrics negotiation) rather than one of ours; a slow or stuck scraper holds one of its
threads, never the control plane; and rendering a large switch's series does not delay trio's
timers. Reading from another thread is safe here because a scrape only reads: counters are plain
ints (a racy read is one frame off at worst), and every collection the switch changes (the port
table, a port's drop Counter, the spanning tree's ports) is copied first with ``list()`` or
``dict()``, which CPython does in one step under the GIL.

Series (labels ``port`` and ``name`` on every per-port series)::

    umlswitch_port_rx_frames_total, umlswitch_port_rx_bytes_total,
    umlswitch_port_tx_frames_total, umlswitch_port_tx_bytes_total,
    umlswitch_port_drops_total{reason}   every reason port/print counts, zero or not
    umlswitch_port_queue_frames          frames in the port's egress backlog now
    umlswitch_port_stalls_total          times its receiver stopped reading (port/print)
    umlswitch_ports, umlswitch_mac_table_entries,
    umlswitch_mac_events_total{event="learned|moved|expired|evicted"}
    umlswitch_stp_port_state{state}      1 for the port's spanning-tree state (only with STP on)
    umlswitch_build_info{version}, umlswitch_start_time_seconds
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from umlswitch import __version__, counters
from umlswitch.fabric.stp import State

if TYPE_CHECKING:
    from umlswitch.mgmt.managed import ManagedSwitch

log = logging.getLogger("umlswitch.metrics")

DEFAULT_ADDRESS = "127.0.0.1"
PORT_LABELS = ["port", "name"]
MAC_EVENTS = {  # the fabric's event counters (``learned`` is Fabric.learned)
    "moved": counters.MAC_MOVED,
    "expired": counters.MAC_EXPIRED,
    "evicted": counters.MAC_EVICTED,
}


def parse_listen(text: str) -> tuple[str, int]:
    """``[ADDR:]PORT`` (``9417``, ``0.0.0.0:9417``, ``[::1]:9417``; port 0: any free one) as
    (address, port); ValueError with what is wrong."""
    address, _, port_text = text.rpartition(":")
    address = address.removeprefix("[").removesuffix("]") or DEFAULT_ADDRESS
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"{text!r}: give [ADDR:]PORT with PORT from 0 (any free one) to 65535")
    return address, int(port_text)


def format_listen(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class SwitchCollector(Collector):
    """Reads a running switch at scrape time (from the HTTP server's thread)."""

    def __init__(self, switch: ManagedSwitch) -> None:
        self.switch = switch

    def collect(self) -> Iterator[Metric]:
        for _ in range(3):  # the port table changed while it was being copied: read it again
            try:
                metrics = self._read()
            except RuntimeError:
                continue
            yield from metrics
            return

    def _read(self) -> list[Metric]:
        switch = self.switch
        fabric = switch.fabric
        ports = sorted(list(fabric.ports.values()), key=lambda p: p.id)
        metrics = self._port_metrics(ports)
        metrics.append(GaugeMetricFamily("umlswitch_ports", "Attached ports.", value=len(ports)))
        metrics.append(
            GaugeMetricFamily(
                "umlswitch_mac_table_entries", "Entries in the MAC table.", value=len(fabric.table)
            )
        )
        events = CounterMetricFamily("umlswitch_mac_events", "MAC table events.", labels=["event"])
        counted = dict(fabric.events)
        events.add_metric(["learned"], fabric.learned)
        for label, key in MAC_EVENTS.items():
            events.add_metric([label], counted.get(key, 0))
        metrics.append(events)
        metrics.extend(self._stp_metrics(ports))
        metrics.append(
            InfoMetricFamily(
                "umlswitch_build", "umlswitch version.", value={"version": __version__}
            )
        )
        metrics.append(
            GaugeMetricFamily(
                "umlswitch_start_time_seconds",
                "When the switch started, seconds since the epoch.",
                value=switch.started_at,
            )
        )
        return metrics

    @staticmethod
    def _port_metrics(ports: list[Any]) -> list[Metric]:
        def counter(name: str, doc: str, extra: list[str] | None = None) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=PORT_LABELS + (extra or []))

        rx_frames = counter("umlswitch_port_rx_frames", "Frames received by the port.")
        rx_bytes = counter("umlswitch_port_rx_bytes", "Bytes received by the port.")
        tx_frames = counter("umlswitch_port_tx_frames", "Frames sent by the port.")
        tx_bytes = counter("umlswitch_port_tx_bytes", "Bytes sent by the port.")
        drops = counter("umlswitch_port_drops", "Frames dropped, by reason.", ["reason"])
        stalls = counter("umlswitch_port_stalls", "Times the port's receiver stopped reading.")
        queue = GaugeMetricFamily(
            "umlswitch_port_queue_frames",
            "Frames in the port's egress backlog.",
            labels=PORT_LABELS,
        )
        for port in ports:
            labels = [str(port.id), port.name]
            stats = port.stats
            rx_frames.add_metric(labels, stats.rx_frames)
            rx_bytes.add_metric(labels, stats.rx_bytes)
            tx_frames.add_metric(labels, stats.tx_frames)
            tx_bytes.add_metric(labels, stats.tx_bytes)
            stalls.add_metric(labels, stats.stalls)
            queue.add_metric(labels, stats.queued)
            dropped = dict(stats.drops)
            for reason in counters.DROP_REASONS:
                drops.add_metric([*labels, reason], dropped.get(reason, 0))
        return [rx_frames, rx_bytes, tx_frames, tx_bytes, drops, queue, stalls]

    def _stp_metrics(self, ports: list[Any]) -> list[Metric]:
        bridge = self.switch.guard.stp
        if bridge is None:
            return []
        family = GaugeMetricFamily(
            "umlswitch_stp_port_state",
            "1 for the port's spanning-tree state, 0 for the others.",
            labels=[*PORT_LABELS, "state"],
        )
        tree = dict(bridge.ports)
        for port in ports:
            entry = tree.get(port.id)
            if entry is None:
                continue
            for state in State:
                family.add_metric([str(port.id), port.name, state.value], entry.state is state)
        return [family]


class MetricsServer:
    """The HTTP endpoint: started and stopped from the control plane (``--metrics``, the
    management's ``metrics/start`` and ``metrics/stop``)."""

    def __init__(self, switch: ManagedSwitch) -> None:
        self.switch = switch
        self.address: tuple[str, int] | None = None  # where it listens; None: off
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self, address: str, port: int) -> None:
        """Listen on ``address``:``port``; OSError (e.g. the port is in use) if it cannot."""
        if self._server is not None:
            raise RuntimeError(f"metrics are served on {self.url} already")
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SwitchCollector(self.switch))
        self._server, self._thread = start_http_server(port, address, registry=registry)
        self.address = (address, self._server.server_port)
        log.info("metrics on %s", self.url)

    @property
    def url(self) -> str | None:
        if self.address is None:
            return None
        return f"http://{format_listen(*self.address)}/metrics"

    def stop(self) -> None:
        """Stop listening (blocks until the server's loop has ended: call it in a thread)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        log.info("metrics on %s stopped", self.url)
        self.address = None

    def info(self) -> dict[str, object]:
        return {"running": self.address is not None, "url": self.url}
