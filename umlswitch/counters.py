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
EGRESS_FULL = "egress_full"  # receiver's queue full (EAGAIN): dropped, never waited for
EGRESS_ERROR = "egress_error"  # receiver vanished or refused (ECONNREFUSED, ENOENT, ...)
RECEIVE_ERROR = "receive_error"  # the OS reported an error while reading a port

# Control-plane and table events (not frame drops).
BAD_REQUEST = "bad_request"
UNSUPPORTED_VERSION = "unsupported_version"
HANDSHAKE_TIMEOUT = "handshake_timeout"
ATTACH_FAILED = "attach_failed"
MAC_EVICTED = "mac_evicted"
MAC_MOVE_HELD = "mac_move_held"
MAC_MOVED = "mac_moved"
MAC_EXPIRED = "mac_expired"


class PortStats:
    """Traffic and drop figures of one port."""

    __slots__ = ("drops", "rx_bytes", "rx_frames", "tx_bytes", "tx_frames")

    def __init__(self) -> None:
        self.rx_frames = 0
        self.rx_bytes = 0
        self.tx_frames = 0
        self.tx_bytes = 0
        self.drops: Counter[str] = Counter()

    def as_dict(self) -> dict[str, object]:
        return {
            "rx_frames": self.rx_frames,
            "rx_bytes": self.rx_bytes,
            "tx_frames": self.tx_frames,
            "tx_bytes": self.tx_bytes,
            "drops": dict(self.drops),
        }
