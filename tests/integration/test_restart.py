"""Seamless restart as a user sees it: guests keep their ports, frames keep flowing, the pid
changes; a broken upgrade leaves the old switch serving; a stop at any moment is clean."""

from __future__ import annotations

import itertools
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from umlswitch.mgmt.client import CannotConnect, connect
from umlswitch.testing import SwitchProcess, SyncPort, attach_sync

pytestmark = pytest.mark.integration

ETHERTYPE = 0x88B5  # local experimental: the test's numbered frames
MAC_A, MAC_B, MAC_C = "02:00:00:00:01:0a", "02:00:00:00:01:0b", "02:00:00:00:01:0c"


def ctl_cli(ctl: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "umlswitch", "ctl", "-unix", ctl, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def serving_pid(ctl: str) -> int:
    with connect(ctl + ".mgmt") as client:
        pid: int = client.json("showinfo")["pid"]
        return pid


def info(ctl: str) -> dict[str, Any]:
    with connect(ctl + ".mgmt") as client:
        doc: dict[str, Any] = client.json("showinfo")
        return doc


def wait_for_new_pid(ctl: str, old: int, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = serving_pid(ctl)
        except (OSError, CannotConnect):  # the old process left between accept and prompt
            pid = old
        if pid != old:
            return pid
        time.sleep(0.02)
    raise AssertionError(f"pid {old} still serves {ctl} after {timeout} s")


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM a switch that is not our child (a restart started it) and wait until it is gone."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"pid {pid} ignored SIGTERM for {timeout} s")
        time.sleep(0.01)


def numbered(src: str, dst: str, seq: int) -> bytes:
    header = bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", ""))
    return (header + struct.pack("!HQ", ETHERTYPE, seq)).ljust(60, b"\0")


def receive_seq(port: SyncPort) -> int:
    """The sequence number of the next numbered frame ``port`` receives (BPDUs skipped)."""
    while True:
        raw = port.receive_bytes()
        ethertype, seq = struct.unpack("!HQ", raw[12:22])
        if ethertype == ETHERTYPE:
            return int(seq)


def learn(*ports: SyncPort) -> None:
    """Every port sends one broadcast, so that the switch knows where each MAC is."""
    for port in ports:
        port.send(numbered(str(port.mac), "ff:ff:ff:ff:ff:ff", 0))
        for other in ports:
            if other is not port:
                other.receive_bytes()


class Receiver(threading.Thread):
    """Records (sequence number, arrival time) of the numbered frames a port receives."""

    def __init__(self, port: SyncPort) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.got: list[tuple[int, float]] = []
        self.unicast_of_others = 0
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            try:
                raw = self.port.receive_bytes(timeout=0.2)
            except TimeoutError:
                continue
            ethertype, seq = struct.unpack("!HQ", raw[12:22])
            if ethertype != ETHERTYPE or raw[0] & 1:
                continue
            if raw[:6] != bytes.fromhex(str(self.port.mac).replace(":", "")):
                self.unicast_of_others += 1
                continue
            self.got.append((seq, time.monotonic()))


def _report(receivers: list[Receiver], sent: int) -> None:
    """The figures, for ``pytest -s`` (the assertions come after)."""
    for receiver in receivers:
        times = [t for _, t in receiver.got]
        gap = max(b - a for a, b in itertools.pairwise(times))
        print(f"sent {sent}, received {len(times)}, longest gap {gap * 1000:.0f} ms")


def check_stream(receiver: Receiver, sent: int) -> None:
    seqs = [seq for seq, _ in receiver.got]
    assert seqs == sorted(set(seqs)), "frames were duplicated or reordered"
    lost = sent - len(seqs)
    assert lost <= sent * 0.005, f"{lost} of {sent} frames lost"
    times = [t for _, t in receiver.got]
    gap = max(b - a for a, b in itertools.pairwise(times))
    assert gap <= 0.25, f"no frame for {gap * 1000:.0f} ms"


def test_ten_restarts_under_traffic_lose_nothing(tmp_path: Path) -> None:
    switch = SwitchProcess(directory=str(tmp_path))
    ctl = switch.control_path
    pids = [switch.process.pid]
    try:
        with (
            attach_sync(ctl, mac=MAC_A) as a,
            attach_sync(ctl, mac=MAC_B) as b,
            attach_sync(ctl, mac=MAC_C) as c,
        ):
            learn(a, b, c)
            receivers = [Receiver(a), Receiver(b), Receiver(c)]
            for receiver in receivers:
                receiver.start()
            sent = 0
            stop = threading.Event()

            def send() -> None:
                nonlocal sent
                due = time.monotonic()
                while not stop.is_set():
                    sent += 1
                    a.send(numbered(MAC_A, MAC_B, sent))
                    b.send(numbered(MAC_B, MAC_A, sent))
                    due += 0.001
                    time.sleep(max(0.0, due - time.monotonic()))

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            for n in range(10):
                time.sleep(1.5)
                if n % 2 == 0:
                    result = ctl_cli(ctl, "restart")
                    assert result.returncode == 0, result.stderr
                    assert "handed the switch over to pid" in result.stdout
                else:
                    os.kill(pids[-1], signal.SIGUSR2)
                pids.append(wait_for_new_pid(ctl, pids[-1]))
            time.sleep(0.5)
            stop.set()
            sender.join()
            time.sleep(0.5)
            for receiver in receivers:
                receiver.stopping = True
                receiver.join()
        _report(receivers[:2], sent)
        assert len(set(pids)) == 11, pids
        assert switch.process.wait(5) == 0  # the first switch handed over and exited 0
        check_stream(receivers[1], sent)  # a -> b
        check_stream(receivers[0], sent)  # b -> a
        assert receivers[2].got == [] and receivers[2].unicast_of_others == 0
        doc = info(ctl)
        assert doc["restarts"] == 10
        assert doc["uptime"] >= 15
    finally:
        stop_pid(pids[-1])
    assert not os.path.exists(ctl) and not os.path.exists(ctl + ".mgmt")
    for pid in pids:
        assert not running(pid)


def test_restart_keeps_ports_counters_vlans_and_table(tmp_path: Path) -> None:
    switch = SwitchProcess(directory=str(tmp_path))
    ctl = switch.control_path
    try:
        with attach_sync(ctl, mac=MAC_A) as a, attach_sync(ctl, mac=MAC_B) as b:
            learn(a, b)
            with connect(ctl + ".mgmt") as client:
                client.run("vlan/create 20")
                client.run("port/setstormlimit 2 500")
                client.json("port/impair 1 out delay=1ms")
                client.run("fstp/setfstp 1")
                client.run("fstp/setpriority 4096")
                client.run("fstp/setcost 2 300")
                before = client.json("port/print")["ports"]
                stp = client.json("fstp/print")
                stp_before = (stp["bridge"], [p["cost"] for p in stp["ports"] if p["id"] == 2])
                table = client.json("hash/print")
            result = ctl_cli(ctl, "--json", "restart")
            assert result.returncode == 0, result.stderr
            new_pid = wait_for_new_pid(ctl, switch.process.pid)
            with connect(ctl + ".mgmt") as client:
                after = client.json("port/print")["ports"]
                assert client.json("hash/print") == table
                assert 20 in client.json("showinfo")["vlans"]["ids"]
                assert client.json("port/impair 1")["out"]["setting"]["delay"] == 0.001
                assert client.json("port/print 2")["ports"][0]["storm_limit"] == 500
                stp = client.json("fstp/print")
                stp_after = (stp["bridge"], [p["cost"] for p in stp["ports"] if p["id"] == 2])
                assert stp_after == stp_before and stp_after[1] == [300]
                assert stp["bridge"].startswith("4096.")
            for old, new in zip(before, after, strict=True):
                assert (old["id"], old["name"], old["rx_frames"]) == (
                    new["id"],
                    new["name"],
                    new["rx_frames"],
                )
            a.send(numbered(MAC_A, MAC_B, 7))
            assert receive_seq(b) == 7
    finally:
        stop_pid(serving_pid(ctl))
    assert new_pid != switch.process.pid
    assert switch.process.wait(5) == 0


def test_broken_upgrade_leaves_the_old_switch_serving(tmp_path: Path) -> None:
    script = tmp_path / "umlswitch"
    good = f"#!{sys.executable}\nfrom umlswitch.__main__ import run\nrun()\n"
    script.write_text(good)
    script.chmod(0o755)
    ctl = str(tmp_path / "ctl")
    with open(tmp_path / "log", "w") as log:
        process = subprocess.Popen(
            [str(script), "-unix", ctl], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(ctl + ".mgmt"):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.02)
        with attach_sync(ctl, mac=MAC_A) as a, attach_sync(ctl, mac=MAC_B) as b:
            learn(a, b)
            script.write_text("#!/bin/sh\nexit 1\n")  # the upgrade that broke
            result = ctl_cli(ctl, "restart")
            assert result.returncode == 1
            assert "restart failed: the new process" in result.stderr
            assert "exited 1 before it took over" in result.stderr
            assert f"this switch (pid {process.pid}) serves on" in result.stderr
            assert serving_pid(ctl) == process.pid
            a.send(numbered(MAC_A, MAC_B, 1))
            assert struct.unpack("!Q", b.receive_bytes()[14:22])[0] == 1
            script.write_text(good)  # fixed: the restart runs the script anew
            assert ctl_cli(ctl, "restart").returncode == 0
            assert process.wait(10) == 0
            b.send(numbered(MAC_B, MAC_A, 2))
            assert struct.unpack("!Q", a.receive_bytes()[14:22])[0] == 2
    finally:
        if process.poll() is None:
            process.kill()
        with __import__("contextlib").suppress(OSError):
            stop_pid(serving_pid(ctl))


def test_sigterm_during_a_restart_stops_cleanly(tmp_path: Path) -> None:
    switch = SwitchProcess(directory=str(tmp_path))
    ctl = switch.control_path
    os.kill(switch.process.pid, signal.SIGUSR2)
    time.sleep(0.05)  # the new process is starting
    assert switch.stop() == 0
    assert not os.path.exists(ctl) and not os.path.exists(ctl + ".mgmt")
    assert "restart: starting" in switch.log
    time.sleep(0.5)
    assert (
        subprocess.run(["pgrep", "-f", f"umlswitch -unix {ctl}"], capture_output=True).stdout == b""
    )


@pytest.mark.parametrize("attempt", range(20))
def test_sigterm_when_the_control_socket_appears(tmp_path: Path, attempt: int) -> None:
    """The issue's recipe: SIGTERM the moment ``ctl`` exists, before the switch serves."""
    ctl = tmp_path / "ctl"
    process = subprocess.Popen(
        [sys.executable, "-m", "umlswitch", "-unix", str(ctl)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 10
    while not ctl.exists():
        assert time.monotonic() < deadline, "the control socket never appeared"
        time.sleep(0.0002)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=10)
    assert process.returncode == 0, output
    assert "Traceback" not in output
    assert sorted(os.listdir(tmp_path)) == [], output


def test_daemon_names_the_live_pid(tmp_path: Path) -> None:
    ctl, pidfile = str(tmp_path / "ctl"), tmp_path / "pid"
    started = subprocess.run(
        [sys.executable, "-m", "umlswitch", "-daemon", "-unix", ctl, "--pidfile", str(pidfile)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert started.returncode == 0, started.stderr
    pid = int(pidfile.read_text())
    try:
        second = subprocess.run(
            [sys.executable, "-m", "umlswitch", "-unix", ctl],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert second.returncode == 1
        assert f"has another server attached to it (pid {pid})" in second.stderr
    finally:
        stop_pid(pid)


def test_a_daemon_restarts_and_its_pidfile_follows(tmp_path: Path) -> None:
    ctl, pidfile = str(tmp_path / "ctl"), tmp_path / "pid"
    started = subprocess.run(
        [sys.executable, "-m", "umlswitch", "-daemon", "-unix", ctl, "--pidfile", str(pidfile)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert started.returncode == 0, started.stderr
    old = int(pidfile.read_text())
    result = ctl_cli(ctl, "restart")
    assert result.returncode == 0, result.stderr
    new = wait_for_new_pid(ctl, old)
    assert int(pidfile.read_text()) == new and not running(old)
    second = subprocess.run(
        [sys.executable, "-m", "umlswitch", "-unix", ctl],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert f"has another server attached to it (pid {new})" in second.stderr
    stop_pid(new)
    assert not pidfile.exists() and not os.path.exists(ctl)


def test_shutdown_says_what_it_did(switch: SwitchProcess) -> None:
    result = ctl_cli(switch.control_path, "shutdown")
    assert result.returncode == 0
    assert f"shutting down: pid {switch.process.pid}" in result.stdout
    assert switch.process.wait(10) == 0


def test_a_running_capture_goes_on_in_the_new_process(tmp_path: Path) -> None:
    from scapy.utils import rdpcap

    pcap = tmp_path / "lan.pcap"
    switch = SwitchProcess("--pcap", str(pcap), directory=str(tmp_path))
    ctl = switch.control_path
    try:
        with attach_sync(ctl, mac=MAC_A) as a, attach_sync(ctl, mac=MAC_B) as b:
            learn(a, b)
            for seq in range(1, 4):
                a.send(numbered(MAC_A, MAC_B, seq))
                b.receive_bytes()
            assert ctl_cli(ctl, "restart").returncode == 0
            for seq in range(4, 7):
                a.send(numbered(MAC_A, MAC_B, seq))
                b.receive_bytes()
            with connect(ctl + ".mgmt") as client:
                assert client.json("pcap/showinfo")["file"] == str(pcap)
    finally:
        stop_pid(serving_pid(ctl))
    assert switch.process.wait(5) == 0
    seqs = [
        struct.unpack("!Q", bytes(p)[14:22])[0]
        for p in rdpcap(str(pcap))
        if bytes(p)[12:14] == struct.pack("!H", ETHERTYPE) and not bytes(p)[0] & 1
    ]
    assert seqs == [1, 2, 3, 4, 5, 6]


# Upgrades that fail in each phase: a future umlswitch that reads only version 2 of the
# document (refuses the listeners), and one that fails to apply the final state (after the old
# process stopped reading: it must read again).
FUTURE_VERSION = """\
import umlswitch.restart.document as document
document.READS = frozenset({2})
"""
FAILS_TO_APPLY = """\
import umlswitch.restart.state as state
from umlswitch.restart.document import UnreadableState
def apply(*args, **kwargs):
    raise UnreadableState("cannot apply the state (a test's broken upgrade)")
state.apply = apply
"""


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        (FUTURE_VERSION, "state document version 1 written by umlswitch"),
        (FAILS_TO_APPLY, "cannot apply the state (a test's broken upgrade)"),
    ],
    ids=["unreadable-document", "fails-to-apply"],
)
def test_an_upgrade_that_cannot_take_over_leaves_the_old_switch_serving(
    tmp_path: Path, patch: str, reason: str
) -> None:
    script = tmp_path / "umlswitch"
    script.write_text(f"#!{sys.executable}\nfrom umlswitch.__main__ import run\nrun()\n")
    script.chmod(0o755)
    ctl = str(tmp_path / "ctl")
    with open(tmp_path / "log", "w") as log:
        process = subprocess.Popen(
            [str(script), "-unix", ctl], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(ctl + ".mgmt"):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.02)
        with attach_sync(ctl, mac=MAC_A) as a, attach_sync(ctl, mac=MAC_B) as b:
            learn(a, b)
            script.write_text(
                f"#!{sys.executable}\n{patch}from umlswitch.__main__ import run\nrun()\n"
            )
            a.send(numbered(MAC_A, MAC_B, 1))  # waits in the switch's queue if it is paused
            result = ctl_cli(ctl, "restart")
            assert result.returncode == 1
            assert reason in result.stderr
            assert f"this switch (pid {process.pid}) serves on" in result.stderr
            assert serving_pid(ctl) == process.pid
            assert receive_seq(b) == 1
            b.send(numbered(MAC_B, MAC_A, 2))
            assert receive_seq(a) == 2
    finally:
        process.terminate()
        assert process.wait(10) == 0
    assert not os.path.exists(ctl)


def test_every_kind_of_client_survives_a_restart(tmp_path: Path) -> None:
    """A v0 client on the shared data socket, a vde client with a pathname data socket, and a
    stream client keep their ports; the vde client's socket file stays, then goes at the stop."""
    data, stream = tmp_path / "data", tmp_path / "qemu.sock"
    switch = SwitchProcess(str(data), "--stream", f"unix:{stream}", directory=str(tmp_path))
    ctl = switch.control_path
    macs = ["02:00:00:00:02:01", "02:00:00:00:02:02", "02:00:00:00:02:03"]
    try:
        with (
            attach_sync(ctl, mac=macs[0], dialect="v0", data_path=str(data)) as v0,
            attach_sync(
                ctl, mac=macs[1], dialect="vde", address=str(tmp_path / "vde-client")
            ) as vde,
            attach_sync(str(stream), mac=macs[2], transport="stream") as qemu,
        ):
            ports = [v0, vde, qemu]
            deadline = time.monotonic() + 5  # a stream connection is attached once accepted
            while info(ctl)["ports"] < 3:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            learn(*ports)
            # the vde client's data socket, beside ctl as vde_switch names it: 002.N
            switch_side = [p for p in tmp_path.iterdir() if p.name.startswith("002.")]
            assert len(switch_side) == 1
            assert ctl_cli(ctl, "restart").returncode == 0
            wait_for_new_pid(ctl, switch.process.pid)
            assert switch_side[0].exists()
            seq = 10
            for sender, mac in zip(ports, macs, strict=True):
                for receiver, other in zip(ports, macs, strict=True):
                    if receiver is not sender:
                        seq += 1
                        sender.send(numbered(mac, other, seq))
                        assert receive_seq(receiver) == seq
    finally:
        stop_pid(serving_pid(ctl))
    assert switch.process.wait(5) == 0
    assert not switch_side[0].exists() and not os.path.exists(ctl) and not data.exists()
