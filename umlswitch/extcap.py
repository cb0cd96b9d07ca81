"""``umlswitch-extcap``: the running switches' ports as Wireshark/tshark capture interfaces.

Wireshark runs every program in its extcap directory to list interfaces (``tshark -D``) and to
capture from one (``tshark -i umlswitch:/tmp/uml.ctl.mgmt:3``). The extcap protocol
(https://www.wireshark.org/docs/wsdg_html_chunked/ChCaptureExtcap.html)::

    --extcap-interfaces                 the interfaces, one ``interface {value=..}{display=..}``
    --extcap-dlts --extcap-interface I  the link type: Ethernet
    --extcap-config --extcap-interface I  options (none)
    --capture --extcap-interface I --fifo PATH   write pcap to PATH until Wireshark stops

Interfaces: ``umlswitch:MGMT`` (every port of the switch whose management socket is MGMT) and
``umlswitch:MGMT:N`` (port N). The switches are found by their management sockets: those named in
``$UMLSWITCH_EXTCAP_SOCKETS`` (colon-separated), else every listening unix socket whose path ends
in ``.mgmt`` (``/proc/net/unix``) that greets as umlswitch. A capture is ``pcap/stream`` on that
socket (``mgmt/observe.py``), so only root or the switch's user can capture.

Install (``umlswitch-extcap --install``) links this program into Wireshark's extcap directory as
``umlswitch``: the personal one where Wireshark has one (4.2 and later:
``~/.local/lib/wireshark/extcap``), else the global one (Debian 12's Wireshark 4.0 has only
``/usr/lib/x86_64-linux-gnu/wireshark/extcap``: as root), or ``--dir DIR``. ``tshark -G folders``
says where they are.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

from umlswitch import __version__
from umlswitch.mgmt.client import CannotConnect, MgmtError, connect
from umlswitch.mgmt.protocol import ProtocolError
from umlswitch.mgmt.streams import StreamRefused, copy_stream, open_stream

PREFIX = "umlswitch:"
SOCKETS_ENV = "UMLSWITCH_EXTCAP_SOCKETS"
PROBE_TIMEOUT = 1.0  # seconds a switch may take to answer while interfaces are listed
LINKTYPE_ETHERNET = 1


def listening_mgmt_sockets(proc_net_unix: str = "/proc/net/unix") -> list[str]:
    """Paths of listening unix stream sockets ending in ``.mgmt``."""
    found: list[str] = []
    with contextlib.suppress(OSError), open(proc_net_unix, errors="surrogateescape") as table:
        next(table, None)
        for line in table:
            fields = line.split()
            # Num RefCount Protocol Flags Type St Inode Path; Flags 00010000: listening
            if len(fields) >= 8 and fields[3] == "00010000" and fields[4] == "0001":
                path = fields[7]
                if path.endswith(".mgmt") and not path.startswith("@"):
                    found.append(path)
    return sorted(set(found))


def candidate_sockets() -> list[str]:
    named = os.environ.get(SOCKETS_ENV)
    if named:
        return [path for path in named.split(":") if path]
    return listening_mgmt_sockets()


def switch_ports(path: str) -> list[dict[str, object]] | None:
    """The ports of the umlswitch at ``path``; None if nothing there is a umlswitch."""
    try:
        with connect(path, PROBE_TIMEOUT) as client:
            if not client.banner.startswith("umlswitch "):
                return None
            ports: list[dict[str, object]] = client.json("port/print")["ports"]
            return ports
    except (CannotConnect, MgmtError, ProtocolError, OSError, ValueError, KeyError):
        return None


def interfaces() -> Iterator[tuple[str, str]]:
    """(value, display) of every capture interface: each switch, and each of its ports."""
    for path in candidate_sockets():
        ports = switch_ports(path)
        if ports is None:
            continue
        switch = path.removesuffix(".mgmt")
        yield f"{PREFIX}{path}", f"umlswitch {switch}: every port"
        for port in ports:
            yield f"{PREFIX}{path}:{port['id']}", f"umlswitch {switch}: port {port['name']}"


def parse_interface(value: str) -> tuple[str, int | None]:
    """``umlswitch:MGMT[:N]`` as (MGMT, N or None); ValueError if it is none of ours."""
    if not value.startswith(PREFIX):
        raise ValueError(f"not a umlswitch interface: {value!r}")
    rest = value[len(PREFIX) :]
    path, _, port = rest.rpartition(":")
    if path and port.isdigit():
        return path, int(port)
    return rest, None


def _field(text: object) -> str:
    """A value inside ``{key=...}``: braces would end it early."""
    return str(text).replace("{", "(").replace("}", ")")


def print_interfaces() -> None:
    print(f"extcap {{version={__version__}}}{{help=man:umlswitch(1)}}")
    for value, display in interfaces():
        print(f"interface {{value={_field(value)}}}{{display={_field(display)}}}")


def capture(interface: str, fifo: str) -> int:
    path, port = parse_interface(interface)
    line = "pcap/stream" if port is None else f"pcap/stream {port}"
    try:
        sock, first = open_stream(path, line)
    except (CannotConnect, StreamRefused, ProtocolError, OSError) as exc:
        print(f"umlswitch-extcap: {exc}", file=sys.stderr)
        return 1
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt), sock, open(fifo, "wb") as out:

        def write(data: bytes) -> None:
            out.write(data)
            out.flush()

        copy_stream(sock, first, write)
    return 0


def extcap_dir() -> str:
    """Where ``--install`` puts the link: Wireshark's personal extcap directory if it has one,
    else its global one (``tshark -G folders``)."""
    tshark = shutil.which("tshark")
    if tshark is None:
        raise FileNotFoundError("tshark is not installed (apt-get install tshark); or give --dir")
    folders = subprocess.run(
        [tshark, "-G", "folders"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    found = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in folders.splitlines())
    )
    directory = found.get("Personal Extcap path") or found.get("Extcap path")
    if not directory:
        raise FileNotFoundError("tshark -G folders names no extcap directory; give --dir")
    return directory


def install(directory: str, program: str) -> str:
    """Link ``program`` into ``directory`` as ``umlswitch``; the link's path."""
    os.makedirs(directory, exist_ok=True)
    link = os.path.join(directory, "umlswitch")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    os.symlink(program, link)
    return link


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="umlswitch-extcap",
        description="Wireshark extcap program: the running umlswitches' ports as capture "
        "interfaces. Run by Wireshark/tshark; install with --install.",
    )
    parser.add_argument("--extcap-interfaces", action="store_true")
    parser.add_argument("--extcap-dlts", action="store_true")
    parser.add_argument("--extcap-config", action="store_true")
    parser.add_argument("--extcap-interface", metavar="INTERFACE")
    parser.add_argument("--extcap-version", metavar="VERSION")
    parser.add_argument("--extcap-capture-filter", metavar="FILTER")
    parser.add_argument("--capture", action="store_true")
    parser.add_argument("--fifo", metavar="PATH")
    parser.add_argument(
        "--install",
        action="store_true",
        help="link this program into Wireshark's extcap directory (see tshark -G folders)",
    )
    parser.add_argument("--dir", metavar="DIR", help="with --install: this extcap directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns, _unknown = parser.parse_known_args(argv)  # later extcap versions may add options
    if ns.install:
        program = os.path.abspath(sys.argv[0])
        try:
            link = install(ns.dir or extcap_dir(), program)
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"umlswitch-extcap: cannot install: {exc}", file=sys.stderr)
            return 1
        print(f"umlswitch-extcap: {link} -> {program}; tshark -D lists the switches' ports")
        return 0
    if ns.extcap_interfaces:
        print_interfaces()
        return 0
    if ns.extcap_interface is None:
        parser.error("give --extcap-interfaces, or --extcap-interface with what to do")
    try:
        parse_interface(ns.extcap_interface)
    except ValueError as exc:
        parser.error(str(exc))
    if ns.extcap_dlts:
        print(f"dlt {{number={LINKTYPE_ETHERNET}}}{{name=EN10MB}}{{display=Ethernet}}")
        return 0
    if ns.extcap_config:
        return 0  # no options
    if ns.capture:
        if ns.fifo is None:
            parser.error("--capture needs --fifo PATH")
        if ns.extcap_capture_filter:
            print("umlswitch-extcap: capture filters are not supported", file=sys.stderr)
        return capture(ns.extcap_interface, ns.fifo)
    parser.error("give --extcap-dlts, --extcap-config or --capture")
    return 2


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
