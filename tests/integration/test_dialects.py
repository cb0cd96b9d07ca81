"""Clients of every control dialect exchange frames through the real daemon."""

from __future__ import annotations

import errno
import socket

import pytest

from tests.integration.frames import BROADCAST, frame, mac
from umlswitch.ports.unix import control
from umlswitch.testing import attach_sync, guest_address

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("dialect", ["v1", "v3", "vde"])
def test_each_dialect_exchanges_frames(start_switch, ctl, dialect):
    switch = start_switch()
    with attach_sync(ctl, dialect=dialect) as a, attach_sync(ctl) as b:
        switch.wait_for_log("port 2 attached")
        a.send(frame(BROADCAST, mac(1)))
        assert b.receive_bytes() == frame(BROADCAST, mac(1))
        b.send(frame(mac(1), mac(2)))
        assert a.receive_bytes() == frame(mac(1), mac(2))
    expected = {"v1": "v1", "v3": "v3-uml", "vde": "v3-vde"}[dialect]
    assert f"port 1 attached: {expected} client" in switch.log


def test_vde_description_and_requested_port_are_logged(start_switch, ctl):
    switch = start_switch()
    description = "qemu user=root pid=1"
    with attach_sync(ctl, dialect="vde", requested_port=7, description=description):
        switch.wait_for_log("port 7 attached")
    assert "description='qemu user=root pid=1'" in switch.log


def test_v0_client_on_the_shared_data_socket(start_switch, ctl, tmp_path):
    data = str(tmp_path / "data")
    switch = start_switch(data)
    with attach_sync(ctl, dialect="v0", data_path=data) as old, attach_sync(ctl) as new:
        switch.wait_for_log("port 2 attached")
        old.send(frame(BROADCAST, mac(1)))
        assert new.receive_bytes() == frame(BROADCAST, mac(1))
        new.send(frame(mac(1), mac(2)))
        assert old.receive_bytes() == frame(mac(1), mac(2))


def test_compat_v0_flag_uses_its_default_data_path(start_switch):
    switch = start_switch("-compat-v0")
    try:
        assert "data socket '/tmp/uml.data'" in switch.log
    finally:
        switch.stop()


def test_unregistered_sender_on_shared_socket_is_dropped_not_flooded(start_switch, ctl, tmp_path):
    data = str(tmp_path / "data")
    switch = start_switch(data)
    with (
        attach_sync(ctl, mac=mac(1)) as victim,
        attach_sync(ctl, mac=mac(2), dialect="v0", data_path=data) as registered,
    ):
        switch.wait_for_log("port 2 attached")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as intruder:
            intruder.bind(guest_address())
            intruder.sendto(frame(BROADCAST, mac(66)), data)
        # the registered client's fence reaches the shared socket after the intruder's frame
        assert registered.fence(victim) == [[]]
        switch.wait_for_log("unregistered sender")


def test_nothing_reaches_the_switch_socket_of_another_client(start_switch, ctl):
    """A port's data socket is connected to its client: datagrams from anyone else are refused."""
    switch = start_switch()
    with attach_sync(ctl) as a, attach_sync(ctl) as b:
        switch.wait_for_log("port 2 attached")
        refused = None
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as intruder:
            intruder.bind(guest_address())
            try:
                intruder.sendto(frame(BROADCAST, mac(66)), a.switch_address)
            except OSError as exc:
                refused = exc.errno
        # a's fence goes through the socket the intruder wrote to, after whatever it wrote
        assert a.fence(b) == [[]]
        assert refused == errno.EPERM  # by the kernel: the switch never saw the datagram


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
    start_switch, ctl, request_bytes, log_text
):
    switch = start_switch()
    bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bad.settimeout(5)
    bad.connect(ctl)
    bad.sendall(request_bytes)
    assert bad.recv(200) == b""  # closed by the switch, no reply
    bad.close()
    switch.wait_for_log(log_text)
    with attach_sync(ctl) as a, attach_sync(ctl) as b:
        a.send(frame(BROADCAST, mac(1)))
        assert b.receive_bytes() == frame(BROADCAST, mac(1))


def test_giant_and_runt_frames_are_dropped_whole(start_switch, ctl):
    switch = start_switch("--max-frame", "1518")
    with attach_sync(ctl) as a, attach_sync(ctl) as b:
        switch.wait_for_log("port 2 attached")
        a.send(frame(BROADCAST, mac(1), b"x" * 9000))
        a.send(b"\x01" * 10)
        a.send(frame(BROADCAST, mac(1), b"y" * 1504))  # 1518 bytes: the largest allowed
        # the first frame b gets: the giant was neither truncated and forwarded nor forwarded
        assert b.receive_bytes() == frame(BROADCAST, mac(1), b"y" * 1504)
        switch.wait_for_log("dropped giant frame of 9014 bytes")
        switch.wait_for_log("dropped runt frame of 10 bytes")


def test_jumbo_frames_pass_with_a_larger_max_frame(start_switch, ctl):
    start_switch("--max-frame", "9018")
    with attach_sync(ctl) as a, attach_sync(ctl) as b:
        jumbo = frame(BROADCAST, mac(1), b"j" * 9000)
        a.send(jumbo)
        assert b.receive_bytes() == jumbo


def test_hub_mode_floods_known_unicast(start_switch, ctl):
    """``-hub`` on the command line reaches the running switch (the rule: unit/test_fabric.py)."""
    switch = start_switch("-hub")
    assert "hub mode" in switch.log
    with (
        attach_sync(ctl, mac=mac(1)) as a,
        attach_sync(ctl, mac=mac(2)) as b,
        attach_sync(ctl, mac=mac(3)) as c,
    ):
        a.send(frame(BROADCAST, mac(1)))
        b.send(frame(BROADCAST, mac(2)))
        assert b.receive_bytes() == frame(BROADCAST, mac(1))
        assert a.receive_bytes() == frame(BROADCAST, mac(2))
        both = {c.receive_bytes(), c.receive_bytes()}  # from two ports: in either order
        assert both == {frame(BROADCAST, mac(1)), frame(BROADCAST, mac(2))}
        a.send(frame(mac(2), mac(1)))  # mac(2) is known, behind b: a hub floods it all the same
        assert b.receive_bytes() == frame(mac(2), mac(1))
        assert c.receive_bytes() == frame(mac(2), mac(1))


def test_switch_mode_sends_known_unicast_to_one_port(start_switch, ctl):
    start_switch()
    with (
        attach_sync(ctl, mac=mac(1)) as a,
        attach_sync(ctl, mac=mac(2)) as b,
        attach_sync(ctl, mac=mac(3)) as c,
    ):
        a.send(frame(BROADCAST, mac(1)))
        b.send(frame(BROADCAST, mac(2)))
        assert b.receive_bytes() == frame(BROADCAST, mac(1))
        assert a.receive_bytes() == frame(BROADCAST, mac(2))  # mac(2) is learned behind b
        both = {c.receive_bytes(), c.receive_bytes()}
        assert both == {frame(BROADCAST, mac(1)), frame(BROADCAST, mac(2))}
        a.send(frame(mac(2), mac(1)))
        assert b.receive_bytes() == frame(mac(2), mac(1))
        assert a.fence(b, c) == [[], []]  # c got nothing of it, b nothing more


def test_detach_flushes_macs_so_a_new_client_is_not_misdelivered(start_switch, ctl):
    switch = start_switch()
    with attach_sync(ctl, mac=mac(1)) as a, attach_sync(ctl, mac=mac(3)) as c:
        b = attach_sync(ctl, mac=mac(2))
        b.send(frame(BROADCAST, mac(2)))
        assert a.receive_bytes() == frame(BROADCAST, mac(2))
        assert c.receive_bytes() == frame(BROADCAST, mac(2))
        b.close()
        switch.wait_for_log("port 3 detached (disconnect); forgot 1 MAC(s)")
        # mac(2) is unknown again, so a frame to it floods instead of going to a dead port
        a.send(frame(mac(2), mac(1)))
        assert c.receive_bytes() == frame(mac(2), mac(1))


def test_bytes_after_the_handshake_detach_the_port(start_switch, ctl):
    switch = start_switch()
    with attach_sync(ctl) as a:
        switch.wait_for_log("port 1 attached")
        a.ctl.sendall(b"hello")
        switch.wait_for_log("port 1 detached (bad request")
        assert a.ctl.recv(10) == b""
