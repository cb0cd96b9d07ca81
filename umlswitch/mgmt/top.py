"""``umlswitch top``: a live table of a running switch's ports, refreshed every second.

::

    umlswitch top [-unix CTL | --mgmt PATH] [--interval SECONDS] [--once]

Every interval it asks the management socket for ``json showinfo`` and ``json port/print`` and
shows, per port, the frames and bits per second received and sent (from the difference of the
counters), the frames dropped so far (red when the number grew), the MACs learned and, while
VLANs are on, each port's VLANs (``10``: untagged 10; ``1 t20,30``: untagged 1, tagged 20 and 30),
with a ``~`` after the number of an impaired port (``port/impair``); a totals row; the drops so far
by reason; and a header with the switch's mode, uptime and capture. ``q`` quits (so does Ctrl-C).
It fits an 80-column terminal: long port names are cut. ``--once`` prints one table, measured
over one interval, and exits. When stdout is not a terminal (a pipe, a file), it prints one such
table every interval instead of redrawing one, like ``top -b``. SIGTERM ends it as ``q`` does,
the terminal restored. The rendering (``render``) is a pure function of two samples.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import sys
import termios
import time
import tty
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from umlswitch.mgmt.client import (
    CannotConnect,
    MgmtClient,
    add_socket_options,
    connect,
    socket_path,
)
from umlswitch.mgmt.protocol import ProtocolError
from umlswitch.mgmt.views import format_counts, format_duration

DEFAULT_INTERVAL = 1.0
NAME_WIDTH = 22
VLAN_WIDTH = 8  # shown while VLANs are on, taken from the name's width
IMPAIRED_MARK = "~"  # after the port number: the port is impaired (port/impair)

Doc = Mapping[str, Any]


@dataclass(frozen=True)
class Sample:
    """The switch's counters at one moment (``at``: time.monotonic())."""

    at: float
    info: Doc
    ports: dict[int, Doc]


def take_sample(client: MgmtClient) -> Sample:
    info = client.json("showinfo")
    ports = client.json("port/print")["ports"]
    return Sample(time.monotonic(), info, {port["id"]: port for port in ports})


def si(value: float) -> str:
    """``0`` -> ``0``; ``1234`` -> ``1.2k``; ``56_000_000`` -> ``56.0M``: at most 6 characters."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.1f}{suffix}"
    return f"{value:.0f}" if value == int(value) or value >= 10 else f"{value:.1f}"


def _rate(now: Doc, before: Doc | None, key: str, dt: float, scale: int = 1) -> float | None:
    if before is None or dt <= 0:
        return None
    delta: int = now[key] - before[key]
    return max(delta, 0) * scale / dt  # a counter reset is not a negative rate


def _drops(doc: Doc) -> int:
    return sum(doc["drops"].values())


def _header(info: Doc) -> Text:
    capture = info["capture"]
    if capture.get("running"):
        which = "all ports" if capture["port"] is None else f"port {capture['port']}"
        capturing = f"capture {which} → {capture['file']}"
    else:
        capturing = "no capture"
    text = Text()
    text.append(f"umlswitch {info['version']}", style="bold")
    text.append(
        f"  {info['mode']} · pid {info['pid']} · up {format_duration(info['uptime'])}"
        f" · {info['ports']} ports · {info['macs']} MACs · {capturing}"
    )
    stp = info.get("stp")
    if stp is not None:
        root = "this switch" if stp["is_root"] else stp["root"]
        text.append(f"\nstp root {root} · {stp['topology_changes']} topology change(s)")
    return text


def vlan_cell(port: Doc) -> str:
    """A port's VLANs in a few characters: ``10`` (untagged), ``1 t20,30`` (and tagged)."""
    vlans = port.get("vlans") or {"untagged": 1, "tagged": []}
    text = str(vlans["untagged"])
    if vlans["tagged"]:
        text += " t" + ",".join(map(str, vlans["tagged"]))
    return text


STP_ROLES = {"root": "RT", "designated": "DS", "alternate": "AL", "backup": "BK"}
STP_STATES = {"forwarding": "F", "learning": "L", "discarding": "D"}
STP_LEGEND = (
    "STP: ED edge, RT root, DS designated, AL alternate, BK backup; "
    "F forwarding, L learning, D discarding"
)


def stp_cell(port: Doc) -> str:
    """``RT F``, ``AL D``, ``ED F``: a port's role and state in 4 characters (the legend says)."""
    stp = port.get("stp")
    if stp is None:
        return "-"
    role = "ED" if stp["edge"] else STP_ROLES.get(stp["role"], "--")
    return f"{role} {STP_STATES.get(stp['state'], '?')}"


def render(before: Sample | None, now: Sample, *, live: bool = True) -> RenderableType:
    """The view of ``now``, with rates since ``before`` (none on the first sample)."""
    dt = now.at - before.at if before is not None else 0.0
    vlans = bool(now.info.get("vlans", {}).get("active"))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_footer=False, collapse_padding=True)
    table.add_column("PORT", justify="right", no_wrap=True)
    with_stp = any(port.get("stp") is not None for port in now.ports.values())
    name_width = NAME_WIDTH - VLAN_WIDTH - 2 if vlans else NAME_WIDTH
    table.add_column("NAME", no_wrap=True, overflow="ellipsis", max_width=name_width)
    if vlans:
        table.add_column("VLAN", no_wrap=True, overflow="ellipsis", max_width=VLAN_WIDTH)
    table.add_column("MACS", justify="right", no_wrap=True)
    for heading in ("RX f/s", "RX b/s", "TX f/s", "TX b/s"):
        table.add_column(heading, justify="right", no_wrap=True, min_width=6)
    table.add_column("QUEUE", justify="right", no_wrap=True)
    table.add_column("DROPS", justify="right", no_wrap=True)
    if with_stp:
        table.add_column("STP", no_wrap=True, min_width=4)
    sums = [0.0, 0.0, 0.0, 0.0]
    measured = False
    impaired = False
    for pid in sorted(now.ports):
        port = now.ports[pid]
        old = before.ports.get(pid) if before is not None else None
        rates = [
            _rate(port, old, "rx_frames", dt),
            _rate(port, old, "rx_bytes", dt, 8),
            _rate(port, old, "tx_frames", dt),
            _rate(port, old, "tx_bytes", dt, 8),
        ]
        for i, rate in enumerate(rates):
            if rate is not None:
                sums[i] += rate
                measured = True
        drops = _drops(port)
        grew = old is not None and drops > _drops(old)
        impaired = impaired or port.get("impair") is not None
        table.add_row(
            f"{pid}{IMPAIRED_MARK}" if port.get("impair") is not None else str(pid),
            port["name"],
            *([vlan_cell(port)] if vlans else []),
            str(port["macs"]),
            *("…" if rate is None else si(rate) for rate in rates),
            si(port["queue"]["depth"]),
            Text(str(drops), style="bold red" if grew else ""),
            *([stp_cell(port)] if with_stp else []),
        )
    table.add_section()
    total_drops = _drops(now.info["totals"])
    table.add_row(
        "",
        Text("total", style="bold"),
        *([""] if vlans else []),
        str(now.info["macs"]),
        *(si(value) if measured else "…" for value in sums),
        si(sum(port["queue"]["depth"] for port in now.ports.values())),
        str(total_drops),
        *([""] if with_stp else []),
    )
    legend = "f/s frames, b/s bits per second, queue: frames waiting to be sent" + (
        " · q quits" if live else ""
    )
    if with_stp:
        legend += "\n" + STP_LEGEND
    footer = [Text(legend, style="dim")]
    if impaired:
        footer.append(Text(f"{IMPAIRED_MARK} impaired (umlswitch ctl port/impair N)", style="dim"))
    if total_drops:
        footer.append(Text(f"drops: {format_counts(now.info['totals']['drops'])}", style="dim"))
    return Group(_header(now.info), table, *footer)


@contextlib.contextmanager
def _keys() -> Iterator[int | None]:
    """stdin in cbreak mode (a key at a time, no echo) when it is a terminal; its fd or None."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        yield None
        return
    if not os.isatty(fd):
        yield fd
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _wait_for_quit(fd: int | None, timeout: float) -> tuple[bool, int | None]:
    """Wait up to ``timeout`` s for a key; (quit?, the fd still worth watching)."""
    if fd is None:
        time.sleep(timeout)
        return False, None
    readable, _, _ = select.select([fd], [], [], timeout)
    if not readable:
        return False, fd
    data = os.read(fd, 64)
    if not data:  # EOF on a pipe or /dev/null: stop watching, keep showing
        return False, None
    return b"q" in data.lower(), fd


def live(client: MgmtClient, console: Console, interval: float) -> None:
    """Show the table, refreshed every ``interval`` seconds, until ``q``."""
    before = take_sample(client)
    with (
        _keys() as fd,
        Live(
            render(None, before),
            console=console,
            auto_refresh=False,
            screen=console.is_terminal,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as view,
    ):
        view.refresh()
        next_at = time.monotonic() + interval
        while True:
            quit_now, fd = _wait_for_quit(fd, max(next_at - time.monotonic(), 0.0))
            if quit_now:
                return
            if time.monotonic() >= next_at:
                now = take_sample(client)
                view.update(render(before, now), refresh=True)
                before = now
                next_at = max(next_at + interval, time.monotonic())


def batch(client: MgmtClient, console: Console, interval: float) -> None:
    """stdout is no terminal: print a table every ``interval`` seconds, each flushed at once."""
    before = take_sample(client)
    while True:
        time.sleep(interval)
        now = take_sample(client)
        console.print(render(before, now, live=False))
        console.print()
        console.file.flush()
        before = now


class Terminated(Exception):
    """SIGTERM: stop as ``q`` does (restoring the terminal), exit status 0."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="umlswitch top",
        description="A live view of a running umlswitch: ports, rates, drops, MACs (q quits).",
        allow_abbrev=False,
    )
    add_socket_options(parser)
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help="refresh period (default 1)",
    )
    parser.add_argument(
        "--once", action="store_true", help="print one table (rates over one interval) and exit"
    )
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not ns.interval > 0:
        parser.error("--interval must be more than 0")
    console = Console()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with connect(socket_path(ns)) as client:
            if ns.once:
                before = take_sample(client)
                time.sleep(ns.interval)
                console.print(render(before, take_sample(client), live=False))
            elif console.is_terminal:
                live(client, console, ns.interval)
            else:
                batch(client, console, ns.interval)
    except CannotConnect as exc:
        print(f"umlswitch: {exc}", file=sys.stderr)
        return 1
    except (OSError, ProtocolError) as exc:
        print(f"umlswitch: lost the switch: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated):
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return 0
