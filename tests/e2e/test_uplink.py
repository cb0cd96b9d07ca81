"""End-to-end: UML guests online without a tap, through ``--slirp`` and through passt.

* Two UML guests on ``umlswitch -unix CTL --slirp`` get different addresses from slirp's DHCP
  (busybox ``udhcpc``) and download 4 MiB each **at the same time** from an HTTP server the
  test runs on the host's 127.0.0.1 (reached at the router, 10.0.2.2); the server counts the
  downloads in flight. The host reaches a guest's iperf3 server through ``--slirp-forward``.
  Then the slirp helper is killed: the switch starts a new one and a
  guest's DHCP and download work again within 10 s. SIGTERM leaves no helper behind.
* One UML guest on ``umlswitch --stream-connect unix:PATH`` to a passt the test starts gets its
  address from passt and downloads through it; passt is killed and started again, and the link
  reconnects within 10 s, after which the guest downloads again.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from umlswitch.mgmt.client import connect

from .uml import GuestPool, Switch, Switches, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("vde_plug") is None, reason="needs vde_plug (Debian vdeplug)"),
    pytest.mark.skipif(
        not os.access("/bin/busybox", os.X_OK), reason="needs busybox (Debian busybox-static)"
    ),
    pytest.mark.skipif(shutil.which("curl") is None, reason="the guests need curl"),
]

BLOB = os.urandom(4 << 20)  # what each guest downloads
BLOB_MD5 = hashlib.md5(BLOB).hexdigest()
CHUNK = 64 << 10
CHUNK_PAUSE = 0.02  # so that one download takes about a second: two at once overlap
RELINK_SECONDS = 10.0

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc's hook (tests/e2e/test_uplink.py): configure eth0 and note the lease for the test
case "$1" in
bound|renew)
    ip addr add "$ip/${mask:-24}" dev "$interface" 2>/dev/null
    ip route replace default via "$router" dev "$interface"
    echo "$ip $router" > "$E2E_DIR/$E2E_NAME.lease"
    ;;
esac
exit 0
"""


class BlobServer(http.server.ThreadingHTTPServer):
    """Serves BLOB slowly enough to overlap, counting the downloads in flight at once."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _BlobHandler)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.served = 0

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _BlobHandler(http.server.BaseHTTPRequestHandler):
    server: BlobServer

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BLOB)))
        self.end_headers()
        server = self.server
        with server.lock:
            server.in_flight += 1
            server.most_in_flight = max(server.most_in_flight, server.in_flight)
        try:
            for offset in range(0, len(BLOB), CHUNK):
                self.wfile.write(BLOB[offset : offset + CHUNK])
                time.sleep(CHUNK_PAUSE)
            with server.lock:
                server.served += 1
        finally:
            with server.lock:
                server.in_flight -= 1

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[BlobServer]:
    server = BlobServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def dhcp(workdir: Path) -> str:
    """A guest command: get a lease with busybox udhcpc; print ``IP ROUTER``."""
    script = workdir / "udhcpc.sh"
    if not script.exists():
        script.write_text(UDHCPC_SCRIPT)
        script.chmod(0o755)
    return (
        'rm -f "$E2E_DIR/$E2E_NAME.lease"; '
        f"busybox udhcpc -i eth0 -f -q -n -t 10 -T 1 -s {script} >&2 && "
        'cat "$E2E_DIR/$E2E_NAME.lease"'
    )


def fetch(port: int, after: str | None = None) -> str:
    """A guest command: (wait for file ``after``, then) download BLOB from the router; print
    its MD5. (curl: busybox's static wget crashes in UML 6.1 guests.)"""
    wait = f'e2e_wait_file "$E2E_DIR/{after}" 60 && ' if after else ""
    router = '$(cut -d" " -f2 "$E2E_DIR/$E2E_NAME.lease")'
    return f"{wait}curl -sS --max-time 30 http://{router}:{port}/blob | md5sum"


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def iperf3_through(port: int, timeout: float = 20.0) -> int:
    """Bytes a 1-second iperf3 test sent to 127.0.0.1:``port`` (retried until the server
    listens)."""
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(
            ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", "1", "-J"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        try:
            report = json.loads(result.stdout)
        except ValueError:
            report = {}
        sent = report.get("end", {}).get("sum_sent")  # none: it did not reach a server yet
        if result.returncode == 0 and sent is not None:
            return int(sent["bytes"])
        assert time.monotonic() < deadline, result.stdout + result.stderr
        time.sleep(0.5)


def mgmt_json(switch: Switch, command: str) -> Any:
    with connect(f"{switch.ctl}.mgmt") as client:
        return client.json(command)


def slirp_helper_pid(switch: Switch, not_pid: int = 0) -> int:
    """The pid of the slirp helper attached now (other than ``not_pid``), waiting for one."""
    found: list[int] = []

    def attached() -> bool:
        for port in mgmt_json(switch, "port/print")["ports"]:
            if port["name"].startswith("slirp:") and port["peer"]["pid"] != not_pid:
                found.append(port["peer"]["pid"])
                return True
        return False

    wait_until(attached, 10, "no slirp helper attached", log=switch.log_path)
    return found[-1]


def test_two_slirp_guests_download_at_once_and_survive_a_new_helper(
    switch: Switches, guests: GuestPool, http_server: BlobServer, tmp_path: Path
) -> None:
    # a host port forwarded to each of the first two DHCP addresses, for g2's iperf3 server
    forwards = {f"10.0.2.{n}": free_tcp_port() for n in (15, 16)}
    forward_args = [f"--slirp-forward={port}:{ip}:5201" for ip, port in forwards.items()]
    sw = switch(False, "--slirp", *forward_args)
    g1, g2 = guests(
        sw,
        [
            dhcp(tmp_path),
            fetch(http_server.port, after="go"),
            dhcp(tmp_path) + " && " + fetch(http_server.port, after="killed"),
        ],
        [dhcp(tmp_path), fetch(http_server.port, after="go"), "iperf3 -s -1 -p 5201"],
    )
    leases = [g.result(0) for g in (g1, g2)]
    for lease in leases:
        assert lease.returncode == 0, lease.describe()
    (ip1, router1), (ip2, router2) = (lease.stdout.split() for lease in leases)
    assert ip1 != ip2 and {ip1, ip2} <= {f"10.0.2.{n}" for n in range(15, 31)}
    assert router1 == router2 == "10.0.2.2"

    (tmp_path / "go").touch()  # both download now
    for guest in (g1, g2):
        got = guest.result(1, timeout=60)
        assert got.returncode == 0 and got.stdout.split()[0] == BLOB_MD5, got.describe()
    assert http_server.most_in_flight == 2, "the two downloads did not overlap"
    # --slirp-forward: the host reaches g2's iperf3 server on 127.0.0.1
    assert iperf3_through(forwards[ip2]) > 0

    first = slirp_helper_pid(sw)
    os.kill(first, signal.SIGKILL)
    killed_at = time.monotonic()
    (tmp_path / "killed").touch()
    again = g1.result(2, timeout=30)
    assert again.returncode == 0 and again.stdout.split()[-2] == BLOB_MD5, again.describe()
    second = slirp_helper_pid(sw, not_pid=first)
    # the command's download (about a second) ends within 10 s of the kill
    assert time.monotonic() - killed_at < RELINK_SECONDS + 2
    sw.check_alive()
    log = sw.log_path.read_text()
    assert f"slirp helper (pid {first}) was killed by SIGKILL" in log

    assert sw.stop() == 0
    for pid in (first, second):
        assert not Path(f"/proc/{pid}").exists(), f"slirp helper {pid} outlived the switch"


@pytest.fixture
def passt_dir() -> Iterator[Path]:
    """A directory passt (which drops to nobody) can bind its socket in."""
    if shutil.which("passt") is None:
        pytest.skip("needs passt (Debian passt)")
    nobody = pwd.getpwnam("nobody")
    directory = Path(tempfile.mkdtemp(prefix="umlsw-passt-"))
    os.chown(directory, nobody.pw_uid, nobody.pw_gid)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def start_passt(directory: Path) -> subprocess.Popen[bytes]:
    sock = directory / "passt.sock"
    sock.unlink(missing_ok=True)
    with (directory / "passt.log").open("ab") as log:
        proc = subprocess.Popen(
            ["passt", "-f", "-e", "-s", str(sock), "-m", "1500"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_until(sock.exists, 10, "passt did not bind its socket", log=directory / "passt.log")
    return proc


def stop_passt(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # passt execs passt.avx2: the group goes
    proc.wait(5)


def link_state(sw: Switch) -> dict[str, Any]:
    (port,) = [p for p in mgmt_json(sw, "port/print")["ports"] if p["link"] is not None]
    link: dict[str, Any] = port["link"]
    return link


def test_a_guest_online_through_passt_and_a_link_that_reconnects(
    switch: Switches, guests: GuestPool, http_server: BlobServer, tmp_path: Path, passt_dir: Path
) -> None:
    passt = start_passt(passt_dir)
    try:
        sw = switch(False, "--stream-connect", f"unix:{passt_dir / 'passt.sock'}")
        (g1,) = guests(
            sw,
            [dhcp(tmp_path), fetch(http_server.port), fetch(http_server.port, after="relinked")],
        )
        lease = g1.result(0)
        assert lease.returncode == 0, lease.describe()
        offered = re.search(r"assign: (\S+)", (passt_dir / "passt.log").read_text())
        assert offered is not None and lease.stdout.split()[0] == offered[1], lease.describe()
        got = g1.result(1)
        assert got.returncode == 0 and got.stdout.split()[0] == BLOB_MD5, got.describe()
        assert link_state(sw)["state"] == "connected"

        stop_passt(passt)
        wait_until(
            lambda: link_state(sw)["state"] != "connected", 10, "link still up", log=sw.log_path
        )
        passt = start_passt(passt_dir)
        back_at = time.monotonic()
        wait_until(
            lambda: link_state(sw)["state"] == "connected",
            RELINK_SECONDS,
            "the link did not reconnect to passt",
            log=sw.log_path,
        )
        assert time.monotonic() - back_at < RELINK_SECONDS
        assert link_state(sw)["reconnections"] == 1
        (tmp_path / "relinked").touch()
        got = g1.result(2)
        assert got.returncode == 0 and got.stdout.split()[0] == BLOB_MD5, got.describe()
        sw.check_alive()
    finally:
        stop_passt(passt)
