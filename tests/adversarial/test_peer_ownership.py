"""A client may only name its own data socket: never another process's, never another user's."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from tests.integration.frames import frame, mac
from umlswitch import counters
from umlswitch.ports.unix import control
from umlswitch.testing import SwitchProcess, attach_sync
from umlswitch.testing import guest_address as abstract_address
from umlswitch.testing.fence import fence_frame, is_fence

NOBODY = 65534

# A victim process: binds a datagram socket, says READY, and when its stdin closes counts what
# the socket has received (every datagram anyone ever sent it) and prints the count.
VICTIM = """
import socket, sys
address = bytes.fromhex(sys.argv[1]) if sys.argv[1] != "path" else sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(address)
s.setblocking(False)
print("READY", flush=True)
sys.stdin.read()
count = 0
while True:
    try:
        s.recv(70000)
    except BlockingIOError:
        break
    count += 1
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


_victims: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_victim_outlives_its_test() -> Iterator[None]:
    """A victim waits for its stdin to close: end those a failed test left waiting."""
    yield
    while _victims:
        victim = _victims.pop()
        if victim.poll() is None:
            victim.kill()
            victim.communicate()


def start_victim(address: bytes | str, *, as_nobody: bool) -> subprocess.Popen[str]:
    args = ["path", address] if isinstance(address, str) else [address.hex(), "-"]
    proc = subprocess.Popen(
        [victim_python(as_nobody), "-c", VICTIM, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        user=NOBODY if as_nobody else None,
        group=NOBODY if as_nobody else None,
    )
    _victims.append(proc)
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


class Guest(Protocol):
    """An attached test client: sends raw frames, receives them on its data socket."""

    data: socket.socket

    def send(self, frame: bytes, /) -> None: ...


def read_to_fence(sender: Guest, receiver: Guest) -> list[bytes]:
    """Send a fence frame from ``sender`` (``umlswitch.testing.fence``); return the frames
    ``receiver`` gets before it: all it will ever get of what ``sender`` sent before it."""
    fence = fence_frame(mac(1))
    sender.send(fence)
    receiver.data.settimeout(5)
    before = []
    while not is_fence(raw := receiver.data.recv(65536), fence):
        before.append(raw)
    return before


def flood_and_count(switch: SwitchProcess, victim: subprocess.Popen[str]) -> int:
    """Broadcast frames on the switch; return how many reached the victim's socket.

    Nothing is waited out. The switch keeps the order of one port's frames, and sends what it
    has read (a frame, or a batch) to every egress port before it reads more: so once B has a
    fence sent after the flood, and then a second fence sent only after B had the first (so
    read in a later batch), the switch has sent the flood to every port it has. A port aimed
    at the victim would have put the first broadcast in the victim's empty queue there and
    then; only now does the victim count.
    """
    with attach_sync(switch.control_path) as a, attach_sync(switch.control_path) as b:
        assert switch.counters()["info"]["ports"] == 2  # the refused request left no port
        flood = [frame(b"\xff" * 6, mac(1), bytes([i]) * 46) for i in range(20)]
        for broadcast in flood:
            a.send(broadcast)
        assert read_to_fence(a, b) == flood
        assert read_to_fence(a, b) == []
    out, _ = victim.communicate(timeout=10)
    return int(out.strip())


def peers_refused(switch: SwitchProcess) -> int:
    """The switch's count of clients refused because their data socket was not their own."""
    count: int = switch.counters()["info"]["events"].get(counters.PEER_REFUSED, 0)
    return count


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
    assert peers_refused(switch) == 1
    assert flood_and_count(switch, victim) == 0
    assert "not held by the client process" in switch.log


def test_another_users_abstract_socket_is_refused(switch: SwitchProcess) -> None:
    address = abstract_address()
    victim = start_victim(address, as_nobody=True)
    assert request_attach(switch.control_path, control.encode_v3(address)) == b""
    assert peers_refused(switch) == 1
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
        assert peers_refused(switch) == 1
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
        assert peers_refused(switch) == 1
        assert flood_and_count(switch, victim) == 0
        assert "refused v0 request" in switch.log


def test_own_socket_is_accepted(switch: SwitchProcess) -> None:
    """The check does not get in the way of an honest client (UML's case is covered by e2e)."""
    with attach_sync(switch.control_path) as a, attach_sync(switch.control_path) as b:
        a.send(frame(b"\xff" * 6, mac(1)))
        assert b.receive_bytes() == frame(b"\xff" * 6, mac(1))
    assert "refused" not in switch.log
    assert peers_refused(switch) == 0
