"""Clients of every control dialect exchange frames through the real daemon."""

from __future__ import annotations

import socket

import pytest

from tests.integration.client import Client, abstract_address, frame, mac
from umlswitch.ports.unix import control

pytestmark = pytest.mark.integration

BROADCAST = b"\xff" * 6


@pytest.mark.parametrize("dialect", ["v1", "v3", "vde"])
def test_each_dialect_exchanges_frames(start_daemon, ctl, dialect):
    daemon = start_daemon("-unix", ctl)
    with Client(ctl, dialect=dialect) as a, Client(ctl, dialect="v3") as b:
        daemon.wait_for("port 2 attached")
        a.send(frame(BROADCAST, mac(1)))
        assert b.recv() == frame(BROADCAST, mac(1))
        b.send(frame(mac(1), mac(2)))
        assert a.recv() == frame(mac(1), mac(2))
    expected = {"v1": "v1", "v3": "v3-uml", "vde": "v3-vde"}[dialect]
    assert f"port 1 attached: {expected} client" in daemon.log


def test_vde_description_and_requested_port_are_logged(start_daemon, ctl):
    daemon = start_daemon("-unix", ctl)
    with Client(ctl, dialect="vde", requested_port=7, description="qemu user=root pid=1"):
        daemon.wait_for("port 7 attached")
    assert "description='qemu user=root pid=1'" in daemon.log


def test_v0_client_on_the_shared_data_socket(start_daemon, tmp_path):
    ctl, data = str(tmp_path / "ctl"), str(tmp_path / "data")
    daemon = start_daemon("-unix", ctl, data)
    with Client(ctl, dialect="v0", data_path=data) as old, Client(ctl) as new:
        daemon.wait_for("port 2 attached")
        old.send(frame(BROADCAST, mac(1)))
        assert new.recv() == frame(BROADCAST, mac(1))
        new.send(frame(mac(1), mac(2)))
        assert old.recv() == frame(mac(1), mac(2))


def test_compat_v0_flag_uses_its_default_data_path(start_daemon, ctl):
    daemon = start_daemon("-unix", ctl, "-compat-v0")
    try:
        assert "data socket '/tmp/uml.data'" in daemon.log
    finally:
        daemon.stop()


def test_unregistered_sender_on_shared_socket_is_dropped_not_flooded(start_daemon, tmp_path):
    ctl, data = str(tmp_path / "ctl"), str(tmp_path / "data")
    daemon = start_daemon("-unix", ctl, data)
    with Client(ctl) as victim:
        daemon.wait_for("port 1 attached")
        intruder = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        intruder.bind(abstract_address())
        intruder.sendto(frame(BROADCAST, mac(66)), data)
        daemon.wait_for("unregistered sender")
        with pytest.raises(TimeoutError):
            victim.recv(0.5)
        intruder.close()


def test_nothing_reaches_the_switch_socket_of_another_client(start_daemon, ctl):
    """A port's data socket is connected to its client: datagrams from anyone else are refused."""
    daemon = start_daemon("-unix", ctl)
    with Client(ctl) as a, Client(ctl) as b:
        daemon.wait_for("port 2 attached")
        intruder = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        intruder.bind(abstract_address())
        with pytest.raises(OSError):
            intruder.sendto(frame(BROADCAST, mac(66)), a.switch_address)
        intruder.close()
        with pytest.raises(TimeoutError):
            b.recv(0.3)


@pytest.mark.parametrize(
    "request_bytes, log_text",
    [
        (control.MAGIC_BYTES + (2).to_bytes(4, "little") + b"\0" * 116, "version 2"),
        (control.MAGIC_BYTES + (99).to_bytes(4, "little") + b"\0" * 116, "version 99"),
        (b"\x07" * 120, "not a v0 request"),
    ],
    ids=["v2", "v99", "garbage"],
)
def test_bad_requests_are_refused_and_the_switch_keeps_serving(
    start_daemon, ctl, request_bytes, log_text
):
    daemon = start_daemon("-unix", ctl)
    bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bad.settimeout(5)
    bad.connect(ctl)
    bad.sendall(request_bytes)
    assert bad.recv(200) == b""  # closed by the switch, no reply
    bad.close()
    daemon.wait_for(log_text)
    with Client(ctl) as a, Client(ctl) as b:
        a.send(frame(BROADCAST, mac(1)))
        assert b.recv() == frame(BROADCAST, mac(1))


def test_giant_and_runt_frames_are_dropped_whole(start_daemon, ctl):
    daemon = start_daemon("-unix", ctl, "--max-frame", "1518")
    with Client(ctl) as a, Client(ctl) as b:
        daemon.wait_for("port 2 attached")
        a.send(frame(BROADCAST, mac(1), b"x" * 9000))
        a.send(b"\x01" * 10)
        a.send(frame(BROADCAST, mac(1), b"y" * 1504))  # 1518 bytes: the largest allowed
        assert len(b.recv()) == 1518  # the giant was not truncated and forwarded
        daemon.wait_for("dropped giant frame of 9014 bytes")
        daemon.wait_for("dropped runt frame of 10 bytes")


def test_jumbo_frames_pass_with_a_larger_max_frame(start_daemon, ctl):
    start_daemon("-unix", ctl, "--max-frame", "9018")
    with Client(ctl) as a, Client(ctl) as b:
        jumbo = frame(BROADCAST, mac(1), b"j" * 9000)
        a.send(jumbo)
        assert b.recv() == jumbo


def test_hub_mode_floods_known_unicast(start_daemon, ctl):
    daemon = start_daemon("-unix", ctl, "-hub")
    assert "hub mode" in daemon.log
    with Client(ctl) as a, Client(ctl) as b, Client(ctl) as c:
        a.send(frame(BROADCAST, mac(1)))
        b.send(frame(BROADCAST, mac(2)))
        assert b.recv_all() and c.recv_all()
        a.recv_all()
        a.send(frame(mac(2), mac(1)))
        assert b.recv() == frame(mac(2), mac(1))
        assert c.recv() == frame(mac(2), mac(1))


def test_switch_mode_sends_known_unicast_to_one_port(start_daemon, ctl):
    start_daemon("-unix", ctl)
    with Client(ctl) as a, Client(ctl) as b, Client(ctl) as c:
        a.send(frame(BROADCAST, mac(1)))
        b.send(frame(BROADCAST, mac(2)))
        for client in (a, b, c):
            client.recv_all()
        a.send(frame(mac(2), mac(1)))
        assert b.recv() == frame(mac(2), mac(1))
        assert c.recv_all() == []


def test_detach_flushes_macs_so_a_new_client_is_not_misdelivered(start_daemon, ctl):
    daemon = start_daemon("-unix", ctl)
    with Client(ctl) as a, Client(ctl) as c:
        b = Client(ctl)
        b.send(frame(BROADCAST, mac(2)))
        a.recv_all()
        c.recv_all()
        b.close()
        daemon.wait_for("port 3 detached (disconnect); forgot 1 MAC(s)")
        # mac(2) is unknown again, so a frame to it floods instead of going to a dead port
        a.send(frame(mac(2), mac(1)))
        assert c.recv() == frame(mac(2), mac(1))


def test_bytes_after_the_handshake_detach_the_port(start_daemon, ctl):
    daemon = start_daemon("-unix", ctl)
    with Client(ctl) as a:
        daemon.wait_for("port 1 attached")
        a.ctl.sendall(b"hello")
        daemon.wait_for("port 1 detached (bad request")
        assert a.ctl.recv(10) == b""
