"""Network impairment of one direction of one port, as Linux netem does it: pure, no clock reads.

The rules, per frame, in this order (``ImpairModel.decide``):

* **Duplication** (``duplicate`` %): the frame goes twice. Each copy is a frame of its own on
  the impaired link: it may be lost, corrupted, delayed like any other.
* **Loss** (``loss`` %, ``correlation`` %): each copy is dropped with probability ``loss``. With a
  correlation, a copy's fate leans on the previous copy's: a two-state chain with
  P(lost | previous lost) = loss + correlation * (1 - loss) and
  P(lost | previous kept) = loss * (1 - correlation), so losses come in bursts while the average
  stays exactly ``loss`` (netem's ``loss 5% 25%``, whose correlated generator lowers the average).
* **Corruption** (``corrupt`` %): one random bit past the 14-byte Ethernet header is flipped (on a
  copy: the caller's frame is never written to). A frame with no byte past the header is left as
  it is.
* **Reordering** (``reorder`` %, needs a delay, as netem): that share of frames is sent at once
  while the others wait their delay, so they overtake the ones sent before them.
* **Delay** (``delay``, ``jitter``, ``distribution``): the frame leaves ``delay`` plus a jitter
  drawn uniformly from [-jitter, +jitter] (``uniform``) or from a normal distribution with that
  standard deviation (``normal``), never before it arrived. Without jitter frames leave in order;
  with it, a frame may overtake another (as netem's time-ordered queue).
* **Rate** (``rate`` bits/s): the link sends one frame at a time, each taking ``8 * len / rate``
  seconds; a frame leaves when its delay is over and the frames before it have gone (netem's
  ``tfifo`` arithmetic: max(arrival + delay, previous departure) + transmission time).
* **The queue** holds every frame that waits (delay or rate), at most ``limit`` frames (default
  1000, as netem) and as many bytes as the switch's queue budget allows: beyond that a frame is
  dropped and counted (tail drop), never kept.

Every random decision comes from one ``random.Random`` per direction, seeded from ``seed`` and the
direction's name: the same seed and the same frames in give the same decisions, frame for frame.
Drops are counted in the port's drop counters (``impair_loss_in``, ``impair_full_out``...); the
other effects in ``ImpairModel.events``.

``Impairment`` is the setting, ``parse_impairment`` reads it from ``KEY=VALUE`` words (the
management command ``port/impair`` and the static port options such as ``-tap tap0,loss=1``):
percentages as plain numbers (``loss=5``: 5 %), durations with a unit (``delay=40ms``,
``jitter=500us``, ``delay=1s``), rates as ``tc`` writes them (``rate=20mbit``, ``rate=512kbit``,
``rate=1gbit``, ``rate=100kbps``: bytes, as in ``tc``).
"""

from __future__ import annotations

import heapq
import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol

from umlswitch import counters
from umlswitch.digits import is_decimal
from umlswitch.fabric.batch import FrameBatch
from umlswitch.fabric.frame import ETH_HEADER_LEN
from umlswitch.fabric.queues import QueueBudget

DEFAULT_LIMIT = 1000  # frames waiting in one direction's queue, at most (netem's default)
MAX_LIMIT = 1_000_000
MAX_DELAY = 60.0  # seconds: longer is a mistake, not a network
MAX_SEED = 2**64 - 1
DISTRIBUTIONS = ("uniform", "normal")
DIRECTIONS = ("in", "out")

# Event counters (not drops): how often each effect hit a frame.
DUPLICATED = "duplicated"
CORRUPTED = "corrupted"
REORDERED = "reordered"
DELAYED = "delayed"  # frames that waited in the queue (delay or rate)
EVENTS = (DUPLICATED, CORRUPTED, REORDERED, DELAYED)

Frame = bytes | memoryview


def loss_reason(direction: str) -> str:
    """The drop counter of frames lost in ``direction``: ``impair_loss_in``."""
    return counters.IMPAIR_LOSS_IN if direction == "in" else counters.IMPAIR_LOSS_OUT


def full_reason(direction: str) -> str:
    """The drop counter of frames that found ``direction``'s queue full: ``impair_full_out``."""
    return counters.IMPAIR_FULL_IN if direction == "in" else counters.IMPAIR_FULL_OUT


class IngressHook(Protocol):
    """What the fabric hands the frames of an impaired port to before it forwards them
    (``Fabric.set_ingress_hook``: a stage of the pipeline while some port has one)."""

    def take(self, frame: bytes | memoryview) -> bool:
        """True if the impairment took ``frame`` (dropped, delayed, or forwarded it altered);
        False: forward it now, unchanged."""

    def take_batch(self, batch: FrameBatch) -> tuple[Any, ...]:
        """Forward (through ``take``) every frame of ``batch``; the receivers that answered
        "full" (as ``Fabric.forward_batch``)."""


# --- the setting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Impairment:
    """One direction's impairment. The defaults are a perfect link."""

    loss: float = 0.0  # percent
    correlation: float = 0.0  # percent: how much a copy's loss leans on the previous one's
    delay: float = 0.0  # seconds
    jitter: float = 0.0  # seconds
    distribution: str = "uniform"
    rate: int = 0  # bits per second; 0: unlimited
    limit: int = DEFAULT_LIMIT  # frames waiting (delayed or rate-limited), at most
    duplicate: float = 0.0  # percent
    reorder: float = 0.0  # percent, sent at once while the others wait their delay
    corrupt: float = 0.0  # percent
    seed: int | None = None  # None: one chosen at random (shown, so a run can be replayed)

    def __post_init__(self) -> None:
        if self.reorder and not self.delay:
            raise ValueError("reorder needs a delay (frames sent early overtake delayed ones)")
        if self.correlation and not self.loss:
            raise ValueError("correlation is the loss correlation: give loss= too")

    @property
    def queues(self) -> bool:
        """Whether frames may wait (delay, jitter or rate)."""
        return bool(self.delay or self.jitter or self.rate)

    def words(self) -> list[str]:
        """The ``KEY=VALUE`` words that give this setting back (defaults left out)."""
        words = []
        for field in fields(self):
            value = getattr(self, field.name)
            if value == field.default:
                continue
            if field.name in ("delay", "jitter"):
                text = format_duration(value)
            elif field.name == "rate":
                text = format_rate(value)
            elif isinstance(value, float):
                text = f"{value:.12g}"
            else:
                text = str(value)
            words.append(f"{field.name}={text}")
        return words

    def describe(self) -> str:
        """One line for people: ``loss 5% (correlation 25%), delay 40ms ± 10ms (normal)``."""
        parts = []
        if self.loss:
            parts.append(f"loss {self.loss:g}%")
            if self.correlation:
                parts[-1] += f" (correlation {self.correlation:g}%)"
        if self.delay or self.jitter:
            text = f"delay {format_duration(self.delay)}"
            if self.jitter:
                text += f" ± {format_duration(self.jitter)} ({self.distribution})"
            parts.append(text)
        if self.rate:
            parts.append(f"rate {format_rate(self.rate)}")
        for name in ("duplicate", "reorder", "corrupt"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name} {value:g}%")
        if self.queues:
            parts.append(f"limit {self.limit}")
        return ", ".join(parts) or "none"

    def as_doc(self) -> dict[str, Any]:
        """The setting as JSON: seconds, bits per second and percentages as numbers."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


@dataclass(frozen=True)
class PortImpairment:
    """Both directions of a port: frames it receives (``inbound``), frames sent to it."""

    inbound: Impairment | None = None
    outbound: Impairment | None = None

    def direction(self, name: str) -> Impairment | None:
        return self.inbound if name == "in" else self.outbound


# --- reading values ---------------------------------------------------------------------------

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(rf"^{_NUMBER}([a-z]*)$")
_DURATION_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "ms": 1e-3,
    "msec": 1e-3,
    "msecs": 1e-3,
    "us": 1e-6,
    "usec": 1e-6,
    "usecs": 1e-6,
}
# tc's rate units (tc(8), "RATES"): bits per second, SI and IEC prefixes; "bps" is bytes.
_RATE_UNITS = {"bit": 1, "bps": 8}
for _prefix, _si, _iec in (
    ("k", 1e3, 2**10),
    ("m", 1e6, 2**20),
    ("g", 1e9, 2**30),
    ("t", 1e12, 2**40),
):
    for _unit, _bits in (("bit", 1), ("bps", 8)):
        _RATE_UNITS[_prefix + _unit] = int(_si) * _bits
        _RATE_UNITS[_prefix + "i" + _unit] = _iec * _bits


def parse_percent(text: str, key: str) -> float:
    """``5`` or ``5%`` -> 5.0, from 0 to 100."""
    body = text[:-1] if text.endswith("%") else text
    try:
        value = float(body)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 100.0:  # also false for nan
        raise ValueError(f"{key}= must be a percentage from 0 to 100 (e.g. {key}=5), not {text!r}")
    return value


def parse_duration(text: str, key: str) -> float:
    """``40ms``, ``1.5s``, ``250us`` -> seconds; a bare ``0`` is zero. tc's spellings (``msec``,
    ``secs``...) are accepted too; a bare number otherwise is refused (tc reads it as µs)."""
    match = _DURATION.match(text.lower())
    unit = match.group(2) if match else None
    if match is None or (unit == "" and float(match.group(1)) != 0.0):
        raise ValueError(
            f"{key}= must be a duration with a unit (e.g. {key}=40ms, 1s), not {text!r}"
        )
    if unit and unit not in _DURATION_UNITS:
        raise ValueError(f"{key}=: unknown unit {unit!r} in {text!r} (use s, ms or us)")
    seconds = float(match.group(1)) * _DURATION_UNITS.get(unit or "s", 1.0)
    if seconds > MAX_DELAY:
        raise ValueError(f"{key}= must be at most {MAX_DELAY:g}s, not {text!r}")
    return seconds


def parse_rate(text: str) -> int:
    """``20mbit``, ``512kbit``, ``1gbit``, ``100kbps`` (bytes), ``64000`` (bits) -> bits/s."""
    match = _DURATION.match(text.lower())
    if match is None:
        raise ValueError(f"rate= must be a rate as tc writes it (e.g. rate=20mbit), not {text!r}")
    number, unit = match.groups()
    if unit and unit not in _RATE_UNITS:
        raise ValueError(
            f"rate=: unknown unit {unit!r} in {text!r} (use bit, kbit, mbit, gbit, or bps, "
            "kbps, mbps for bytes, as tc)"
        )
    bits = round(float(number) * _RATE_UNITS.get(unit, 1))
    if float(number) and bits < 8:
        raise ValueError(f"rate= must be at least 8bit (or 0 for no limit), not {text!r}")
    return bits


def format_duration(seconds: float) -> str:
    """Seconds as tc shows them: ``40ms``, ``1.5s``, ``250us``, ``0``."""
    if seconds == 0:
        return "0"
    if seconds >= 1:
        return f"{seconds:g}s"
    if seconds >= 1e-3:
        return f"{round(seconds * 1e3, 6):g}ms"
    return f"{round(seconds * 1e6, 3):g}us"


def format_rate(bits: int) -> str:
    """Bits per second as tc shows them: ``20mbit``, ``512kbit``, ``1500bit``."""
    for unit, factor in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits >= factor:
            return f"{bits / factor:.12g}{unit}"
    return f"{bits}bit"


def _whole(text: str, key: str, low: int, high: int) -> int:
    if not is_decimal(text) or not low <= int(text) <= high:
        raise ValueError(f"{key}= must be a whole number from {low} to {high}, not {text!r}")
    return int(text)


KEYS = (
    "loss",
    "correlation",
    "delay",
    "jitter",
    "distribution",
    "rate",
    "limit",
    "duplicate",
    "reorder",
    "corrupt",
    "seed",
)


def _value(key: str, text: str) -> object:
    if key in ("loss", "correlation", "duplicate", "reorder", "corrupt"):
        return parse_percent(text, key)
    if key in ("delay", "jitter"):
        return parse_duration(text, key)
    if key == "rate":
        return parse_rate(text)
    if key == "limit":
        return _whole(text, key, 1, MAX_LIMIT)
    if key == "seed":
        return _whole(text, key, 0, MAX_SEED)
    if key == "distribution":
        if text not in DISTRIBUTIONS:
            raise ValueError(f"distribution= must be uniform or normal, not {text!r}")
        return text
    raise ValueError(f"unknown impairment {key!r} (known: {', '.join(KEYS)})")


def parse_settings(words: Iterable[str]) -> dict[str, object]:
    """``KEY=VALUE`` words -> checked values by key; unknown, repeated or empty keys are errors."""
    values: dict[str, object] = {}
    for word in words:
        key, sep, text = word.partition("=")
        if not sep or not text:
            raise ValueError(f"expected KEY=VALUE (e.g. loss=5, delay=40ms), not {word!r}")
        if key in values:
            raise ValueError(f"{key}= given twice")
        values[key] = _value(key, text)
    return values


def impairment(values: Mapping[str, object]) -> Impairment:
    """An ``Impairment`` from checked values (``parse_settings``); ValueError if they clash."""
    return Impairment(**values)  # type: ignore[arg-type]


def parse_impairment(words: Iterable[str]) -> Impairment:
    """``["loss=5", "delay=40ms"]`` -> Impairment; ValueError says what is wrong."""
    return impairment(parse_settings(words))


def split_port_options(text: str) -> tuple[str, PortImpairment | None]:
    """Take the impairment options out of a static port's option value.

    ``tap0,loss=1,out-delay=40ms`` -> (``tap0``, both directions lose 1 %, frames sent to the
    port wait 40 ms). A key applies to both directions; ``in-KEY`` and ``out-KEY`` to one (over
    the plain key). Items that are no impairment option stay, in order: text without any comes
    back unchanged, with None.
    """
    items = text.split(",")
    both: list[str] = []
    one: dict[str, list[str]] = {"in": [], "out": []}
    rest: list[str] = []
    for item in items:
        key, sep, _ = item.partition("=")
        direction, dash, plain = key.partition("-")
        if sep and key in KEYS:
            both.append(item)
        elif sep and dash and direction in one and plain in KEYS:
            one[direction].append(item[len(direction) + 1 :])
        else:
            rest.append(item)
    if len(rest) == len(items):
        return text, None
    common = parse_settings(both)
    sides = {}
    for direction, words in one.items():
        values = {**common, **parse_settings(words)}
        sides[direction] = impairment(values) if values else None
    return ",".join(rest), PortImpairment(sides["in"], sides["out"])


# --- the model --------------------------------------------------------------------------------


class ImpairModel:
    """One direction's impairment state: the random stream, the loss chain, the queue.

    ``decide(frame, now)`` returns the frames to send now (the caller's own ``frame`` when it goes
    unchanged) and keeps those that must wait; ``due(now)`` hands those back when their time has
    come. Times are seconds on any clock, passed in.
    """

    def __init__(
        self,
        spec: Impairment,
        seed: int,
        direction: str,
        drops: Counter[str],
        budget: QueueBudget | None = None,
    ) -> None:
        self.direction = direction
        self.drops = drops  # the port's drop counters
        self.budget = budget if budget is not None else QueueBudget()
        self.events: Counter[str] = Counter()
        # (departure, sequence, frame, tag): a heap, the sequence keeps equal times in order
        self.queue: list[tuple[float, int, bytes, Any]] = []
        self._sequence = 0
        self._lost_last = False
        self._link_free = -math.inf  # rate: when the last frame queued is sent
        self._loss_reason = loss_reason(direction)
        self._full_reason = full_reason(direction)
        self.spec = spec
        self.seed = seed
        self.random = random.Random(f"umlswitch-impair:{seed}:{direction}")

    def configure(self, spec: Impairment) -> None:
        """Change the setting; the random stream and the queue go on."""
        self.spec = spec

    def take_over(self, other: ImpairModel) -> None:
        """Adopt ``other``'s waiting frames and link state (a new seed, the same queue)."""
        self.queue, other.queue = other.queue, []
        self._sequence = other._sequence
        self._link_free = other._link_free

    @property
    def queued_bytes(self) -> int:
        return sum(len(entry[2]) for entry in self.queue)

    def next_due(self) -> float | None:
        """When the first waiting frame leaves, or None if none waits."""
        return self.queue[0][0] if self.queue else None

    def decide(self, frame: Frame, now: float, tag: Any = None) -> list[Frame]:
        """The copies of ``frame`` to send now, in order; those that must wait are queued with
        ``tag`` (given back by ``due``)."""
        spec = self.spec
        rand = self.random.random
        copies = 1
        if spec.duplicate and rand() * 100 < spec.duplicate:
            copies = 2
            self.events[DUPLICATED] += 1
        now_frames: list[Frame] = []
        for _ in range(copies):
            if spec.loss and self._lost(rand()):
                self.drops[self._loss_reason] += 1
                continue
            copy: Frame = frame
            if spec.corrupt and rand() * 100 < spec.corrupt and len(frame) > ETH_HEADER_LEN:
                copy = self._corrupt(frame)
            if not spec.queues:
                now_frames.append(copy)
            elif spec.reorder and rand() * 100 < spec.reorder:
                self.events[REORDERED] += 1
                now_frames.append(copy)
            else:
                self._enqueue(copy, now, tag)
        return now_frames

    def _lost(self, draw: float) -> bool:
        spec = self.spec
        p = spec.loss / 100
        r = spec.correlation / 100
        threshold = p + r * (1 - p) if self._lost_last else p * (1 - r)
        lost = self._lost_last = draw < threshold
        return lost

    def _corrupt(self, frame: Frame) -> bytes:
        copy = bytearray(frame)
        bit = self.random.randrange(ETH_HEADER_LEN * 8, len(copy) * 8)
        copy[bit >> 3] ^= 1 << (bit & 7)
        self.events[CORRUPTED] += 1
        return bytes(copy)

    def _enqueue(self, frame: Frame, now: float, tag: Any) -> None:
        spec = self.spec
        size = len(frame)
        budget = self.budget
        if len(self.queue) >= spec.limit or budget.used + size > budget.limit:
            self.drops[self._full_reason] += 1
            return
        delay = spec.delay
        if spec.jitter:
            if spec.distribution == "normal":
                delay += self.random.gauss(0.0, spec.jitter)
            else:
                delay += self.random.uniform(-spec.jitter, spec.jitter)
            delay = max(delay, 0.0)
        departure = now + delay
        if spec.rate:
            departure = max(departure, self._link_free) + size * 8 / spec.rate
            self._link_free = departure
        self._sequence += 1
        heapq.heappush(self.queue, (departure, self._sequence, bytes(frame), tag))
        budget.used += size
        self.events[DELAYED] += 1

    def due(self, now: float) -> list[tuple[bytes, Any]]:
        """The waiting frames whose time has come (at or before ``now``), in departure order."""
        queue = self.queue
        out = []
        while queue and queue[0][0] <= now:
            _, _, frame, tag = heapq.heappop(queue)
            self.budget.used -= len(frame)
            out.append((frame, tag))
        return out

    def flush(self) -> list[tuple[bytes, Any]]:
        """Every waiting frame, in departure order (the impairment is being switched off)."""
        return self.due(math.inf)

    def discard(self) -> int:
        """Forget every waiting frame (the port left), counted as ``impair_full``; how many."""
        count = len(self.queue)
        if count:
            self.budget.used -= self.queued_bytes
            self.drops[self._full_reason] += count
            self.queue.clear()
        return count
