"""The handover's wire and document: bundles with descriptors, versions read or refused."""

from __future__ import annotations

import os
import socket
import sys
import threading

import pytest

from umlswitch import __version__
from umlswitch.restart import command, wire
from umlswitch.restart.document import VERSION, UnreadableState, check, envelope


def test_a_bundle_carries_a_large_document_and_many_descriptors() -> None:
    old, new = wire.channel_pair()
    pipes = [os.pipe() for _ in range(300)]  # more than one SCM_RIGHTS message holds
    try:
        table = [[f"{n:012x}", n % 7, 1.5] for n in range(20000)]  # several chunks
        doc = envelope("state", table=table)
        received: list[tuple[dict[str, object], list[int]]] = []
        reader = threading.Thread(target=lambda: received.append(wire.receive_bundle(new, 10)))
        reader.start()
        wire.send_bundle(old, doc, [r for r, _ in pipes])
        reader.join()
        ((got, fds),) = received
        assert got == doc and len(fds) == 300
        os.write(pipes[299][1], b"x")
        assert os.read(fds[299], 1) == b"x"  # the same pipe, in order
        assert not os.get_inheritable(fds[0])
        for fd in fds:
            os.close(fd)
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)
        old.close()
        new.close()


def test_a_vanished_peer_is_a_channel_error() -> None:
    old, new = wire.channel_pair()
    old.close()
    with pytest.raises(wire.ChannelError, match="closed the handover channel"):
        wire.receive_bundle(new, 1)
    new.close()


def test_silence_is_a_channel_error_after_the_timeout() -> None:
    old, new = wire.channel_pair()
    with pytest.raises(wire.ChannelError, match=r"within 0\.05 s"):
        wire.receive_bundle(new, 0.05)
    old.close()
    new.close()


def test_today_s_version_is_read() -> None:
    doc = envelope("state", ports=[])
    assert check(doc, "state") is doc
    assert doc["version"] == VERSION and doc["writer"] == __version__


def test_a_newer_version_is_refused_with_what_to_do() -> None:
    doc = {**envelope("state"), "version": VERSION + 1, "writer": "9.0"}
    with pytest.raises(UnreadableState) as caught:
        check(doc, "state")
    assert str(caught.value) == (
        f"state document version {VERSION + 1} written by umlswitch 9.0 cannot be read by "
        f"umlswitch {__version__} (it reads version 1); stop the switch and start it anew, "
        "or install a umlswitch that reads it"
    )


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"format": "other"}, "not a umlswitch handover document"),
        ({**envelope("ready")}, "expected a 'state' document, got 'ready'"),
        ({**envelope("failed", reason="no tap0 here")}, "no tap0 here"),
    ],
)
def test_other_documents_are_refused(doc: dict[str, object], message: str) -> None:
    with pytest.raises(UnreadableState, match=message):
        check(doc, "state")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/usr/bin/umlswitch", "-unix", "c"], ["/usr/bin/umlswitch", "-unix", "c"]),
        (["/x/umlswitch/__main__.py", "-hub"], [sys.executable, "-m", "umlswitch", "-hub"]),
        (["./bin/umlswitch"], [os.path.abspath("./bin/umlswitch")]),
    ],
)
def test_the_restart_runs_what_the_switch_was_started_as(
    argv: list[str], expected: list[str]
) -> None:
    command.remember(argv)
    assert command.command() == expected


def test_channel_ends() -> None:
    old, new = wire.channel_pair()
    assert old.type == socket.SOCK_SEQPACKET
    assert new.get_inheritable() and not old.get_inheritable()
    old.close()
    new.close()
