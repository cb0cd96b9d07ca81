"""Command-line parsing: argv -> SwitchConfig. Pure: no I/O besides argparse's own output.

Every Debian ``uml_switch`` command line works unchanged (``-unix CTL [DATA]``, ``-hub``,
``-tap DEV``, ``-daemon``, ``-compat-v0``, in any order), and each option has a ``--long`` spelling.
The ports given here (``-tap``, ``-mcast``, ``-ucast``, ``--vxlan``, ``--vxvde``) take VLAN options
among their own (``-tap tap0,vlan=10``, ``-tap tap0,trunk=10,20``, see ``fabric/vlan.py``), and
so does a ``-unix`` that adds a control socket for a VLAN (``-unix /tmp/vlan10.ctl,vlan=10``);
they take impairment options too (``-tap tap0,loss=1,out-delay=40ms``, see ``fabric/impair.py``).
A value without any of these options parses exactly as before.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NoReturn, TypeVar

from umlswitch import __version__
from umlswitch.fabric.frame import DEFAULT_MAX_FRAME, ETH_HEADER_LEN, MAX_MAX_FRAME
from umlswitch.fabric.impair import PortImpairment, split_port_options
from umlswitch.fabric.mactable import DEFAULT_AGING, DEFAULT_MAX_ENTRIES
from umlswitch.fabric.queues import DEFAULT_PORT_QUEUE, DEFAULT_QUEUE_MEMORY
from umlswitch.fabric.stp import (
    DEFAULT_BRIDGE_PRIORITY,
    DEFAULT_PATH_COST,
    DEFAULT_PORT_PRIORITY,
    MAX_PATH_COST,
)
from umlswitch.fabric.vlan import Membership, split_vlan_options
from umlswitch.ports.overlay.spec import (
    VxlanSpec,
    VxvdeSpec,
    overlay_conflicts,
    parse_vxlan,
    parse_vxvde,
)
from umlswitch.ports.slirp.spec import (
    SlirpSpec,
    parse_forward,
    parse_slirp_net,
    slirp_problem,
)
from umlswitch.ports.stream.spec import (
    StreamSpec,
    parse_stream,
    parse_stream_connect,
    stream_conflicts,
    target_of,
)
from umlswitch.ports.udp.spec import McastSpec, UcastSpec, conflicts, parse_mcast, parse_ucast

DEFAULT_CONTROL = "/tmp/uml.ctl"
DEFAULT_COMPAT_DATA = "/tmp/uml.data"
DEBIAN_UML_CONTROL = "/var/run/uml-utilities/uml_switch.ctl"
MGMT_SUFFIX = ".mgmt"  # the management socket's default path: the control socket's plus this
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_HANDSHAKE_TIMEOUT = 5.0  # seconds a control connection has for its request
DEFAULT_MODE = 0o600  # of the sockets the switch creates: only its own user may attach
DEFAULT_MAX_PORTS = 4096
DEFAULT_MAX_PENDING = 128  # control connections still in their handshake


@dataclass(frozen=True)
class SwitchConfig:
    """Everything the daemon needs to know, as given on the command line."""

    control_path: str = DEFAULT_CONTROL
    data_path: str | None = None
    vde_dir: str | None = None  # --vde DIR: created at start-up; control_path is DIR/ctl
    hub: bool = False
    taps: tuple[str, ...] = ()
    mcast: tuple[McastSpec, ...] = ()
    ucast: tuple[UcastSpec, ...] = ()
    vxlan: tuple[VxlanSpec, ...] = ()
    vxvde: tuple[VxvdeSpec, ...] = ()
    streams: tuple[StreamSpec, ...] = ()  # --stream unix:PATH | tcp:[ADDR:]PORT listeners
    # --stream-connect unix:PATH | tcp:HOST:PORT: links (their VLANs and impairment in vlans,
    # impair under the port's name, stream-connect:unix:PATH or stream-connect:tcp:HOST:PORT)
    stream_connects: tuple[StreamSpec, ...] = ()
    slirp: SlirpSpec | None = None  # --slirp (--slirp-net, --slirp-forward): the NAT uplink
    daemon: bool = False
    compat_v0: bool = False
    pidfile: str | None = None
    aging: float = DEFAULT_AGING
    max_macs: int = DEFAULT_MAX_ENTRIES
    max_macs_per_port: int | None = None
    max_frame: int = DEFAULT_MAX_FRAME
    port_queue: int = DEFAULT_PORT_QUEUE  # --port-queue FRAMES: each port's egress backlog
    queue_memory: int = DEFAULT_QUEUE_MEMORY  # --queue-memory MIB, in bytes: all backlogs
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    mode: int = DEFAULT_MODE
    group: str | None = None
    max_ports: int = DEFAULT_MAX_PORTS
    max_pending: int = DEFAULT_MAX_PENDING
    log_level: str = "info"
    log_file: str | None = None
    mgmt_path: str | None = None  # --mgmt PATH; None: CTL.mgmt (see mgmt_socket)
    no_mgmt: bool = False  # --no-mgmt
    pcap: str | None = None  # --pcap FILE: capture every frame from start-up
    metrics: tuple[str, int] | None = None  # --metrics [ADDR:]PORT: Prometheus /metrics
    # VLAN options of static ports (-tap tap0,vlan=10): port name -> membership
    vlans: tuple[tuple[str, Membership], ...] = ()
    # more control sockets, each for guests in VLANs (-unix /tmp/vlan10.ctl,vlan=10)
    vlan_controls: tuple[tuple[str, Membership], ...] = ()
    rc: str | None = None  # --rc FILE: management commands run at start-up
    stp: bool = False  # --stp: run the (rapid) spanning tree
    stp_priority: int = DEFAULT_BRIDGE_PRIORITY  # --stp-priority N: bridge priority
    stp_port_priority: int = DEFAULT_PORT_PRIORITY  # --stp-port-priority N: every port's
    stp_cost: int = DEFAULT_PATH_COST  # --stp-cost N: every port's path cost
    storm_limit: int = 0  # --storm-limit N: flooded frames/s per port; 0: no limit
    # impairment options of static ports (-tap tap0,loss=1): port name -> both directions
    impair: tuple[tuple[str, PortImpairment], ...] = ()

    @property
    def mgmt_socket(self) -> str | None:
        """The management socket's path, or None with --no-mgmt."""
        if self.no_mgmt:
            return None
        return self.mgmt_path or mgmt_path_for(self.control_path)

    def absolute(self) -> SwitchConfig:
        """The same config with every path made absolute (before -daemon changes to /)."""

        def fix(path: str | None) -> str | None:
            return None if path is None else os.path.abspath(path)

        return SwitchConfig(
            **{
                **self.__dict__,
                "control_path": os.path.abspath(self.control_path),
                "data_path": fix(self.data_path),
                "vde_dir": fix(self.vde_dir),
                "pidfile": fix(self.pidfile),
                "log_file": fix(self.log_file),
                "mgmt_path": fix(self.mgmt_path),
                "pcap": fix(self.pcap),
                "rc": fix(self.rc),
                "vlan_controls": tuple(
                    (os.path.abspath(path), vlans) for path, vlans in self.vlan_controls
                ),
                "streams": tuple(map(_absolute_stream, self.streams)),
                "stream_connects": tuple(map(_absolute_stream, self.stream_connects)),
            }
        )


def _absolute_stream(spec: StreamSpec) -> StreamSpec:
    return replace(spec, path=os.path.abspath(spec.path)) if spec.kind == "unix" else spec


def link_name(spec: StreamSpec) -> str:
    """The port name of a --stream-connect link (its VLANs and impairment are found by it)."""
    return f"stream-connect:{target_of(spec)}"


def mgmt_path_for(control_path: str) -> str:
    """The default management socket of the switch on ``control_path``: ``CTL.mgmt``."""
    return control_path + MGMT_SUFFIX


DESCRIPTION = """\
A virtual ethernet switch for User-Mode-Linux guests (eth0=daemon) and anything else that
speaks the uml_switch or vde_switch control protocol. A drop-in replacement for uml_switch."""

EPILOG = f"""\
attach a UML guest:   linux ... eth0=daemon,,unix,{DEFAULT_CONTROL}
Debian's UML kernel defaults to {DEBIAN_UML_CONTROL}:
                      umlswitch -unix {DEBIAN_UML_CONTROL}
UML mcast guests:     umlswitch -mcast    with    linux ... eth0=mcast
a UML ucast guest:    umlswitch -ucast 1102:127.0.0.1:1103
                      with    linux ... eth0=ucast,,127.0.0.1,1103,1102
QEMU stream guests:   umlswitch --stream unix:/tmp/q.sock --stream tcp:5555    with
                      qemu ... -netdev stream,id=n0,server=off,addr.type=unix,addr.path=/tmp/q.sock
                      qemu ... -netdev socket,id=n0,connect=127.0.0.1:5555
guests online without root: umlswitch --slirp    with udhcpc in the guests (NAT, 10.0.2.0/24)
link two switches:    umlswitch --stream tcp:0.0.0.0:5555   and on the other host
                      umlswitch --stream-connect tcp:HOST:5555   (passt: unix:PATH)
manage a running switch: umlswitch ctl help; umlswitch top; vdeterm CTL.mgmt
impair a port (a bad network for tests): umlswitch ctl port/impair N out loss=5 delay=40ms
                      and ports given here, with their options: -tap tap0,loss=1,out-delay=40ms
                      (KEY=VALUE as port/impair; in-KEY or out-KEY for one direction)
VLANs:                umlswitch -unix /tmp/vlan10.ctl,vlan=10 -tap tap0,trunk=10
                      guests on /tmp/vlan10.ctl are in VLAN 10; tap0 carries it tagged
the full manual:      man umlswitch

Signals: SIGINT and SIGTERM exit cleanly and remove the sockets; SIGHUP reopens --log-file
(logrotate), or without one exits as SIGTERM does. When stdin is a terminal or a pipe, EOF on
it exits too; stdin that is /dev/null or a file is ignored."""

USAGE = (
    "umlswitch [-unix CTL [DATA]] [-hub] [-tap DEV] [-daemon] [-compat-v0] [--pidfile FILE]\n"
    "                 [--vde DIR] [-mcast [GROUP:PORT]] [-ucast LOCALPORT:REMOTEHOST:REMOTEPORT]\n"
    "                 [--aging SECONDS] [--max-macs N] [--max-frame BYTES] [--log-level LEVEL]\n"
    "                 [--port-queue FRAMES] [--queue-memory MIB]\n"
    "                 [--vxlan VNI@DEST[:PORT]] [--vxvde [GROUP]]\n"
    "                 [--stream unix:PATH | --stream tcp:[ADDR:]PORT]\n"
    "                 [--stream-connect unix:PATH | --stream-connect tcp:HOST:PORT]\n"
    "                 [--slirp [--slirp-net ADDR/LEN] [--slirp-forward HOSTPORT:ADDR:PORT]]\n"
    "                 [-M PATH | --no-mgmt] [--pcap FILE] [--rc FILE] [--metrics [ADDR:]PORT]\n"
    "                 [--stp] [--stp-priority N] [--stp-port-priority N] [--stp-cost N]\n"
    "                 [--storm-limit N]\n"
    "       umlswitch ctl [-unix CTL | -M PATH] [--json] [--timeout SECONDS] COMMAND...\n"
    "       umlswitch top [-unix CTL | -M PATH] [--interval SECONDS] [--once]\n"
    "       umlswitch capture [-unix CTL | -M PATH] [PORT] [-w FILE|-] [-c COUNT]\n"
    "       umlswitch events [-unix CTL | -M PATH]"
)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Show -unix's arguments as uml_switch does, ``CTL [DATA]`` (argparse: ``[DATA ...]``)."""

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        if action.dest == "unix":
            return "CTL [DATA]"
        return super()._format_args(action, default_metavar)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"umlswitch: error: {message} (see 'umlswitch --help')\n")


T = TypeVar("T")


def _option_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type=``: ``parse``, whose ValueError message becomes the usage error."""

    @functools.wraps(parse)
    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"not a whole number: {text!r}") from None


@_option_type
def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise ValueError(f"must be more than 0: {text!r}")
    return value


@_option_type
def _count(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise ValueError(f"must be at least 1: {text!r}")
    return value


@_option_type
def _octal_mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise ValueError(f"not an octal mode: {text!r} (e.g. 0660)") from None
    if not 0 <= value <= 0o777:
        raise ValueError(f"mode out of range: {text!r} (0000 to 0777)")
    return value


@_option_type
def _frame_size(text: str) -> int:
    value = _whole_number(text)
    if not 64 <= value <= MAX_MAX_FRAME:
        raise ValueError(f"must be from 64 to {MAX_MAX_FRAME} bytes: {text!r}")
    assert value > ETH_HEADER_LEN
    return value


def _ranged(low: int, high: int, step: int = 1) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _whole_number(text)
        if not low <= value <= high or value % step:
            steps = f" in steps of {step}" if step > 1 else ""
            raise ValueError(f"must be from {low} to {high}{steps}: {text!r}")
        return value

    return _option_type(parse)


Vlans = Membership | None
Impaired = PortImpairment | None
Spec = TypeVar("Spec")


def _port_options(text: str) -> tuple[str, Vlans, Impaired]:
    """Take the VLAN options (``vlan=10``, ``trunk=10,20``) and the impairment options
    (``loss=1``, ``out-delay=40ms``) out of a static port's option value; the rest is the
    port's own."""
    rest, vlans = split_vlan_options(text)
    rest, impaired = split_port_options(rest)
    return rest, vlans, impaired


@_option_type
def _unix(text: str) -> tuple[str, Vlans]:
    """A socket path, with VLAN options if it is a control socket for a VLAN."""
    path, vlans = split_vlan_options(text)
    if vlans is not None and not path:
        raise ValueError(f"{text!r}: give the control socket's path first")
    return path, vlans


@_option_type
def _tap(text: str) -> tuple[str, Vlans, Impaired]:
    """``DEV`` as uml_switch takes it, or ``DEV,KEY=VALUE...`` with VLAN (``vlan=N``,
    ``trunk=N,M``) and impairment options."""
    device, sep, options = text.partition(",")
    if not sep or "=" not in options:
        return text, None, None
    rest, vlans, impaired = _port_options(text)
    if rest != device or not device:
        raise ValueError(
            f"{text!r}: after the device, only VLAN and impairment options "
            f"(e.g. {device or 'tap0'},vlan=10,loss=1)"
        )
    return device, vlans, impaired


def _static_port(parse: Callable[[str], Spec]) -> Callable[[str], tuple[Spec, Vlans, Impaired]]:
    """An option type for a static port kind: its VLAN and impairment options taken out, the
    rest parsed by ``parse``."""

    def parse_option(text: str) -> tuple[Spec, Vlans, Impaired]:
        rest, vlans, impaired = _port_options(text)
        return parse(rest), vlans, impaired

    return _option_type(parse_option)


_mcast = _static_port(parse_mcast)
_ucast = _static_port(parse_ucast)
_vxlan = _static_port(parse_vxlan)
_vxvde = _static_port(parse_vxvde)


_stream_connect = _static_port(parse_stream_connect)
_slirp_net = _option_type(parse_slirp_net)
_slirp_forward = _option_type(parse_forward)


@_option_type
def _stream(text: str) -> StreamSpec:
    rest, vlans = split_vlan_options(text)
    spec = parse_stream(rest)
    return spec if vlans is None else replace(spec, vlans=vlans)


def _add_port_options(p: argparse.ArgumentParser) -> None:
    """The ports: control sockets, taps, UDP peers, overlays, stream listeners and links,
    the slirp uplink."""
    _add_local_port_options(p)
    _add_udp_port_options(p)
    _add_stream_options(p)
    _add_slirp_options(p)


def _add_local_port_options(p: argparse.ArgumentParser) -> None:
    """Control sockets, hub mode, taps."""
    p.add_argument(
        "-unix",
        "--unix",
        nargs="+",
        action="append",
        type=_unix,
        metavar=("CTL", "DATA"),
        help=f"control socket path (default {DEFAULT_CONTROL}); an optional second path names a "
        "shared data socket for v0 clients, as uml_switch's -compat-v0 form. CTL,vlan=N or "
        "CTL,trunk=N,M adds a control socket whose guests are in those VLANs (untagged N, "
        "tagged N and M); repeatable",
    )
    p.add_argument("-hub", "--hub", action="store_true", help="be a hub: flood every frame")
    p.add_argument(
        "-tap",
        "--tap",
        action="append",
        default=[],
        metavar="DEV",
        type=_tap,
        help="connect the host through tap device DEV (repeatable: one port per tap); a missing "
        "tap is created (not persistent, down) when the switch has CAP_NET_ADMIN; DEV,vlan=N "
        "puts the port in VLAN N untagged, DEV,trunk=N,M carries N and M tagged, "
        "DEV,loss=1,out-delay=40ms impairs it (as port/impair; all as -mcast, -ucast, --vxlan, "
        "--vxvde)",
    )


def _add_udp_port_options(p: argparse.ArgumentParser) -> None:
    """UDP peers and overlays."""
    p.add_argument(
        "-mcast",
        "--mcast",
        nargs="?",
        const="",
        action="append",
        default=[],
        type=_mcast,
        metavar="GROUP:PORT[,ttl=N][,if=ADDR]",
        help="join a UDP multicast segment (UML eth0=mcast, QEMU -netdev socket,mcast=) as one "
        "port; without a value UML's default 239.192.168.1:1102, TTL 1; repeatable; "
        ",vlan=N and ,trunk=N,M set its VLANs, as for -tap",
    )
    p.add_argument(
        "-ucast",
        "--ucast",
        action="append",
        default=[],
        type=_ucast,
        metavar="LOCALPORT:REMOTEHOST:REMOTEPORT[,bind=ADDR]",
        help="one port for a UDP peer (UML eth0=ucast, QEMU -netdev socket,udp=): receive on "
        "LOCALPORT from REMOTEHOST:REMOTEPORT only, send there; REMOTEHOST 'any' takes the "
        "first host to send from REMOTEPORT; repeatable; ,vlan=N and ,trunk=N,M set its VLANs",
    )
    p.add_argument(
        "--vxlan",
        action="append",
        default=[],
        type=_vxlan,
        metavar="VNI@DEST[:PORT][,local=ADDR][,ttl=N]",
        help="one VXLAN segment as one port, with Linux 'type vxlan' devices and other switches: "
        "DEST is a multicast group (flood and learn) or peers joined by '+' (42@192.0.2.2+"
        "192.0.2.3); UDP PORT default 4789 (Linux's default without dstport is 8472); repeatable; "
        ",vlan=N and ,trunk=N,M set its VLANs",
    )
    p.add_argument(
        "--vxvde",
        nargs="?",
        const="",
        action="append",
        default=[],
        type=_vxvde,
        metavar="GROUP[,port=N][,vni=N][,ttl=N]",
        help="join a vdeplug4 vxvde:// network as one port (default 239.0.0.1, port 14789, "
        "VNI 1); repeatable; ,vlan=N and ,trunk=N,M set its VLANs",
    )


def _add_stream_options(p: argparse.ArgumentParser) -> None:
    """QEMU stream listeners and links."""
    p.add_argument(
        "--stream",
        action="append",
        default=[],
        type=_stream,
        metavar="unix:PATH|tcp:[ADDR:]PORT",
        help="listen for QEMU stream clients (-netdev stream, -netdev socket,connect=): every "
        "connection is one port, frames carry QEMU's 4-byte length. unix:PATH gets --mode and "
        "--group and is removed on exit; tcp:PORT listens on 127.0.0.1 only, tcp:ADDR:PORT on "
        "ADDR (0.0.0.0: every address; anyone who reaches it joins the LAN); repeatable; "
        ",vlan=N and ,trunk=N,M put every connection in those VLANs",
    )
    p.add_argument(
        "--stream-connect",
        action="append",
        default=[],
        type=_stream_connect,
        metavar="unix:PATH|tcp:HOST:PORT",
        help="one port that connects to a listener speaking QEMU's stream framing (passt's "
        "socket, another umlswitch's --stream, QEMU -netdev stream,server=on) and reconnects "
        "when it goes away (back-off 1 s doubling to 30 s), keeping its port number; "
        "repeatable; ,vlan=N, ,trunk=N,M and impairment options as for -tap",
    )


def _add_slirp_options(p: argparse.ArgumentParser) -> None:
    """The slirp uplink."""
    p.add_argument(
        "--slirp",
        action="store_true",
        help="put a NAT router on the LAN without root or a tap: the switch runs libslirp "
        "(vde_plug slirp://, Debian vdeplug and libvdeplug-slirp) as a child process without "
        "root's privileges and restarts it if it dies; guests get addresses by DHCP "
        "(10.0.2.15 on), router 10.0.2.2 (which reaches the host's 127.0.0.1), DNS 10.0.2.3",
    )
    p.add_argument(
        "--slirp-net",
        type=_slirp_net,
        metavar="ADDR/LEN",
        help="--slirp's network (default 10.0.2.0/24; router .2, DNS .3, DHCP from .15), or "
        "ADDR/LEN with ADDR the router's address",
    )
    p.add_argument(
        "--slirp-forward",
        action="append",
        default=[],
        type=_slirp_forward,
        metavar="[HOSTADDR:]HOSTPORT:GUESTADDR:GUESTPORT",
        help="forward TCP HOSTPORT of the host (on 127.0.0.1 unless HOSTADDR is given) to "
        "GUESTADDR:GUESTPORT on --slirp's network; repeatable",
    )


def _add_process_options(p: argparse.ArgumentParser) -> None:
    """How the process runs: in the background, v0 compatibility, its pidfile."""
    p.add_argument(
        "-daemon",
        "--daemon",
        action="store_true",
        help="detach from the terminal and run in the background (logs go to --log-file or syslog)",
    )
    p.add_argument(
        "-compat-v0",
        "--compat-v0",
        action="store_true",
        help=f"serve v0 clients on a shared data socket (default {DEFAULT_COMPAT_DATA})",
    )
    p.add_argument("--pidfile", metavar="FILE", help="write the switch's pid to FILE")


def _add_forwarding_options(p: argparse.ArgumentParser) -> None:
    """The MAC table, the largest frame, the queues."""
    p.add_argument(
        "--aging",
        type=_positive_float,
        default=DEFAULT_AGING,
        metavar="SECONDS",
        help=f"forget a MAC address not seen for SECONDS (default {DEFAULT_AGING:g})",
    )
    p.add_argument(
        "--max-macs",
        type=_count,
        default=DEFAULT_MAX_ENTRIES,
        metavar="N",
        help=f"bound of the MAC table (default {DEFAULT_MAX_ENTRIES}); when full, the port "
        "holding the most addresses loses its oldest one",
    )
    p.add_argument(
        "--max-macs-per-port",
        type=_count,
        metavar="N",
        help="bound of the addresses learned on one port (default: only --max-macs)",
    )
    p.add_argument(
        "--max-frame",
        type=_frame_size,
        default=DEFAULT_MAX_FRAME,
        metavar="BYTES",
        help=f"largest frame forwarded, header included (default {DEFAULT_MAX_FRAME}, "
        f"up to {MAX_MAX_FRAME} for jumbo frames); larger ones are dropped and counted",
    )
    p.add_argument(
        "--port-queue",
        type=_count,
        default=DEFAULT_PORT_QUEUE,
        metavar="FRAMES",
        help="frames a port keeps while its receiver cannot take them (a guest's socket queue "
        f"is full), sent in order as soon as it can; more are dropped (default "
        f"{DEFAULT_PORT_QUEUE})",
    )
    p.add_argument(
        "--queue-memory",
        type=_count,
        default=DEFAULT_QUEUE_MEMORY >> 20,
        metavar="MIB",
        help="memory all ports' queues may hold together, in MiB; beyond it frames are dropped "
        f"(default {DEFAULT_QUEUE_MEMORY >> 20})",
    )


def _add_access_options(p: argparse.ArgumentParser) -> None:
    """Who may attach and how many; management, capture, start-up commands."""
    p.add_argument(
        "--vde",
        metavar="DIR",
        help="serve vde_switch clients (vde_plug vde:///DIR, QEMU -netdev vde,sock=DIR, UML "
        "eth0=vde,vde:///DIR): create DIR and the control socket DIR/ctl, which UML eth0=daemon "
        "guests can use too",
    )
    p.add_argument(
        "--handshake-timeout",
        type=_positive_float,
        default=DEFAULT_HANDSHAKE_TIMEOUT,
        metavar="SECONDS",
        help="close a control connection that sends no complete request in time "
        f"(default {DEFAULT_HANDSHAKE_TIMEOUT:g})",
    )
    p.add_argument(
        "--mode",
        type=_octal_mode,
        default=DEFAULT_MODE,
        metavar="OCTAL",
        help="permissions of the control socket (and management socket, --stream unix sockets, "
        "and --vde directory); "
        "default 0600: only the switch's user may attach. 0660 with --group lets a group in",
    )
    p.add_argument(
        "--group", metavar="NAME", help="group owning the sockets (and the --vde directory)"
    )
    p.add_argument(
        "--max-ports",
        type=_count,
        default=DEFAULT_MAX_PORTS,
        metavar="N",
        help=f"refuse new clients while N ports are attached (default {DEFAULT_MAX_PORTS})",
    )
    p.add_argument(
        "--max-pending",
        type=_count,
        default=DEFAULT_MAX_PENDING,
        metavar="N",
        help="at most N control connections waiting for their handshake; a new one closes the "
        f"one that has waited longest (default {DEFAULT_MAX_PENDING})",
    )
    mgmt = p.add_mutually_exclusive_group()
    mgmt.add_argument(
        "-M",
        "--mgmt",
        metavar="PATH",
        help="management socket (vde_switch's protocol: vdeterm PATH, umlswitch ctl, "
        "umlswitch top); default CTL.mgmt beside the control socket",
    )
    mgmt.add_argument("--no-mgmt", action="store_true", help="open no management socket")
    p.add_argument(
        "--pcap",
        metavar="FILE",
        help="capture every frame the switch receives to FILE (pcap, mode 0600; "
        "stop or restart it with umlswitch ctl pcap/stop, pcap/start)",
    )
    p.add_argument(
        "--metrics",
        metavar="[ADDR:]PORT",
        type=_listen_address,
        help="serve Prometheus metrics on http://ADDR:PORT/metrics (ADDR 127.0.0.1 unless "
        "given; see umlswitch ctl metrics/showinfo)",
    )
    p.add_argument(
        "--rc",
        metavar="FILE",
        help="run the management commands in FILE at start-up, before the switch announces "
        "itself (one per line, # comments; e.g. vlan/create 10); a failing line stops the start "
        "with its line number and the error",
    )


def _listen_address(text: str) -> tuple[str, int]:
    from umlswitch.metrics import parse_listen

    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_loop_options(p: argparse.ArgumentParser) -> None:
    """Loop protection: the spanning tree and storm control."""
    p.add_argument(
        "--stp",
        action="store_true",
        help="run the rapid spanning tree (802.1w, falling back to 802.1D for neighbours that "
        "speak it, as the Linux bridge): taps, UDP peers and overlays take part, guests are "
        "edge ports that forward at once; BPDUs are consumed, not forwarded (fstp/setfstp "
        "switches it at run time)",
    )
    p.add_argument(
        "--stp-priority",
        type=_ranged(0, 65535),
        default=DEFAULT_BRIDGE_PRIORITY,
        metavar="N",
        help=f"bridge priority, 0-65535; the lowest bridge id is the root (default "
        f"{DEFAULT_BRIDGE_PRIORITY})",
    )
    p.add_argument(
        "--stp-port-priority",
        type=_ranged(0, 240, 16),
        default=DEFAULT_PORT_PRIORITY,
        metavar="N",
        help=f"every port's priority, 0-240 in steps of 16 (default {DEFAULT_PORT_PRIORITY}; "
        "per port with fstp/setportprio)",
    )
    p.add_argument(
        "--stp-cost",
        type=_ranged(1, MAX_PATH_COST),
        default=DEFAULT_PATH_COST,
        metavar="N",
        help=f"every port's path cost (default {DEFAULT_PATH_COST}, as the Linux bridge gives a "
        "tap; per port with fstp/setcost)",
    )
    p.add_argument(
        "--storm-limit",
        type=_ranged(0, 10_000_000),
        default=0,
        metavar="N",
        help="storm control: each port floods at most N broadcast, multicast and unknown-unicast "
        "frames per second, the rest are dropped and counted (default 0: no limit; per port "
        "with port/setstormlimit)",
    )


def _add_logging_options(p: argparse.ArgumentParser) -> None:
    """Logging and the version."""
    p.add_argument(
        "--log-level", choices=LOG_LEVELS, default="info", help="log verbosity (default info)"
    )
    p.add_argument(
        "--log-file", metavar="FILE", help="append log lines to FILE; SIGHUP reopens it (logrotate)"
    )
    p.add_argument("--version", action="version", version=f"umlswitch {__version__}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="umlswitch",
        usage=USAGE,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    for add_options in (
        _add_port_options,
        _add_process_options,
        _add_forwarding_options,
        _add_access_options,
        _add_loop_options,
        _add_logging_options,
    ):
        add_options(p)
    return p


SocketPaths = tuple[str, str | None, list[tuple[str, Membership]]]


def _socket_paths(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> SocketPaths:
    """The control socket, the shared data socket (if any) and the VLANs' control sockets, from
    -unix, --vde and -compat-v0; a usage error where they contradict each other."""
    unix: list[str] | None = None
    vlan_controls: list[tuple[str, Membership]] = []
    for given in ns.unix or ():
        paths = [path for path, _ in given]
        vlans = [vlans for _, vlans in given]
        if vlans[0] is not None:
            if len(given) > 1:
                parser.error(f"-unix {given[0][0]},...: a VLAN's control socket takes no DATA path")
            vlan_controls.append((paths[0], vlans[0]))
            continue
        if any(v is not None for v in vlans[1:]):
            parser.error("VLAN options belong to a control socket path, not to a data path")
        if unix is not None:
            parser.error(
                "-unix CTL [DATA] given twice; more control sockets must name their VLANs "
                "(-unix PATH,vlan=N)"
            )
        unix = paths
    if unix is not None and len(unix) > 2:
        parser.error(f"-unix takes a control path and an optional data path, not {len(unix)}")
    control_path = unix[0] if unix else DEFAULT_CONTROL
    data_path = unix[1] if unix and len(unix) == 2 else None
    if ns.vde is not None:
        if unix is not None:
            parser.error("give either --vde DIR (which serves DIR/ctl) or -unix CTL, not both")
        control_path = os.path.join(ns.vde, "ctl")
    if ns.compat_v0 and data_path is None:
        data_path = DEFAULT_COMPAT_DATA
    if data_path is not None and os.path.abspath(data_path) == os.path.abspath(control_path):
        parser.error("the data socket path must differ from the control socket path")
    controls = [control_path, *(path for path, _ in vlan_controls)]
    if data_path is not None:
        controls.append(data_path)
    absolute = [os.path.abspath(path) for path in controls]
    if len(set(absolute)) != len(absolute):
        parser.error("every control socket (and the data socket) needs a path of its own")
    return control_path, data_path, vlan_controls


def _slirp_spec(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> SlirpSpec | None:
    """--slirp with its network and forwards; a usage error where they do not fit."""
    if not ns.slirp:
        if ns.slirp_net is not None or ns.slirp_forward:
            parser.error("--slirp-net and --slirp-forward configure --slirp: add --slirp")
        return None
    spec = SlirpSpec(forwards=tuple(ns.slirp_forward))
    if ns.slirp_net is not None:
        spec = replace(spec, router=ns.slirp_net)
    problem = slirp_problem(spec)
    if problem is not None:
        parser.error(problem)
    return spec


def parse_args(argv: list[str]) -> SwitchConfig:
    """Parse argv (without the program name). Exits 2 with usage on a bad command line."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    control_path, data_path, vlan_controls = _socket_paths(parser, ns)
    taps = [device for device, *_ in ns.tap]
    mcast = [spec for spec, *_ in ns.mcast]
    ucast = [spec for spec, *_ in ns.ucast]
    vxlan = [spec for spec, *_ in ns.vxlan]
    vxvde = [spec for spec, *_ in ns.vxvde]
    conflict = (
        conflicts(mcast, ucast) or overlay_conflicts(vxlan, vxvde) or stream_conflicts(ns.stream)
    )
    if conflict is not None:
        parser.error(conflict)
    slirp = _slirp_spec(parser, ns)
    vlans = [(f"tap:{device}", member) for device, member, _ in ns.tap]
    impaired = [(f"tap:{device}", impair) for device, _, impair in ns.tap]
    for given in (ns.mcast, ns.ucast, ns.vxlan, ns.vxvde):
        vlans += [(spec.name, member) for spec, member, _ in given]
        impaired += [(spec.name, impair) for spec, _, impair in given]
    vlans += [(link_name(spec), member) for spec, member, _ in ns.stream_connect]
    impaired += [(link_name(spec), impair) for spec, _, impair in ns.stream_connect]
    return SwitchConfig(
        control_path=control_path,
        data_path=data_path,
        vde_dir=ns.vde,
        hub=ns.hub,
        taps=tuple(taps),
        mcast=tuple(mcast),
        ucast=tuple(ucast),
        vxlan=tuple(vxlan),
        vxvde=tuple(vxvde),
        streams=tuple(ns.stream),
        stream_connects=tuple(spec for spec, *_ in ns.stream_connect),
        slirp=slirp,
        daemon=ns.daemon,
        compat_v0=ns.compat_v0,
        pidfile=ns.pidfile,
        aging=ns.aging,
        max_macs=ns.max_macs,
        max_macs_per_port=ns.max_macs_per_port,
        max_frame=ns.max_frame,
        port_queue=ns.port_queue,
        queue_memory=ns.queue_memory << 20,
        handshake_timeout=ns.handshake_timeout,
        mode=ns.mode,
        group=ns.group,
        max_ports=ns.max_ports,
        max_pending=ns.max_pending,
        log_level=ns.log_level,
        log_file=ns.log_file,
        mgmt_path=ns.mgmt,
        no_mgmt=ns.no_mgmt,
        pcap=ns.pcap,
        metrics=ns.metrics,
        vlans=tuple((name, member) for name, member in vlans if member is not None),
        vlan_controls=tuple(vlan_controls),
        rc=ns.rc,
        stp=ns.stp,
        stp_priority=ns.stp_priority,
        stp_port_priority=ns.stp_port_priority,
        stp_cost=ns.stp_cost,
        storm_limit=ns.storm_limit,
        impair=tuple((name, impair) for name, impair in impaired if impair is not None),
    )
