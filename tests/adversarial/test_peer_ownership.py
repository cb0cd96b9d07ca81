"""A client may only name its own data socket: never another process's, never another user's."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.integration.frames import frame, mac
from umlswitch.ports.unix import control
from umlswitch.testing import SwitchProcess, attach_sync
from umlswitch.testing import guest_address as abstract_address

NOBODY = 65534

# A victim process: binds a datagram socket, says READY, counts what it gets for a while.
VICTIM = """
import socket, sys
address = bytes.fromhex(sys.argv[1]) if sys.argv[1] != "path" else sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(address)
s.settimeout(float(sys.argv[3]))
print("READY", flush=True)
count = 0
try:
    while True:
        s.recv(70000)
        count += 1
except (TimeoutError, OSError):
    pass
print(count, flush=True)
"""


def victim_python(as_nobody: bool) -> str:
    """A Python that the victim's user may run (root's pyenv is not readable by nobody)."""
    if not as_nobody:
        return sys.executable
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("no system python3 that user nobody can run")


def start_victim(address: bytes | str, *, as_nobody: bool, seconds: float = 3.0):
    args = ["path", address] if isinstance(address, str) else [address.hex(), "-"]
    proc = subprocess.Popen(
        [victim_python(as_nobody), "-c", VICTIM, *args, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        user=NOBODY if as_nobody else None,
        group=NOBODY if as_nobody else None,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "READY":
        proc.communicate(timeout=10)
        raise AssertionError("the victim process could not bind its socket")
    return proc


def request_attach(ctl: str, request: bytes) -> bytes:
    """Send a raw request; return the reply (b'' if the switch closed the connection)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(ctl)
        conn.sendall(request)
        return conn.recv(200)


def flood_and_count(switch: SwitchProcess, victim: subprocess.Popen[str]) -> int:
    """Broadcast frames on the switch; return how many reached the victim's socket."""
    with attach_sync(switch.control_path) as a, attach_sync(switch.control_path):
        for i in range(20):
            a.send(frame(b"\xff" * 6, mac(1), bytes([i]) * 46))
    out, _ = victim.communicate(timeout=10)
    return int(out.strip())


@pytest.fixture
def switch(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("needs root to run a victim as another user")
    tmp_path.chmod(0o755)
    with SwitchProcess(directory=str(tmp_path)) as process:
        yield process


def test_another_processs_socket_is_refused(switch: SwitchProcess) -> None:
    address = abstract_address()
    victim = start_victim(address, as_nobody=False)
    assert request_attach(switch.control_path, control.encode_v3(address)) == b""
    assert flood_and_count(switch, victim) == 0
    assert "not held by the client process" in switch.log


def test_another_users_abstract_socket_is_refused(switch: SwitchProcess) -> None:
    address = abstract_address()
    victim = start_victim(address, as_nobody=True)
    assert request_attach(switch.control_path, control.encode_v3(address)) == b""
    assert flood_and_count(switch, victim) == 0
    assert f"belongs to uid {NOBODY}, not to the client (uid 0)" in switch.log


def test_another_users_pathname_socket_is_refused(switch: SwitchProcess) -> None:
    shared = Path(tempfile.mkdtemp(prefix="umlswitch-victim-"))  # nobody can reach /tmp/...
    try:
        shared.chmod(0o777)
        path = str(shared / "victim.sock")
        victim = start_victim(path, as_nobody=True)
        request = control.encode_v3(os.fsencode(path), description="vde-like")
        assert request_attach(switch.control_path, request) == b""
        assert flood_and_count(switch, victim) == 0
        assert "refused" in switch.log and f"uid {NOBODY}" in switch.log
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_v0_naming_another_processs_socket_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    data = str(tmp_path / "data")
    with SwitchProcess(data, directory=str(tmp_path)) as switch:
        address = abstract_address()
        victim = start_victim(address, as_nobody=False)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(switch.control_path)
            conn.sendall(control.encode_v0(address))
            conn.settimeout(5)
            assert conn.recv(10) == b""  # refused: closed (a v0 request gets no reply anyway)
        assert flood_and_count(switch, victim) == 0
        assert "refused v0 request" in switch.log


def test_own_socket_is_accepted(switch: SwitchProcess) -> None:
    """The check does not get in the way of an honest client (UML's case is covered by e2e)."""
    with attach_sync(switch.control_path) as a, attach_sync(switch.control_path) as b:
        a.send(frame(b"\xff" * 6, mac(1)))
        assert b.receive_bytes() == frame(b"\xff" * 6, mac(1))
    assert "refused" not in switch.log
