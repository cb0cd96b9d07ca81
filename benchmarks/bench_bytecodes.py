#!/usr/bin/env python3
"""Python bytecodes per forwarded frame: ``python3 benchmarks/bench_bytecodes.py [--ab TREE]``.

The one measurement of the hot path that a loaded machine cannot blur: ``sys.settrace`` with
``f_trace_opcodes`` counts every bytecode instruction Python executes (no timing, the same count
on every run) while the fabric forwards frames between two real ports.

**What is counted**: everything Python executes from the ingress hand-off into the fabric to
the port's kernel send, both included: for one frame ``Fabric.forward(ingress, frame)`` (the
frame a memoryview into a receive buffer, as a per-frame read hands it over; "single, receive"
counts ``Fabric.receive(ingress, buffer, size)`` instead, today's per-frame hand-off, which also
checks for a giant and slices the buffer); for a batch
``Fabric.forward_batch(ingress, batch)`` with a ``FrameBatch`` filled by a real ``recvmmsg``
(``BatchReceiver``). Inside: the fabric's admission, decision and egress, the ports'
``send_nowait``/``send_batch``, the ``sendmmsg`` preparation of ``vectorio.BatchSender``, up to the
C calls ``socket.send`` / ``sendmmsg``. Not counted: the receive (``recv_into``/``recvmmsg``),
the ingress loop around the hand-off, C code. The ports are ``ClientPort``s (the unix client
port, with the data plane's vector sender) on connected loopback UDP sockets with a large
receive buffer, drained between rounds, so every send is taken by the kernel (no backlog).

Cases, each between two ports whose MACs the switch has learned (known unicast), 64-byte frames:
the plain path (switch mode; hub, VLANs, guard, capture and impairment off), one frame and a
batch of ``--batch`` (32); and the same with VLANs on (both ports access ports of VLAN 10).
"single"/"batch" are the steady state (the decision kept from the frame before, as for every
frame but the first of a flow in each tick of the coarse clock); "decided" is the first frame
after a tick, when the fabric learns, looks up and decides anew (in a batch: the first frame;
the others reuse its decision).

``--ab TREE`` runs the benchmark again with ``TREE`` (a directory holding ``umlswitch/``) first
on the import path, in a subprocess, and prints both; each run prints the tree it imported.
Without it the tree is ``PYTHONPATH``'s if set, else this checkout.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import umlswitch  # noqa: E402
from umlswitch.fabric.fabric import Fabric  # noqa: E402
from umlswitch.fabric.vlan import Membership  # noqa: E402
from umlswitch.ports import vectorio  # noqa: E402
from umlswitch.ports.unix.clients import ClientPort  # noqa: E402
from umlswitch.ports.base import BATCH, ReadArea  # noqa: E402

MAC_A = bytes.fromhex("02000000000a")
MAC_B = bytes.fromhex("02000000000b")
SIZE = 64


def frame(dst: bytes, src: bytes) -> bytes:
    return dst + src + b"\x88\xb5" + bytes(SIZE - 14)


class Counter:
    """Counts opcodes executed below the caller, by code object."""

    def __init__(self) -> None:
        self.total = 0
        self.by_code: collections.Counter[str] = collections.Counter()

    def _global(self, frame: Any, event: str, arg: Any) -> Callable[..., Any]:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return self._local

    def _local(self, frame: Any, event: str, arg: Any) -> Callable[..., Any]:
        if event == "opcode":
            self.total += 1
            code = frame.f_code
            self.by_code[f"{Path(code.co_filename).name}:{code.co_name}"] += 1
        return self._local

    def run(self, call: Callable[..., object], *args: object) -> None:
        """Count ``call(*args)`` (the frames it runs, not this one's call of it)."""
        sys.settrace(self._global)
        try:
            call(*args)
        finally:
            sys.settrace(None)


class Link:
    """A switch-side socket and a guest-side socket, connected to each other over loopback."""

    def __init__(self) -> None:
        self.switch = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.guest = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for sock in (self.switch, self.guest):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        self.switch.connect(self.guest.getsockname())
        self.guest.connect(self.switch.getsockname())

    def drain(self, sock: socket.socket) -> int:
        got = 0
        while True:
            try:
                sock.recv(65536)
            except BlockingIOError:
                return got
            got += 1


def measure(batch_size: int, vlans: bool) -> dict[str, Any]:
    fabric = Fabric()
    links = [Link(), Link()]
    a, b = (ClientPort(i + 1, f"bench:{i + 1}", links[i].switch) for i in range(2))
    area = ReadArea(fabric.max_frame + 1, None, vectorio.BatchSender(BATCH))
    for port in (a, b):
        port.sources(fabric, area)  # as the data plane does: the ports get its vector sender
    membership = Membership(10) if vlans else Membership()
    fabric.attach(a, membership)
    fabric.attach(b, membership)
    fabric.tick(1.0)
    for port, src, link in ((a, MAC_A, links[1]), (b, MAC_B, links[0])):
        fabric.forward(port, frame(b"\xff" * 6, src))  # learned
        link.drain(link.guest)
    buffer = bytearray(frame(MAC_B, MAC_A))
    view = memoryview(buffer)
    big_view = memoryview(buffer + bytes(fabric.max_frame + 1 - len(buffer)))  # a read buffer
    receiver = vectorio.BatchReceiver(fabric.max_frame + 1, batch_size)

    def fill_batch() -> None:
        for _ in range(batch_size):
            links[0].guest.send(bytes(buffer))
        assert receiver.receive(links[0].switch.fileno()) == batch_size

    clock = [1.0]

    def tick() -> None:  # the coarse clock moves on: every decision is made anew
        clock[0] += 1.0
        fabric.tick(clock[0])

    def tick_and_fill() -> None:
        tick()
        fill_batch()

    results: dict[str, Any] = {}
    for name, prepare, call, arg, frames in (
        ("single", lambda: None, "forward", view, 1),
        ("single, receive", lambda: None, "receive", (big_view, len(buffer)), 1),
        ("batch", fill_batch, "forward_batch", receiver.batch, batch_size),
        ("single, decided", tick, "forward", view, 1),
        ("batch, decided", tick_and_fill, "forward_batch", receiver.batch, batch_size),
    ):
        counts = []
        for _ in range(4):  # the first rounds warm up; the last ones must agree
            prepare()
            counter = Counter()
            args = arg if isinstance(arg, tuple) else (arg,)
            counter.run(getattr(fabric, call), a, *args)
            delivered = links[1].drain(links[1].guest)
            assert delivered == frames, (name, delivered, frames)
            assert not b.backlog
            counts.append(counter)
        last = counts[-1]
        results[name] = {
            "total": last.total,
            "frames": frames,
            "per_frame": last.total / frames,
            "stable": counts[-2].total == last.total,
            "by_code": dict(last.by_code.most_common()),
        }
    for link in links:
        link.switch.close()
        link.guest.close()
    return results


def run(batch_size: int) -> dict[str, Any]:
    return {
        "tree": str(Path(umlswitch.__file__).resolve().parents[1]),
        "python": sys.version.split()[0],
        "plain": measure(batch_size, vlans=False),
        "vlan": measure(batch_size, vlans=True),
    }


def show(doc: dict[str, Any], detail: bool) -> None:
    print(f"tree {doc['tree']} (Python {doc['python']})")
    for path in ("plain", "vlan"):
        for name in doc[path]:
            r = doc[path][name]
            stable = "" if r["stable"] else "  (NOT STABLE between rounds)"
            print(
                f"  {path:5} {name:15} {r['per_frame']:7.1f} bytecodes/frame"
                f"  ({r['total']} for {r['frames']} frame(s)){stable}"
            )
            if detail:
                for code, count in r["by_code"].items():
                    print(f"        {count:6}  {code}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="frames per batch (default 32)")
    parser.add_argument("--ab", metavar="TREE", help="also run with TREE's umlswitch, to compare")
    parser.add_argument("--detail", action="store_true", help="count per function")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    doc = run(args.batch)
    if args.json:
        print(json.dumps(doc))
        return 0
    show(doc, args.detail)
    if args.ab:
        env = {**os.environ, "PYTHONPATH": args.ab}
        command = [sys.executable, __file__, "--json", "--batch", str(args.batch)]
        other = json.loads(subprocess.run(command, env=env, check=True, capture_output=True).stdout)
        show(other, args.detail)
        print("this tree / the other, per frame:")
        for path in ("plain", "vlan"):
            for name in doc[path]:
                mine, theirs = doc[path][name]["per_frame"], other[path][name]["per_frame"]
                print(f"  {path:5} {name:15} {mine:7.1f} / {theirs:7.1f} = {mine / theirs:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
