"""The daemon's life in trio: run the ports in one root nursery, shut down cleanly (the sockets
are bound first by ``binding.py``; signals and stdin are watched by ``watchers.py``).

Start-up order (as trio's ``serve_listeners``): bind the control socket and the shared data socket
first, so any failure is one clear line and exit status 1; then start every task in one nursery;
then run the ``--rc`` file's commands (a failing one stops the start), then announce, and report
the live ``Switch`` through ``task_status.started``. SIGINT and SIGTERM
cancel the root scope, as does EOF on stdin when stdin is a terminal or a pipe; the clean-up runs
shielded and removes every socket file the switch created.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from umlswitch import __version__, dataplane, guard_control, watchers
from umlswitch.binding import BoundSockets, bind_sockets
from umlswitch.capture import CaptureControl
from umlswitch.config import SwitchConfig, link_name
from umlswitch.dataplane import DataPlane
from umlswitch.errors import StartupError as StartupError  # re-exported
from umlswitch.events import RESTART, EventBus
from umlswitch.fabric.fabric import Fabric
from umlswitch.fabric.guard import Guard
from umlswitch.fabric.mactable import MacTable
from umlswitch.fabric.queues import QueueBudget
from umlswitch.fabric.vlan import DEFAULT_MEMBERSHIP
from umlswitch.impair_control import ImpairControl
from umlswitch.livecapture import LiveCaptures
from umlswitch.metrics import MetricsServer, format_listen
from umlswitch.mgmt.rcfile import run_rc_file
from umlswitch.mgmt.server import MgmtServer
from umlswitch.ports.attachments import Attachments
from umlswitch.ports.base import Port, PortClosed
from umlswitch.ports.slirp.helper import SlirpUplink
from umlswitch.ports.stream.link import StreamLink
from umlswitch.ports.stream.server import StreamServer
from umlswitch.ports.unix import peercheck
from umlswitch.ports.unix.clients import SharedDataSocket
from umlswitch.ports.unix.server import ControlServer
from umlswitch.restart import fdstore
from umlswitch.restart.handover import Incoming, Restarter, RestartFailed
from umlswitch.systemd import STATUS_INTERVAL, Notifier

log = logging.getLogger("umlswitch")

# What the start-up log line says once the switch serves (scripts and the harness wait for it).
READY = "attached to unix socket"
TICK = 0.25  # seconds between updates of the fabric's coarse clock (and MAC aging)


@dataclass
class Switch:
    """The running switch, as reported to ``task_status.started``: live objects for tests, and
    what the management console needs (``mgmt.managed.ManagedSwitch``)."""

    config: SwitchConfig
    fabric: Fabric
    guard: Guard  # STP and storm control (guard_control.install)
    control: ControlServer
    shared: SharedDataSocket | None
    attachments: Attachments  # every attached port, whichever way it came
    control_path: str
    data_path: str | None
    started_at: float
    cancel_scope: trio.CancelScope
    capture: CaptureControl
    impair: ImpairControl
    mgmt_path: str | None = None
    # the --stream listeners, whose connections are ports
    streams: list[StreamServer] = field(default_factory=list)
    # observability (docs/observability.md): events, live captures, Prometheus metrics
    bus: EventBus = field(default_factory=EventBus)
    live_captures: LiveCaptures = field(init=False)
    metrics: MetricsServer = field(init=False)
    links: list[StreamLink] = field(default_factory=list)  # --stream-connect
    slirp: SlirpUplink | None = None  # --slirp (set once it is started)
    restarts: int = 0  # seamless restarts this switch has been through (umlswitch/restart/)
    restarter: Restarter | None = None

    def __post_init__(self) -> None:
        self.fabric.publish = self.bus.publish
        self.live_captures = LiveCaptures(self.capture.sinks)
        self.metrics = MetricsServer(self)

    @property
    def stream_names(self) -> list[str]:
        return [stream.name for stream in self.streams]

    def events(self) -> Counter[str]:
        events = Counter(self.fabric.events)
        events.update(self.control.events)
        for stream in self.streams:
            events.update(stream.events)
        for link in self.links:
            events.update(link.events)
        if self.slirp is not None:
            events.update(self.slirp.events)
        return events

    def unknown_senders(self) -> int:
        return 0 if self.shared is None else self.shared.unknown_senders

    def reset_counters(self) -> None:
        if self.shared is not None:
            self.shared.unknown_senders = 0

    def shutdown(self) -> None:
        self.cancel_scope.cancel()

    async def restart(self, answer: Callable[[int], None] | None = None) -> None:
        """Hand over to a new process (this one exits); RestartFailed: this one serves on."""
        if self.restarter is None:
            raise RestartFailed("the switch is not serving yet")
        await self.restarter.restart(answer)

    def allow_restarts(self, sockets: BoundSockets, nursery: trio.Nursery) -> Callable[[], None]:
        """From now on the switch may restart; the callable restarts it in ``nursery``."""
        self.restarter = Restarter(self, sockets)
        return functools.partial(self.request_restart, nursery)

    def request_restart(self, nursery: trio.Nursery) -> None:
        """SIGUSR2: restart in the background; a failure is logged, the switch serves on."""

        async def restart() -> None:
            try:
                await self.restart()
            except RestartFailed as exc:
                log.error("restart failed: %s; this process (pid %d) serves on", exc, os.getpid())

        nursery.start_soon(restart)

    def remove_port(self, port_id: int) -> trio.Event | None:
        """Detach a port as if its peer had left (management's port/remove): the event set once
        it is gone; None if there is no such port."""
        return self.attachments.remove(port_id)


async def _static_port_life(port: Port, fabric: Fabric) -> str:
    """A start-up port runs until shutdown; if its peer or device vanishes, it leaves alone."""
    try:
        await port.run(fabric)
    except PortClosed as exc:
        log.warning("port %d (%s) detached: %s; the switch keeps running", port.id, port.name, exc)
        return str(exc)
    return "shutdown"


async def _ticker(fabric: Fabric, plane: DataPlane) -> None:
    """The fabric's coarse clock and MAC aging, applied by the data plane between two rounds."""
    while True:
        plane.apply(fabric.tick, trio.current_time())
        await trio.sleep(TICK)


def _call_first(hooks: list[Callable[[], None]]) -> None:
    """Call the first of ``hooks``; none yet: the switch does not serve yet, say so."""
    if hooks:
        hooks[0]()
    else:
        log.warning("caught SIGUSR2 before the switch serves; no restart")


async def _take_over(
    handover: Incoming | fdstore.Recovery,
    switch: Switch,
    sockets: BoundSockets,
    nursery: trio.Nursery,
) -> bool:
    """Take the previous process's ports and state (a restart; or systemd's fd store after a
    crash) and run the ports; from then on the socket files, and the pidfile (whether written),
    are ours."""
    for runner in await handover.take_over(switch, sockets):
        nursery.start_soon(runner)
    switch.restarts = handover.restarts
    switch.bus.publish(RESTART, phase="done", restarts=switch.restarts)
    switch.started_at = handover.started_at or switch.started_at
    handover.running(sockets)
    return _write_pidfile(switch.config.pidfile)


async def _start_capture(
    nursery: trio.Nursery, fabric: Fabric, config: SwitchConfig, sockets: BoundSockets
) -> CaptureControl:
    """The capture control, capturing to the --pcap file from the start if there is one."""
    capture = CaptureControl(fabric)
    await nursery.start(capture.run)
    if sockets.capture_file is not None and config.pcap is not None:
        capture.start(sockets.capture_file, config.pcap)
    return capture


def _report_to_systemd(
    nursery: trio.Nursery, notify: Notifier, switch: Switch, sockets: BoundSockets
) -> None:
    """READY=1 now, STATUS= while running, and the fd store if the unit keeps one."""
    notify.ready(_status_line(switch.fabric, sockets.control_path))
    nursery.start_soon(_report_status, notify, switch.fabric, sockets.control_path)
    if fdstore.enabled():
        nursery.start_soon(fdstore.FdStore(notify).run, switch, sockets)


def _write_pidfile(path: str | None) -> bool:
    """Write our pid to ``path`` (none: nothing); whether a pidfile was written."""
    if not path:
        return False
    try:
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")
    except OSError as exc:
        raise StartupError(f"cannot write pidfile '{path}': {exc.strerror}") from None
    return True


async def _report_status(notify: Notifier, fabric: Fabric, control_path: str) -> None:
    """Keep systemd's STATUS= (``systemctl status``) up to date with the ports and MACs."""
    while True:
        notify.status(_status_line(fabric, control_path))
        await trio.sleep(STATUS_INTERVAL)


def data_path_prefix(control_path: str) -> str:
    """Where the pathname data sockets of a control socket's vde clients go: ``DIR/`` for a
    control socket ``DIR/ctl`` (vde's layout), else beside it as ``CTL.``."""
    if os.path.basename(control_path) == "ctl":
        return os.path.join(os.path.dirname(control_path), "")
    return control_path + "."


def _status_line(fabric: Fabric, control_path: str) -> str:
    mode = "hub" if fabric.hub else "switch"
    return f"{mode} on {control_path}: {len(fabric.ports)} port(s), {len(fabric.table)} MAC(s)"


def _build_fabric(config: SwitchConfig) -> Fabric:
    """The forwarding core with the MAC table, frame and queue limits of the command line."""
    table = MacTable(
        aging=config.aging,
        max_entries=config.max_macs,
        max_per_port=config.max_macs_per_port,
    )
    return Fabric(
        hub=config.hub,
        table=table,
        max_frame=config.max_frame,
        now=trio.current_time(),
        port_queue=config.port_queue,
        queue_budget=QueueBudget(config.queue_memory),
    )


def _control_server(
    config: SwitchConfig,
    sockets: BoundSockets,
    fabric: Fabric,
    shared: SharedDataSocket | None,
    attachments: Attachments,
) -> ControlServer:
    """The control socket's server, with a listener more for each control socket of VLANs."""
    unverifiable = peercheck.self_test()
    if unverifiable is not None:
        log.warning(
            "cannot verify that clients name their own data sockets: %s; trusting clients",
            unverifiable,
        )
    server = ControlServer(
        trio.socket.from_stdlib_socket(sockets.control),
        fabric,
        shared=shared,
        handshake_timeout=config.handshake_timeout,
        verify_peers=unverifiable is None,
        max_ports=config.max_ports,
        max_pending=config.max_pending,
        data_path_prefix=data_path_prefix(sockets.control_path),
        attachments=attachments,
    )
    for sock, path, vlans in sockets.vlan_controls:
        fabric.vlans.bind(path, vlans)
        server.add_listener(
            trio.socket.from_stdlib_socket(sock), data_path_prefix(path), vlans, path
        )
    if sockets.slirp is not None:
        server.add_private_listener(sockets.slirp.entrance())
    return server


def _stream_servers(
    config: SwitchConfig, sockets: BoundSockets, fabric: Fabric, attachments: Attachments
) -> list[StreamServer]:
    streams = [
        StreamServer(
            sock, name, fabric, max_ports=config.max_ports, vlans=vlans, attachments=attachments
        )
        for name, sock, vlans in sockets.streams
    ]
    for stream in streams:
        if not stream.vlans.is_default:
            fabric.vlans.bind(stream.name, stream.vlans)
    return streams


async def _attach_static_ports(
    config: SwitchConfig, ports: list[Port], attachments: Attachments, impair: ImpairControl
) -> None:
    """Attach the command line's ports (UDP peers, overlays, taps) in their VLANs, impaired
    as the command line says."""
    port_vlans = dict(config.vlans)
    impairments = dict(config.impair)
    for port in ports:
        port.id = attachments.allocate_id()
        vlans = port_vlans.get(port.name, DEFAULT_MEMBERSHIP)
        await attachments.attach(port, vlans)
        in_vlans = "" if vlans.is_default else f" (VLAN {vlans.describe()})"
        log.info("port %d attached: %s%s", port.id, port.name, in_vlans)
        if port.name in impairments:
            impair.apply(port, impairments[port.name])


async def _open_links(
    config: SwitchConfig, attachments: Attachments, impair: ImpairControl
) -> list[StreamLink]:
    """The --stream-connect links' ports (held while they connect), in their VLANs and
    impaired as the command line says; they run once the --rc file has run. A restarted
    switch opens them anew: a link is not handed over (its peer sees the old connection end)."""
    port_vlans = dict(config.vlans)
    impairments = dict(config.impair)
    links = []
    for spec in config.stream_connects:
        name = link_name(spec)
        vlans = port_vlans.get(name, DEFAULT_MEMBERSHIP)
        link = StreamLink(spec, attachments, impair, vlans=vlans, impairment=impairments.get(name))
        await link.open()
        links.append(link)
    return links


def _announce(config: SwitchConfig, sockets: BoundSockets, streams: list[StreamServer]) -> None:
    """The log line that says the switch serves (tests and scripts wait for it)."""
    data = f", data socket '{sockets.data_path}'" if sockets.data_path else ""
    data += "".join(f", tap device '{name}'" for name in config.taps)
    data += "".join(f", stream listener '{s.name}'" for s in streams)
    data += "".join(
        f", control socket '{path}' for VLAN {vlans.describe()}"
        for _, path, vlans in sockets.vlan_controls
    )
    if sockets.mgmt_path is not None:
        data += f", management socket '{sockets.mgmt_path}'"
    log.info(
        "umlswitch %s %s '%s'%s (%s mode, pid %d)",
        __version__,
        READY,
        sockets.control_path,
        data,
        "hub" if config.hub else "switch",
        os.getpid(),
    )


def _clean_up(config: SwitchConfig, sockets: BoundSockets, pidfile_written: bool) -> None:
    """Close every socket and remove every file the switch created; say what went."""
    sockets.close()
    sockets.unlink_created()
    removed = list(sockets.created)
    if pidfile_written and config.pidfile:
        with contextlib.suppress(OSError):
            os.unlink(config.pidfile)
            removed.append(f"pidfile {config.pidfile}")
    log.info("umlswitch stopped; removed %s", ", ".join(removed) or "nothing")
    for handler in logging.getLogger().handlers:
        handler.flush()


def _start_clocks(
    nursery: trio.Nursery,
    fabric: Fabric,
    guard: Guard,
    shared: SharedDataSocket | None,
    plane: DataPlane,
) -> None:
    """What runs whatever the ports do: the fabric's clock and MAC aging, the spanning tree's
    timers (both applied by the data plane), the shared data socket's reader (in it)."""
    nursery.start_soon(_ticker, fabric, plane)
    nursery.start_soon(guard_control.run, guard, plane.apply)
    if shared is not None:
        plane.apply(plane.loop.add_source, shared.source())


def _start_metrics(nursery: trio.Nursery, switch: Switch) -> None:
    """``--metrics``: listen from now on (StartupError if the address cannot be had); stop
    serving metrics (however they were started) when the switch stops."""
    nursery.start_soon(_stop_metrics_at_exit, switch)
    if switch.config.metrics is not None:
        address, port = switch.config.metrics
        try:
            switch.metrics.start(address, port)
        except OSError as exc:
            where = format_listen(address, port)
            raise StartupError(
                f"--metrics {where}: cannot listen: {exc.strerror or exc}; "
                "give a free port (or stop what listens there)"
            ) from None


async def _stop_metrics_at_exit(switch: Switch) -> None:
    """Stop serving metrics (started by --metrics or metrics/start) when the switch stops."""
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(switch.metrics.stop)


async def _start_serving(nursery: trio.Nursery, switch: Switch, sockets: BoundSockets) -> None:
    """Run the command line's ports (those the --rc file left) and accept clients on the control
    socket(s), the --stream listeners and the management socket; start the --stream-connect
    links and the --slirp helper."""
    for port in sockets.static_ports:
        if port.id in switch.attachments:  # not removed by the --rc file
            life = functools.partial(_static_port_life, port, switch.fabric)
            nursery.start_soon(switch.attachments.run, port, life)
    await nursery.start(switch.control.serve)
    for link in switch.links:
        nursery.start_soon(link.run)
    if sockets.slirp is not None:
        switch.slirp = sockets.slirp
        nursery.start_soon(sockets.slirp.run)
    for stream in switch.streams:
        await nursery.start(stream.serve)
    if sockets.mgmt is not None:
        mgmt = MgmtServer(trio.socket.from_stdlib_socket(sockets.mgmt), switch)
        await nursery.start(mgmt.serve)


def _start_watchers(
    nursery: trio.Nursery,
    root: trio.CancelScope,
    config: SwitchConfig,
    restart_hook: list[Callable[[], None]],
    handle_signals: bool,
    watch_stdin: bool,
) -> None:
    """What stops or restarts the switch from outside: signals (SIGUSR2 calls the restart
    hook, once there is one) and EOF on standard input."""
    if handle_signals:
        on_usr2 = functools.partial(_call_first, restart_hook)
        nursery.start_soon(watchers.watch_signals, root, config.log_file, on_usr2)
    if watch_stdin:
        nursery.start_soon(watchers.watch_stdin, root)


async def serve(
    config: SwitchConfig,
    *,
    sockets: BoundSockets | None = None,
    handle_signals: bool = True,
    watch_stdin: bool | None = None,
    notify: Notifier | None = None,
    handover: Incoming | fdstore.Recovery | None = None,
    task_status: trio.TaskStatus[Switch] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the switch until cancelled, a signal, or EOF on stdin.

    With ``notify`` (``$NOTIFY_SOCKET``), tell systemd READY=1 once serving, the ports and MACs
    in STATUS= while running, and STOPPING=1 when the shutdown begins. With ``handover``, take
    over a previous process's ports and state instead (no --rc file, see ``_take_over``)."""
    if sockets is None:
        sockets = bind_sockets(config)
    if watch_stdin is None:
        watch_stdin = watchers.stdin_is_watched()
    pidfile_written = False
    restart_hook: list[Callable[[], None]] = []
    try:
        pidfile_written = handover is None and _write_pidfile(config.pidfile)
        fabric = _build_fabric(config)
        guard = guard_control.install(fabric, config)
        attachments = Attachments(fabric)
        shared = None
        if sockets.data is not None and sockets.data_path is not None:
            shared = SharedDataSocket(sockets.data, sockets.data_path, fabric)
        server = _control_server(config, sockets, fabric, shared, attachments)
        streams = _stream_servers(config, sockets, fabric, attachments)
        with trio.CancelScope() as root:
            async with dataplane.running(fabric) as plane, trio.open_nursery() as nursery:
                _start_watchers(nursery, root, config, restart_hook, handle_signals, watch_stdin)
                _start_clocks(nursery, fabric, guard, shared, plane)
                capture = await _start_capture(nursery, fabric, config, sockets)
                impair = ImpairControl(fabric, plane.timers)
                await nursery.start(impair.run)
                if handover is None:
                    await _attach_static_ports(config, sockets.static_ports, attachments, impair)
                switch = Switch(
                    config=config,
                    fabric=fabric,
                    guard=guard,
                    control=server,
                    shared=shared,
                    attachments=attachments,
                    control_path=sockets.control_path,
                    data_path=sockets.data_path,
                    started_at=time.time(),
                    cancel_scope=root,
                    capture=capture,
                    impair=impair,
                    mgmt_path=sockets.mgmt_path,
                    streams=streams,
                )
                _start_metrics(nursery, switch)
                # The start-up commands run before any frame moves or any client attaches.
                rc = None
                if handover is not None:
                    pidfile_written = await _take_over(handover, switch, sockets, nursery)
                switch.links = await _open_links(config, attachments, impair)
                if handover is None and sockets.rc_text is not None and config.rc is not None:
                    rc = await run_rc_file(switch, config.rc, sockets.rc_text)
                await _start_serving(nursery, switch, sockets)
                restart_hook.append(switch.allow_restarts(sockets, nursery))
                _announce(config, sockets, streams)
                if notify is not None:
                    _report_to_systemd(nursery, notify, switch, sockets)
                task_status.started(switch)
                if rc is not None and rc.shutdown:
                    log.info("shutdown requested by --rc %s", config.rc)
                    switch.shutdown()
    finally:
        if notify is not None and (handover is None or handover.done):
            notify.stopping()
        with trio.CancelScope(shield=True):
            _clean_up(config, sockets, pidfile_written)
