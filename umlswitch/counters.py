"""Named counters: per-port traffic figures and a counter for every reason a frame is dropped.

Every drop in umlswitch has a name (as OVS's COVERAGE_DEFINE): the counters are exact, while the
log lines that go with them are rate-limited (see ``ratelog``).
"""

from __future__ import annotations

from collections import Counter

# Reasons a frame is dropped. Keep the names stable: they are shown to users.
RUNT = "runt"  # shorter than an ethernet header (14 bytes)
GIANT = "giant"  # longer than --max-frame
GROUP_SOURCE = "group_source"  # source MAC with the group bit set: never a valid sender
SAME_PORT = "same_port"  # destination was learned on the ingress port itself
UNKNOWN_SENDER = "unknown_sender"  # shared data socket: datagram from an unregistered address
EGRESS_FULL = "egress_full"  # egress backlog full, or frames still in it when the port left
EGRESS_ERROR = "egress_error"  # receiver vanished or refused (ECONNREFUSED, ENOENT, ...)
RECEIVE_ERROR = "receive_error"  # the OS reported an error while reading a port
WRONG_SOURCE = "wrong_source"  # ucast, vxlan peer list: datagram from an address not a peer's
NO_PEER = "no_peer"  # ucast with REMOTEHOST any: no peer has sent yet, nowhere to send to
OWN_ECHO = "own_echo"  # mcast, vxvde: our own frame looped back by the group (one per send)
VXLAN_SHORT = "vxlan_short"  # vxlan, vxvde: datagram shorter than the 8-byte VXLAN header
VXLAN_BAD_FLAGS = "vxlan_bad_flags"  # vxlan, vxvde: I flag clear or a reserved bit set
VXLAN_WRONG_VNI = "vxlan_wrong_vni"  # vxlan, vxvde: no segment of ours has the datagram's VNI
STREAM_OVERSIZE = "stream_oversize"  # stream: a length over --max-frame; connection dropped
STREAM_TRUNCATED = "stream_truncated"  # stream: the peer left in the middle of a frame
LINK_DOWN = "link_down"  # --stream-connect: sent to a link while it is not connected
STP_DISCARD = "stp_discard"  # --stp: arrived on a port the spanning tree does not forward
BAD_BPDU = "bad_bpdu"  # --stp: a frame to 01:80:c2:00:00:00 that is no BPDU we understand
STORM = "storm"  # --storm-limit: more flooded frames per second than the port's limit
VLAN_NOT_MEMBER = "vlan_not_member"  # VLANs on: tagged for a VLAN the ingress port is not in
VLAN_OVERSIZE = "vlan_oversize"  # VLANs on: the tag this egress port needs makes it > --max-frame
IMPAIR_LOSS_IN = "impair_loss_in"  # port/impair: lost on the way in (frames the port receives)
IMPAIR_LOSS_OUT = "impair_loss_out"  # port/impair: lost on the way out (frames sent to it)
IMPAIR_FULL_IN = "impair_full_in"  # port/impair: the delay/rate queue (in) was full
IMPAIR_FULL_OUT = "impair_full_out"  # port/impair: the delay/rate queue (out) was full

# Every drop reason above, for listings that show each one, zero or not (management, JSON).
DROP_REASONS = tuple(
    value for name, value in list(globals().items()) if name.isupper() and isinstance(value, str)
)

# Control-plane and table events (not frame drops).
BAD_REQUEST = "bad_request"
UNSUPPORTED_VERSION = "unsupported_version"
HANDSHAKE_TIMEOUT = "handshake_timeout"
ATTACH_FAILED = "attach_failed"
PEER_REFUSED = "peer_refused"  # the data socket a client named is not its own
PORT_LIMIT = "port_limit"  # --max-ports reached: a new client was refused
PENDING_LIMIT = "pending_limit"  # --max-pending handshakes under way: a connection was closed
MAC_EVICTED = "mac_evicted"
MAC_MOVE_HELD = "mac_move_held"
MAC_MOVED = "mac_moved"
MAC_EXPIRED = "mac_expired"
STP_FLUSHED = "stp_flushed"  # MACs forgotten because of a topology change
LINK_LOST = "link_lost"  # --stream-connect: a link's connection ended (it reconnects)
LINK_CONNECT_FAILED = "link_connect_failed"  # --stream-connect: an attempt to connect failed
SLIRP_HELPER_EXIT = "slirp_helper_exit"  # --slirp: the helper exited (a new one is started)
LOOP_SUSPECTED = "loop_suspected"  # STP off: own flooded frames came back on another port


class PortStats:
    """Traffic and drop figures of one port."""

    __slots__ = (
        "drops",
        "paused",
        "queue_high",
        "queued",
        "rx_bytes",
        "rx_frames",
        "stalls",
        "tx_bytes",
        "tx_frames",
    )

    def __init__(self) -> None:
        self.rx_frames = 0
        self.rx_bytes = 0
        self.tx_frames = 0
        self.tx_bytes = 0
        self.drops: Counter[str] = Counter()
        self.queued = 0  # frames in the port's egress backlog now
        self.queue_high = 0  # the most frames its backlog has held (high-water mark)
        self.paused = 0  # times its ingress waited for a receiver's backlog (back-pressure)
        self.stalls = 0  # times its backlog held a sender for STALL_TIMEOUT without draining

    def add(self, other: PortStats) -> None:
        """Add ``other``'s figures to these (totals of ports that have left)."""
        self.rx_frames += other.rx_frames
        self.rx_bytes += other.rx_bytes
        self.tx_frames += other.tx_frames
        self.tx_bytes += other.tx_bytes
        self.drops.update(other.drops)

    def reset(self) -> None:
        """Set every figure back to zero (management's ``port/resetcounter``); the backlog's
        high-water mark restarts from its depth now."""
        self.rx_frames = self.rx_bytes = self.tx_frames = self.tx_bytes = 0
        self.drops.clear()
        self.queue_high = self.queued
        self.paused = self.stalls = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "rx_frames": self.rx_frames,
            "rx_bytes": self.rx_bytes,
            "tx_frames": self.tx_frames,
            "tx_bytes": self.tx_bytes,
            "queued": self.queued,
            "queue_high": self.queue_high,
            "paused": self.paused,
            "stalls": self.stalls,
            "drops": dict(self.drops),
        }
