"""The impairment model (``fabric/impair.py``): its settings, and its statistics with a seed.

Statistics run over 10,000 frames and must fall within a binomial bound: the count of hits is
within ``Z`` standard deviations of n·p. With a fixed seed the outcome is the same on every run,
so these bounds check that the model does what it says, not the luck of a run.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from typing import Any

import pytest

from umlswitch.fabric.impair import (
    CORRUPTED,
    DELAYED,
    DUPLICATED,
    REORDERED,
    Impairment,
    ImpairModel,
    PortImpairment,
    format_duration,
    format_rate,
    parse_duration,
    parse_impairment,
    parse_percent,
    parse_rate,
    split_port_options,
)
from umlswitch.fabric.queues import QueueBudget

N = 10_000
Z = 4.5  # a fixed seed makes this deterministic; 4.5 sd would fail about once in 150,000 seeds


def within_binomial(hits: int, n: int, p: float, inflation: float = 1.0) -> bool:
    """``hits`` out of ``n`` is consistent with probability ``p`` (variance times ``inflation``
    for correlated draws)."""
    sd = math.sqrt(n * p * (1 - p) * inflation)
    return abs(hits - n * p) <= Z * sd


def frames(n: int = N, size: int = 100) -> list[bytes]:
    """``n`` distinct frames: a header, then the frame's number."""
    header = bytes.fromhex("0200000000020200000000010800")
    return [header + i.to_bytes(4, "big") + bytes(size - 18) for i in range(n)]


def model(direction: str = "out", seed: int = 1, **settings: object) -> ImpairModel:
    return ImpairModel(Impairment(**settings), seed, direction, Counter())  # type: ignore[arg-type]


def run(m: ImpairModel, sent: list[bytes], gap: float = 0.001) -> list[tuple[float, bytes]]:
    """Offer ``sent`` one every ``gap`` seconds; every (time, frame) that leaves, in order."""
    out: list[tuple[float, bytes]] = []
    now = 0.0
    for frame in sent:
        now += gap
        for early, _ in m.due(now):
            out.append((now, early))
        out += [(now, bytes(f)) for f in m.decide(frame, now)]
    while m.queue:
        due = m.next_due()
        assert due is not None
        out += [(due, f) for f, _ in m.due(due)]
    return out


# --- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("40ms", 0.04),
        ("1s", 1.0),
        ("1.5s", 1.5),
        ("250us", 250e-6),
        ("10msec", 0.01),
        ("2secs", 2.0),
        ("0", 0.0),
        ("0ms", 0.0),
        (".5ms", 0.0005),
    ],
)
def test_durations_take_tc_units(text: str, seconds: float) -> None:
    assert parse_duration(text, "delay") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["40", "40 ms", "40min", "-1ms", "ms", "61s", "1e3ms"])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="delay="):
        parse_duration(text, "delay")


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("20mbit", 20_000_000),
        ("20Mbit", 20_000_000),
        ("512kbit", 512_000),
        ("1gbit", 1_000_000_000),
        ("1.5mbit", 1_500_000),
        ("64000", 64_000),
        ("100bit", 100),
        ("1mibit", 1 << 20),
        ("100kbps", 800_000),  # bytes, as tc
        ("1mbps", 8_000_000),
        ("0", 0),
    ],
)
def test_rates_are_read_as_tc_writes_them(text: str, bits: int) -> None:
    assert parse_rate(text) == bits


@pytest.mark.parametrize("text", ["fast", "20mb", "-1mbit", "1bit", "20 mbit"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="rate="):
        parse_rate(text)


@pytest.mark.parametrize(("text", "value"), [("5", 5.0), ("5%", 5.0), ("0.1", 0.1), ("100", 100)])
def test_percentages_are_plain_numbers(text: str, value: float) -> None:
    assert parse_percent(text, "loss") == value


@pytest.mark.parametrize("text", ["101", "-1", "five", "nan", ""])
def test_bad_percentages_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="loss="):
        parse_percent(text, "loss")


def test_a_setting_reads_back_from_its_words() -> None:
    spec = parse_impairment(
        [
            "loss=5",
            "correlation=25",
            "delay=40ms",
            "jitter=10ms",
            "distribution=normal",
            "rate=20mbit",
            "limit=50",
            "duplicate=1",
            "reorder=25",
            "corrupt=0.1",
            "seed=42",
        ]
    )
    assert spec == Impairment(
        loss=5,
        correlation=25,
        delay=0.04,
        jitter=0.01,
        distribution="normal",
        rate=20_000_000,
        limit=50,
        duplicate=1,
        reorder=25,
        corrupt=0.1,
        seed=42,
    )
    assert parse_impairment(spec.words()) == spec
    assert spec.describe() == (
        "loss 5% (correlation 25%), delay 40ms ± 10ms (normal), rate 20mbit, duplicate 1%, "
        "reorder 25%, corrupt 0.1%, limit 50"
    )
    assert Impairment().describe() == "none" and Impairment().words() == []


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["loss"], "KEY=VALUE"),
        (["loss="], "KEY=VALUE"),
        (["speed=1"], "unknown impairment 'speed'"),
        (["loss=1", "loss=2"], "given twice"),
        (["reorder=5"], "reorder needs a delay"),
        (["correlation=5"], "give loss= too"),
        (["distribution=pareto"], "uniform or normal"),
        (["limit=0"], "limit="),
        (["seed=-1"], "seed="),
    ],
)
def test_bad_settings_say_what_is_wrong(words: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_impairment(words)


def test_formats_are_as_tc_shows_them() -> None:
    assert [format_duration(s) for s in (0, 0.04, 1.5, 250e-6)] == ["0", "40ms", "1.5s", "250us"]
    assert [format_rate(b) for b in (20_000_000, 512_000, 1_500_000_000, 300)] == [
        "20mbit",
        "512kbit",
        "1.5gbit",
        "300bit",
    ]


def test_static_port_options_split_off_the_impairment() -> None:
    assert split_port_options("tap0") == ("tap0", None)
    assert split_port_options("239.1.2.3:5000,ttl=2") == ("239.1.2.3:5000,ttl=2", None)
    rest, impaired = split_port_options("239.1.2.3:5000,loss=1,ttl=2,out-delay=40ms,in-loss=2")
    assert rest == "239.1.2.3:5000,ttl=2"
    assert impaired == PortImpairment(
        inbound=Impairment(loss=2), outbound=Impairment(loss=1, delay=0.04)
    )
    assert split_port_options("tap0,out-rate=1mbit") == (
        "tap0",
        PortImpairment(None, Impairment(rate=1_000_000)),
    )
    with pytest.raises(ValueError, match="given twice"):
        split_port_options("tap0,loss=1,loss=2")


# --- statistics over 10,000 frames ----------------------------------------------------------


def test_loss_is_binomial() -> None:
    m = model(loss=10, seed=7)
    out = run(m, frames())
    lost = m.drops["impair_loss_out"]
    assert lost + len(out) == N
    assert within_binomial(lost, N, 0.10), lost


def test_correlated_loss_comes_in_bursts_and_keeps_its_average() -> None:
    m = model("in", loss=10, correlation=50, seed=3)
    fates = []
    for i, frame in enumerate(frames()):
        fates.append(not m.decide(frame, float(i)))
    lost = sum(fates)
    assert m.drops["impair_loss_in"] == lost
    # A two-state chain with lag-1 correlation r: the variance of the count grows (1+r)/(1-r).
    assert within_binomial(lost, N, 0.10, inflation=3.0), lost
    after_loss = [b for a, b in itertools.pairwise(fates) if a]
    p_again = sum(after_loss) / len(after_loss)
    assert p_again == pytest.approx(0.10 + 0.5 * 0.9, abs=0.06)  # vs 0.10 without correlation


def test_duplication_is_binomial_and_copies_are_whole() -> None:
    m = model(duplicate=5, seed=11)
    sent = frames()
    out = run(m, sent)
    duplicated = m.events[DUPLICATED]
    assert len(out) == N + duplicated
    assert within_binomial(duplicated, N, 0.05), duplicated
    counts = Counter(frame for _, frame in out)
    assert set(counts) == set(sent) and sum(c == 2 for c in counts.values()) == duplicated


def test_reordering_sends_a_share_early_and_they_overtake() -> None:
    m = model(reorder=25, delay=0.010, seed=5)
    sent = frames()
    out = run(m, sent, gap=0.001)
    reordered = m.events[REORDERED]
    assert within_binomial(reordered, N, 0.25), reordered
    assert m.events[DELAYED] == N - reordered
    assert sorted(frame for _, frame in out) == sorted(sent)  # nothing lost or duplicated
    order = [sent.index(frame) for _, frame in out]
    overtakes = sum(b < a for a, b in itertools.pairwise(order))
    assert overtakes > reordered / 2  # early frames pass the ones still waiting their 10 ms


def test_corruption_flips_one_bit_past_the_header() -> None:
    m = model(corrupt=3, seed=13)
    sent = frames(size=64)
    out = [frame for _, frame in run(m, sent)]
    assert len(out) == N
    changed = 0
    for original, got in zip(sent, out, strict=True):
        if got == original:
            continue
        changed += 1
        diff = [i for i in range(len(got)) if got[i] != original[i]]
        assert len(diff) == 1 and diff[0] >= 14
        assert bin(got[diff[0]] ^ original[diff[0]]).count("1") == 1
    assert changed == m.events[CORRUPTED]
    assert within_binomial(changed, N, 0.03), changed


def test_a_frame_with_only_a_header_is_not_corrupted() -> None:
    m = model(corrupt=100)
    header = bytes(14)
    assert m.decide(header, 0.0) == [header]


def test_the_callers_buffer_is_never_written_nor_kept() -> None:
    buffer = bytearray(frames(1)[0])
    original = bytes(buffer)
    waiting = model(duplicate=100, delay=0.001)
    assert waiting.decide(memoryview(buffer), 0.0) == []
    corrupting = model(corrupt=100)
    (corrupted,) = corrupting.decide(memoryview(buffer), 0.0)
    assert bytes(corrupted) != original and bytes(buffer) == original
    buffer[:] = bytes(len(buffer))  # the receiver reuses its buffer at once
    assert [frame for frame, _ in waiting.due(1.0)] == [original, original]


# --- time -----------------------------------------------------------------------------------


def test_delay_without_jitter_keeps_order() -> None:
    m = model(delay=0.040)
    sent = frames(1000)
    out = run(m, sent, gap=0.0005)
    assert [frame for _, frame in out] == sent
    for i, (left, _) in enumerate(out):
        assert left >= (i + 1) * 0.0005 + 0.040 - 1e-9
        assert left <= (i + 1) * 0.0005 + 0.040 + 0.0005  # released at the next offer


def test_jitter_stays_within_its_bounds_and_may_reorder() -> None:
    m = model(delay=0.040, jitter=0.010, seed=2)
    sent = frames(2000)
    waits = []
    for _i, frame in enumerate(sent):
        m.decide(frame, 0.0)
        waits.append(m.queue[0][0])
        m.due(1.0)
    assert min(waits) >= 0.030 and max(waits) <= 0.050
    assert sum(waits) / len(waits) == pytest.approx(0.040, abs=0.001)
    order = [sent.index(frame) for _, frame in run(model(delay=0.040, jitter=0.010), sent)]
    assert order != sorted(order)


def test_normal_jitter_has_its_standard_deviation() -> None:
    m = model(delay=0.100, jitter=0.010, distribution="normal", seed=4)
    waits = []
    for frame in frames():
        m.decide(frame, 0.0)
        waits.append(m.queue[0][0])
        m.due(1.0)
    mean = sum(waits) / N
    sd = math.sqrt(sum((w - mean) ** 2 for w in waits) / N)
    assert mean == pytest.approx(0.100, abs=0.001)
    assert sd == pytest.approx(0.010, rel=0.05)


def test_rate_spaces_frames_by_their_transmission_time() -> None:
    m = model(rate=8_000_000)  # 1000-byte frames: 1 ms each
    sent = frames(100, size=1000)
    for frame in sent:
        assert m.decide(frame, 0.0) == []
    departures = sorted(entry[0] for entry in m.queue)
    assert departures == pytest.approx([(i + 1) * 0.001 for i in range(100)])


def test_rate_and_delay_add_up_as_netem() -> None:
    m = model(rate=8_000_000, delay=0.010)
    first, second = frames(2, size=1000)
    m.decide(first, 0.0)
    m.decide(second, 0.0)
    assert sorted(entry[0] for entry in m.queue) == pytest.approx([0.011, 0.012])


def test_the_queue_bound_holds_and_drops_are_counted() -> None:
    m = model(rate=8_000_000, limit=10)
    for frame in frames(100, size=1000):
        m.decide(frame, 0.0)
        assert len(m.queue) <= 10
    assert len(m.queue) == 10
    assert m.drops["impair_full_out"] == 90
    # When the link has sent some, there is room again.
    assert len(m.due(0.0035)) == 3
    m.decide(frames(1, size=1000)[0], 0.0035)
    assert len(m.queue) == 8 and m.drops["impair_full_out"] == 90


def test_the_queue_is_bounded_by_the_switchs_queue_memory_too() -> None:
    budget = QueueBudget(limit=5000)
    m = ImpairModel(Impairment(delay=1.0), 1, "in", Counter(), budget)
    for frame in frames(10, size=1000):
        m.decide(frame, 0.0)
    assert len(m.queue) == 5 and budget.used == 5000 and m.drops["impair_full_in"] == 5
    assert len(m.flush()) == 5 and budget.used == 0
    m.decide(frames(1, size=1000)[0], 0.0)
    assert m.discard() == 1 and budget.used == 0 and m.drops["impair_full_in"] == 6


# --- replay ---------------------------------------------------------------------------------

EVERYTHING: dict[str, Any] = {
    "loss": 5,
    "correlation": 20,
    "delay": 0.020,
    "jitter": 0.010,
    "rate": 50_000_000,
    "duplicate": 3,
    "reorder": 10,
    "corrupt": 2,
}


def test_a_seed_replays_the_same_frames_in_the_same_order() -> None:
    sent = frames(2000)
    first = run(model(seed=99, **EVERYTHING), sent)
    again = run(model(seed=99, **EVERYTHING), sent)
    other = run(model(seed=100, **EVERYTHING), sent)
    assert first == again
    assert first != other
    assert run(model("in", seed=99, **EVERYTHING), sent) != first  # each direction its own


def test_the_random_stream_does_not_depend_on_the_global_one() -> None:
    sent = frames(500)
    random.seed(1)
    first = run(model(seed=5, loss=50), sent)
    random.seed(2)
    assert run(model(seed=5, loss=50), sent) == first
