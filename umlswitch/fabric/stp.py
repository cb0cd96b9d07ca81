"""Spanning tree: Rapid Spanning Tree (802.1w) with 802.1D fallback, as a pure state machine.

No sockets and no clock: ``Bridge.receive(port, frame, now)`` and ``Bridge.tick(now)`` take the
time as a parameter and leave their effects in ``Bridge.take()``: BPDUs to send, ports whose
learned addresses must be flushed, and whether the set of forwarding ports changed. The daemon's
trio part (``umlswitch.fabric.guard``) calls them and applies the effects to the fabric.

Rules (after 802.1D-2004 clause 17, which holds 802.1w, and 802.1D-1998 clauses 8 and 9):

* **BPDUs** go to ``01:80:c2:00:00:00`` in an 802.3 frame with LLC ``42 42 03``: protocol id 0,
  version 0 (STP) or 2 (RSTP), type 0x00 configuration (35 bytes), 0x80 topology change
  notification (4 bytes) or 0x02 RST (36 bytes). Timers are in 1/256 s.
* **Priority vectors.** The root bridge is the lowest bridge id (2-byte priority + MAC). Each
  port's received vector (root, cost, designated bridge, designated port) plus the port's path
  cost competes for the root port; the bridge's own vector (itself, 0) wins when nothing is
  better. A port whose received vector is better than what it would send itself is an
  *alternate* port (a *backup* port when the better vector is the bridge's own, heard back from
  another of its ports through a hub); the others are *designated*.
* **States.** Alternate and backup ports discard. A root port forwards at once (RSTP) or after
  listening and learning, ``forward_delay`` each (802.1D). A designated port forwards when its
  neighbour agrees to its proposal (RSTP, one round trip), or else after the two forward delays.
  Edge ports (guests) forward at once; a BPDU arriving on an edge port makes it a normal port.
  A non-edge port that hears no BPDU within ``EDGE_DELAY`` while proposing becomes an edge port
  (802.1D-2004's automatic edge detection): a plain tap or UDP peer forwards after 3 s, not 30.
* **Sync.** A proposal arriving on the root port makes every designated non-edge port that its
  neighbour has not agreed to discard, then the root port answers with an agreement; those
  ports then propose in turn. Alternate and backup ports answer a proposal with an agreement.
* **Migration.** A port that hears a version-0 BPDU speaks 802.1D on that link (timers of the
  root, configuration and TCN BPDUs) until it hears RSTP again, at least ``MIGRATE_TIME`` later.
* **Topology change.** A non-edge port that starts forwarding, or a TC flag or TCN heard, starts
  a topology change: the addresses learned on every other non-edge port are flushed, BPDUs carry
  the TC flag for a while (RSTP: hello + 1 s; 802.1D: max age + forward delay), and on an 802.1D
  root port a TCN is repeated every hello until acknowledged (TCA).
* **Ageing of information.** Received information expires after three hellos (RSTP) or
  ``max_age - message_age`` (802.1D); the port then competes again with what is left.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

STP_GROUP = bytes.fromhex("0180c2000000")
LLC = b"\x42\x42\x03"
MIN_FRAME = 60  # BPDU frames are padded to the ethernet minimum (without FCS)

TYPE_CONFIG = 0x00
TYPE_TCN = 0x80
TYPE_RST = 0x02
VERSION_STP = 0
VERSION_RSTP = 2

# RST and configuration BPDU flags (802.1D-2004 9.3.3)
FLAG_TC = 0x01
FLAG_PROPOSAL = 0x02
ROLE_SHIFT = 2
ROLE_MASK = 0x0C
FLAG_LEARNING = 0x10
FLAG_FORWARDING = 0x20
FLAG_AGREEMENT = 0x40
FLAG_TCA = 0x80
# port role field values
BPDU_ROLE_UNKNOWN = 0
BPDU_ROLE_ALTERNATE = 1  # alternate or backup
BPDU_ROLE_ROOT = 2
BPDU_ROLE_DESIGNATED = 3

DEFAULT_BRIDGE_PRIORITY = 32768
DEFAULT_PORT_PRIORITY = 128
DEFAULT_PATH_COST = 100  # what the Linux bridge gives a tap (10 Mb/s in 802.1D-1998's table)
DEFAULT_HELLO = 2.0
DEFAULT_MAX_AGE = 20.0
DEFAULT_FORWARD_DELAY = 15.0
MIGRATE_TIME = 3.0
EDGE_DELAY = 3.0
MAX_PATH_COST = 200_000_000

_config = struct.Struct(">HBBB8sI8sHHHHH")  # 35 bytes: up to forward delay
_tcn = struct.Struct(">HBB")


class BpduError(ValueError):
    """A frame to the bridge group address that is not a BPDU we understand."""


@dataclass(frozen=True)
class Bpdu:
    """One BPDU; ``root`` and ``bridge`` are 8-byte bridge ids, times in seconds."""

    type: int
    version: int = VERSION_STP
    flags: int = 0
    root: bytes = bytes(8)
    root_cost: int = 0
    bridge: bytes = bytes(8)
    port: int = 0
    message_age: float = 0.0
    max_age: float = DEFAULT_MAX_AGE
    hello: float = DEFAULT_HELLO
    forward_delay: float = DEFAULT_FORWARD_DELAY

    @property
    def role(self) -> int:
        return (self.flags & ROLE_MASK) >> ROLE_SHIFT

    def vector(self) -> tuple[bytes, int, bytes, int]:
        return (self.root, self.root_cost, self.bridge, self.port)


def _time(value: float) -> int:
    return max(0, min(0xFFFF, round(value * 256)))


def encode_bpdu(bpdu: Bpdu, source: bytes) -> bytes:
    """The whole frame: destination, ``source``, 802.3 length, LLC, BPDU, padding."""
    if bpdu.type == TYPE_TCN:
        body = _tcn.pack(0, VERSION_STP, TYPE_TCN)
    else:
        body = _config.pack(
            0,
            bpdu.version,
            bpdu.type,
            bpdu.flags,
            bpdu.root,
            bpdu.root_cost,
            bpdu.bridge,
            bpdu.port,
            _time(bpdu.message_age),
            _time(bpdu.max_age),
            _time(bpdu.hello),
            _time(bpdu.forward_delay),
        )
        if bpdu.type == TYPE_RST:
            body += b"\x00"  # version 1 length
    payload = LLC + body
    frame = STP_GROUP + source + struct.pack(">H", len(payload)) + payload
    return frame.ljust(MIN_FRAME, b"\x00")


def decode_bpdu(frame: bytes | bytearray | memoryview) -> Bpdu:
    """Parse a frame to the bridge group address; raise BpduError for anything else."""
    frame = bytes(frame)
    if len(frame) < 14 + 3 + 4:
        raise BpduError(f"too short for a BPDU ({len(frame)} bytes)")
    (length,) = struct.unpack_from(">H", frame, 12)
    if length > 1500:
        raise BpduError(f"ethertype 0x{length:04x}, not an 802.3 length")
    if frame[14:17] != LLC:
        raise BpduError("not LLC 42 42 03")
    body = frame[17 : 14 + length] if length >= 3 else b""
    if len(body) < 4:
        raise BpduError("BPDU shorter than 4 bytes")
    protocol, version, kind = _tcn.unpack_from(body)
    if protocol != 0:
        raise BpduError(f"protocol id {protocol}, not 0")
    if kind == TYPE_TCN:
        return Bpdu(TYPE_TCN, version)
    if kind == TYPE_CONFIG and len(body) < 35:
        raise BpduError(f"configuration BPDU of {len(body)} bytes (35 needed)")
    if kind == TYPE_RST and (len(body) < 36 or version < VERSION_RSTP):
        raise BpduError(f"RST BPDU of {len(body)} bytes, version {version} (36, 2 needed)")
    if kind not in (TYPE_CONFIG, TYPE_RST):
        raise BpduError(f"BPDU type 0x{kind:02x}")
    fields = _config.unpack_from(body)
    flags = fields[3]
    if kind == TYPE_CONFIG:
        flags &= FLAG_TC | FLAG_TCA  # the other bits mean nothing in 802.1D
    return Bpdu(
        kind,
        version,
        flags,
        fields[4],
        fields[5],
        fields[6],
        fields[7],
        fields[8] / 256,
        fields[9] / 256,
        fields[10] / 256,
        fields[11] / 256,
    )


def bridge_id(priority: int, mac: bytes) -> bytes:
    return struct.pack(">H", priority) + mac


def format_bridge_id(bid: bytes) -> str:
    return f"{int.from_bytes(bid[:2], 'big')}." + ":".join(f"{b:02x}" for b in bid[2:])


class Role(enum.Enum):
    DISABLED = "disabled"
    ROOT = "root"
    DESIGNATED = "designated"
    ALTERNATE = "alternate"
    BACKUP = "backup"


class State(enum.Enum):
    DISCARDING = "discarding"
    LEARNING = "learning"
    FORWARDING = "forwarding"


Vector = tuple[bytes, int, bytes, int]


@dataclass
class StpPort:
    """One port's part in the tree."""

    number: int
    name: str
    priority: int = DEFAULT_PORT_PRIORITY
    cost: int = DEFAULT_PATH_COST
    edge: bool = False  # operational edge
    admin_edge: bool = False  # the edge setting given (set_edge); a stream link restores it
    role: Role = Role.DESIGNATED
    state: State = State.DISCARDING
    rstp: bool = True  # speaks RSTP on this link (False: fell back to 802.1D)
    info: Bpdu | None = None  # the designated information heard on this port
    info_expires: float = 0.0
    proposing: bool = False
    proposed: bool = False
    agreed: bool = False
    send_agreement: bool = False
    send_now: bool = False
    next_hello: float = 0.0
    fd_until: float | None = None  # next forward-delay transition
    edge_at: float | None = None  # when a silent proposing port becomes an edge port
    migrate_until: float = 0.0
    tc_until: float = 0.0  # send the TC flag until then
    tcn_pending: bool = False  # 802.1D root port: repeat a TCN until a TCA arrives
    tca_pending: bool = False  # 802.1D designated port: acknowledge a TCN
    heard: int = 0  # BPDUs received
    sent_vector: Vector | None = None

    @property
    def port_id(self) -> int:
        return ((self.priority >> 4) << 12) | (self.number & 0xFFF)


@dataclass
class Effects:
    """What the bridge asks of the switch since the last ``take``."""

    sends: list[tuple[int, bytes]] = field(default_factory=list)
    flush: set[int] = field(default_factory=set)  # ports whose learned addresses go
    changed: bool = False  # the forwarding or learning sets changed
    logs: list[str] = field(default_factory=list)


class Bridge:
    """The spanning tree of one switch. See the module docstring for the rules."""

    def __init__(
        self,
        mac: bytes,
        *,
        priority: int = DEFAULT_BRIDGE_PRIORITY,
        hello: float = DEFAULT_HELLO,
        max_age: float = DEFAULT_MAX_AGE,
        forward_delay: float = DEFAULT_FORWARD_DELAY,
        port_priority: int = DEFAULT_PORT_PRIORITY,
        path_cost: int = DEFAULT_PATH_COST,
    ) -> None:
        self.mac = mac
        self.priority = priority
        self.hello = hello
        self.max_age = max_age
        self.forward_delay = forward_delay
        self.port_priority = port_priority  # defaults for new ports
        self.path_cost = path_cost
        self.ports: dict[int, StpPort] = {}
        self.root: bytes = self.id
        self.root_cost = 0
        self.root_port: int | None = None
        self.times = (0.0, max_age, hello, forward_delay)  # message age, max age, hello, fwd
        self.topology_changes = 0
        self.last_topology_change: float | None = None
        self.forwarding: frozenset[int] = frozenset()
        self.learning: frozenset[int] = frozenset()  # learning or forwarding
        self.effects = Effects()

    @property
    def id(self) -> bytes:
        return bridge_id(self.priority, self.mac)

    @property
    def is_root(self) -> bool:
        return self.root_port is None

    # --- configuration ---------------------------------------------------------------------

    def add_port(self, number: int, name: str, *, edge: bool, now: float) -> None:
        port = StpPort(
            number,
            name,
            priority=self.port_priority,
            cost=self.path_cost,
            edge=edge,
            admin_edge=edge,
        )
        port.send_now = True
        port.edge_at = None if edge else now + EDGE_DELAY
        self.ports[number] = port
        self._update(now)

    def remove_port(self, number: int, now: float) -> None:
        if self.ports.pop(number, None) is not None:
            self._update(now)

    def set_priority(self, priority: int, now: float) -> None:
        self.priority = priority
        for port in self.ports.values():
            port.send_now = True
        self._update(now)

    def set_port(
        self, number: int, now: float, *, priority: int | None = None, cost: int | None = None
    ) -> None:
        port = self.ports[number]
        if priority is not None:
            port.priority = priority
        if cost is not None:
            port.cost = cost
        port.send_now = True
        self._update(now)

    def set_edge(self, number: int, edge: bool, now: float) -> None:
        port = self.ports[number]
        port.admin_edge = port.edge = edge
        port.edge_at = None
        port.send_now = True
        self._update(now)

    def take(self) -> Effects:
        effects, self.effects = self.effects, Effects()
        return effects

    # --- input -----------------------------------------------------------------------------

    def receive(self, number: int, frame: bytes | bytearray | memoryview, now: float) -> None:
        """A frame to the bridge group address arrived on port ``number``."""
        port = self.ports.get(number)
        if port is None:
            return
        bpdu = decode_bpdu(frame)  # BpduError: the caller counts and drops it
        port.heard += 1
        port.edge_at = None
        if port.edge:
            port.edge = False
            self._log(f"port {number} ({port.name}): BPDU on an edge port; now a normal port")
        if bpdu.version < VERSION_RSTP or bpdu.type != TYPE_RST:
            if port.rstp:
                port.rstp = False
                port.migrate_until = now + MIGRATE_TIME
                port.proposing = port.agreed = False
                if port.state is not State.FORWARDING:
                    port.fd_until = None
                self._log(
                    f"port {number} ({port.name}): the neighbour speaks 802.1D (STP); "
                    "using 802.1D on this link"
                )
        elif not port.rstp and now >= port.migrate_until:
            port.rstp = True
            port.migrate_until = now + MIGRATE_TIME
            self._log(f"port {number} ({port.name}): the neighbour speaks RSTP again")
        if bpdu.type == TYPE_TCN:
            if port.role is Role.DESIGNATED:
                port.tca_pending = port.send_now = True
                self._topology_change(port, now, "TCN received")
            self._update(now)
            return
        if bpdu.message_age >= bpdu.max_age and bpdu.type == TYPE_CONFIG:
            return
        designated_bpdu = bpdu.type == TYPE_CONFIG or bpdu.role == BPDU_ROLE_DESIGNATED
        if designated_bpdu:
            mine = self._designated_vector(port)
            same_sender = port.info is not None and port.info.vector()[2:] == bpdu.vector()[2:]
            if bpdu.vector() < mine or same_sender:
                if port.info is None or port.info.vector() != bpdu.vector():
                    port.agreed = False
                port.info = bpdu
                lifetime = 3 * bpdu.hello if port.rstp else bpdu.max_age - bpdu.message_age
                port.info_expires = now + max(lifetime, 1.0)
                if bpdu.flags & FLAG_PROPOSAL:
                    port.proposed = True
            else:
                port.send_now = True  # worse information: tell it ours
        elif (
            bpdu.flags & FLAG_AGREEMENT and port.role is Role.DESIGNATED and bpdu.root == self.root
        ):
            port.agreed = True
        if bpdu.flags & FLAG_TCA and port.role is Role.ROOT:
            port.tcn_pending = False
        if bpdu.flags & FLAG_TC and port.role in (Role.ROOT, Role.DESIGNATED):
            self._topology_change(port, now, "TC received", received=True)
        self._update(now)

    def tick(self, now: float) -> None:
        """Advance the timers: expire information, forward delays, hellos."""
        for port in self.ports.values():
            if port.info is not None and now >= port.info_expires:
                self._log(f"port {port.number} ({port.name}): the neighbour's information aged out")
                port.info = None
        self._update(now, timers=True)

    # --- the machinery ---------------------------------------------------------------------

    def _log(self, message: str) -> None:
        self.effects.logs.append(message)

    def _designated_vector(self, port: StpPort) -> Vector:
        return (self.root, self.root_cost, self.id, port.port_id)

    def _select_roles(self) -> None:
        own = self.id
        best: tuple[bytes, int, bytes, int, int] = (own, 0, own, 0, 0)
        root_port: StpPort | None = None
        for port in self.ports.values():
            info = port.info
            if info is None or port.edge or info.bridge[2:] == self.mac:
                continue
            candidate = (
                info.root,
                info.root_cost + port.cost,
                info.bridge,
                info.port,
                port.port_id,
            )
            if candidate < best:
                best, root_port = candidate, port
        old_root = self.root
        self.root, self.root_cost = best[0], best[1]
        if root_port is None:
            self.root_port = None
            self.times = (0.0, self.max_age, self.hello, self.forward_delay)
        else:
            info = root_port.info
            assert info is not None
            self.root_port = root_port.number
            self.times = (info.message_age + 1, info.max_age, info.hello, info.forward_delay)
        if self.root != old_root:
            self._log(
                f"root bridge {format_bridge_id(self.root)}"
                + (" (this switch)" if root_port is None else f" via port {root_port.number}")
                + f", cost {self.root_cost}"
            )
        for port in self.ports.values():
            if port is root_port:
                role = Role.ROOT
            elif port.edge or port.info is None:
                role = Role.DESIGNATED
            elif port.info.vector() < self._designated_vector(port):
                role = Role.BACKUP if port.info.bridge[2:] == self.mac else Role.ALTERNATE
            else:
                role = Role.DESIGNATED
            if role is not port.role:
                port.role = role
                port.send_now = True
                port.proposing = False
                if port.state is not State.FORWARDING:
                    port.fd_until = None
            vector = self._designated_vector(port)
            if port.sent_vector != vector:
                port.sent_vector = vector
                port.send_now = True
                if role is Role.DESIGNATED:
                    port.agreed = False

    def _set_state(self, port: StpPort, state: State, now: float) -> None:
        if state is port.state:
            return
        old = port.state
        port.state = state
        self.effects.changed = True
        if state is State.DISCARDING and old is not State.DISCARDING:
            self.effects.flush.add(port.number)
        if state is State.FORWARDING and not port.edge:
            self._topology_change(port, now, "port forwarding")

    def _topology_change(
        self, origin: StpPort, now: float, why: str, *, received: bool = False
    ) -> None:
        if origin.edge:
            return
        window = 2 * self.times[2] + 1  # BPDUs of one change arrive a hello apart
        last = self.last_topology_change
        ongoing = last is not None and now - last < window
        self.last_topology_change = now
        if not ongoing:
            self.topology_changes += 1
        flushed = [p.number for p in self.ports.values() if p is not origin and not p.edge]
        self.effects.flush.update(flushed)
        if not ongoing:
            self._log(
                f"topology change ({why} on port {origin.number} ({origin.name})): "
                "flushing the addresses learned on port(s) "
                + (", ".join(map(str, flushed)) or "none")
            )
        _, max_age, hello, fwd = self.times
        for port in self.ports.values():
            if port.edge or (received and port is origin):
                continue
            if port.role not in (Role.DESIGNATED, Role.ROOT) or port.state is not State.FORWARDING:
                continue
            # Only a change that starts signalling sends at once (as tcWhile's start does): a
            # TC heard again while it is signalled must not echo between bridges.
            if port.rstp or (port.role is Role.DESIGNATED and self.is_root):
                if now >= port.tc_until:
                    port.tc_until = now + (hello + 1 if port.rstp else max_age + fwd)
                    port.send_now = True
            elif port.role is Role.ROOT and not port.tcn_pending:
                port.tcn_pending = port.send_now = True
        if received and not origin.rstp and origin.role is Role.ROOT and self.is_root is False:
            # 802.1D: a TC flag from the root is relayed on our designated ports while it lasts
            for port in self.ports.values():
                if port.role is Role.DESIGNATED and not port.rstp and not port.edge:
                    port.tc_until = max(port.tc_until, now + hello + 0.5)

    def _update(self, now: float, *, timers: bool = False) -> None:
        self._select_roles()
        _, _, _, fwd = self.times
        root = self.ports.get(self.root_port) if self.root_port is not None else None
        if root is not None and root.proposed:
            root.proposed = False
            if root.rstp:
                for port in self.ports.values():
                    if (
                        port.role is Role.DESIGNATED
                        and not port.edge
                        and not port.agreed
                        and port.state is not State.DISCARDING
                    ):
                        port.fd_until = None
                        self._set_state(port, State.DISCARDING, now)
                root.send_agreement = root.send_now = True
        for port in self.ports.values():
            role = port.role
            if role in (Role.ALTERNATE, Role.BACKUP, Role.DISABLED):
                self._set_state(port, State.DISCARDING, now)
                port.fd_until = None
                if port.proposed:
                    port.proposed = False
                    if port.rstp:
                        port.send_agreement = port.send_now = True
                continue
            port.proposed = False
            if port.state is State.FORWARDING:
                continue
            if role is Role.DESIGNATED and port.edge:
                self._set_state(port, State.FORWARDING, now)
                continue
            if port.rstp and (role is Role.ROOT or port.agreed):
                self._set_state(port, State.FORWARDING, now)
                continue
            if role is Role.DESIGNATED and port.rstp:
                if not port.proposing:
                    port.proposing = port.send_now = True
                if port.edge_at is not None and now >= port.edge_at and port.heard == 0:
                    port.edge = True
                    port.edge_at = None
                    self._log(
                        f"port {port.number} ({port.name}): no BPDU heard in {EDGE_DELAY:g} s; "
                        "an edge port now"
                    )
                    self._set_state(port, State.FORWARDING, now)
                    continue
            if port.fd_until is None:
                port.fd_until = now + fwd
            elif now >= port.fd_until:
                if port.state is State.DISCARDING:
                    self._set_state(port, State.LEARNING, now)
                    port.fd_until = now + fwd
                else:
                    self._set_state(port, State.FORWARDING, now)
                    port.fd_until = None
        forwarding = frozenset(p.number for p in self.ports.values() if p.state is State.FORWARDING)
        learning = forwarding | {p.number for p in self.ports.values() if p.state is State.LEARNING}
        if forwarding != self.forwarding or learning != self.learning:
            self.forwarding, self.learning = forwarding, frozenset(learning)
            self.effects.changed = True
        self._transmit(now, timers)

    def _transmit(self, now: float, timers: bool) -> None:
        message_age, max_age, hello, fwd = self.times
        for port in self.ports.values():
            due = timers and now >= port.next_hello
            send = port.send_now
            port.send_now = False
            if port.role is Role.DESIGNATED:
                if not (send or due):
                    continue
            elif port.role is Role.ROOT and not port.rstp:
                if port.tcn_pending and (send or due):
                    self._send(port, Bpdu(TYPE_TCN), now)
                continue
            elif not (port.send_agreement and send):
                continue
            flags = 0
            if now < port.tc_until:
                flags |= FLAG_TC
            if port.rstp:
                role = {
                    Role.ROOT: BPDU_ROLE_ROOT,
                    Role.DESIGNATED: BPDU_ROLE_DESIGNATED,
                }.get(port.role, BPDU_ROLE_ALTERNATE)
                flags |= role << ROLE_SHIFT
                if port.state is not State.DISCARDING:
                    flags |= FLAG_LEARNING
                if port.state is State.FORWARDING:
                    flags |= FLAG_FORWARDING
                if port.proposing and port.state is not State.FORWARDING:
                    flags |= FLAG_PROPOSAL
                if port.send_agreement:
                    flags |= FLAG_AGREEMENT
                kind, version = TYPE_RST, VERSION_RSTP
            else:
                if port.tca_pending:
                    flags |= FLAG_TCA
                    port.tca_pending = False
                kind, version = TYPE_CONFIG, VERSION_STP
            port.send_agreement = False
            bpdu = Bpdu(
                kind,
                version,
                flags,
                self.root,
                self.root_cost,
                self.id,
                port.port_id,
                message_age,
                max_age,
                self.hello if self.is_root else hello,
                fwd,
            )
            self._send(port, bpdu, now)

    def _send(self, port: StpPort, bpdu: Bpdu, now: float) -> None:
        self.effects.sends.append((port.number, encode_bpdu(bpdu, self.mac)))
        port.next_hello = now + (self.hello if self.is_root else self.times[2])
