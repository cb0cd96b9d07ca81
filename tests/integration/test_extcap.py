"""The Wireshark extcap entry (``umlswitch-extcap``) as tshark runs it: ``tshark -D`` lists the
running switch's ports, ``tshark -i ... -c 5`` captures five frames from one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from umlswitch.extcap import extcap_dir, install, listening_mgmt_sockets, parse_interface
from umlswitch.testing import SwitchProcess, attach_sync

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("tshark") is None, reason="needs tshark (apt-get install tshark)"
    ),
]

MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def installed() -> Iterator[Path]:
    """This tree's extcap program in tshark's extcap directory, under a name of this test's."""
    directory = extcap_dir()
    if not os.access(directory, os.W_OK):
        pytest.skip(f"needs write access to tshark's extcap directory {directory} (root)")
    program = Path(directory) / f"umlswitch-test-{uuid.uuid4().hex[:8]}"
    program.write_text(
        f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m umlswitch.extcap "$@"\n'
    )
    program.chmod(0o755)
    try:
        yield program
    finally:
        program.unlink()


def tshark(args: list[str], mgmt: str, **kwargs: object) -> subprocess.Popen[str]:
    env = dict(os.environ, UMLSWITCH_EXTCAP_SOCKETS=mgmt)
    return subprocess.Popen(
        ["tshark", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


def test_tshark_lists_the_ports_and_captures_five_frames(installed: Path, tmp_path: Path) -> None:
    with (
        SwitchProcess(directory=str(tmp_path)) as switch,
        attach_sync(switch.control_path, mac=MAC_A) as a,
        attach_sync(switch.control_path, mac=MAC_B) as b,
    ):
        mgmt = str(switch.mgmt_path)
        port_a = switch.port_number(a)
        with tshark(["-D"], mgmt) as listing:
            out, err = listing.communicate(timeout=60)
        assert listing.returncode == 0, err
        assert f"umlswitch:{mgmt} (umlswitch {switch.control_path}: every port)" in out
        assert f"umlswitch:{mgmt}:{port_a} (umlswitch {switch.control_path}: port unix:" in out
        assert f"umlswitch:{mgmt}:{switch.port_number(b)} " in out

        done = threading.Event()

        def send_until_done() -> None:
            n = 0
            while not done.wait(0.05):
                a.send(a.ether(dst=MAC_B) / f"extcap {n}".encode().ljust(46))
                n += 1

        with tshark(
            ["-i", f"umlswitch:{mgmt}:{port_a}", "-c", "5", "-n", "-T", "fields", "-e", "eth.src"],
            mgmt,
        ) as capture:
            sender = threading.Thread(target=send_until_done)
            sender.start()
            try:
                out, err = capture.communicate(timeout=60)
            finally:
                done.set()
                sender.join()
        assert capture.returncode == 0, err
        assert out.split() == [MAC_A] * 5
        assert "5 packets captured" in err


def test_interface_names_and_the_socket_scan(tmp_path: Path) -> None:
    assert parse_interface("umlswitch:/run/x.mgmt:3") == ("/run/x.mgmt", 3)
    assert parse_interface("umlswitch:/run/x.mgmt") == ("/run/x.mgmt", None)
    with pytest.raises(ValueError, match="not a umlswitch interface"):
        parse_interface("eth0")
    with SwitchProcess(directory=str(tmp_path)) as switch:
        assert str(switch.mgmt_path) in listening_mgmt_sockets()


def test_install_links_the_program_into_the_directory(tmp_path: Path) -> None:
    link = install(str(tmp_path / "extcap"), "/usr/bin/umlswitch-extcap")
    assert link == str(tmp_path / "extcap" / "umlswitch")
    assert os.readlink(link) == "/usr/bin/umlswitch-extcap"
    assert install(str(tmp_path / "extcap"), "/opt/x") == link  # again: replaced
    assert os.readlink(link) == "/opt/x"


def test_the_socket_scan_takes_listening_mgmt_sockets_and_skips_the_rest(tmp_path: Path) -> None:
    table = tmp_path / "unix"
    table.write_bytes(
        b"Num       RefCount Protocol Flags    Type St Inode Path\n"
        b"0000: 00000002 00000000 00010000 0001 01 101 /run/a.ctl.mgmt\n"  # listening stream
        b"0000: 00000002 00000000 00000000 0001 03 102 /run/b.ctl.mgmt\n"  # a connection
        b"0000: 00000002 00000000 00010000 0001 01 103 /run/a.ctl\n"  # not a .mgmt
        b"0000: 00000002 00000000 00000000 0002 01 104 @\xde\xad\xbe\xef\n"  # abstract, not UTF-8
        b"0000: 00000002 00000000 00010000 0001 01 105\n"  # unnamed
    )
    assert listening_mgmt_sockets(str(table)) == ["/run/a.ctl.mgmt"]
