"""RateLimitedLog with a fake clock: a burst gets through, the rest is counted and reported."""

from __future__ import annotations

import logging

import pytest

from umlswitch.ratelog import RateLimitedLog

LOGGER = "umlswitch.test.ratelog"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ratelog(clock: FakeClock) -> RateLimitedLog:
    return RateLimitedLog(logging.getLogger(LOGGER), interval=10.0, burst=3, clock=clock)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    caplog.clear()
    return messages


def test_burst_then_suppression(
    ratelog: RateLimitedLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    results = []
    for i in range(10):
        results.append(ratelog.warning("runt:1", "runt number %d", i))
        clock.now += 0.5
    assert results == [True] * 3 + [False] * 7
    assert lines(caplog) == ["runt number 0", "runt number 1", "runt number 2"]


def test_suppressed_lines_are_reported_after_the_interval(
    ratelog: RateLimitedLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for i in range(10):
        ratelog.warning("runt:1", "runt number %d", i)
    assert len(lines(caplog)) == 3
    clock.now += 9.99
    assert not ratelog.warning("runt:1", "still in the window")
    assert lines(caplog) == []
    clock.now += 0.01
    assert ratelog.warning("runt:1", "runt number %d", 42)
    assert lines(caplog) == ["runt number 42 (8 similar lines suppressed)"]
    # The new window starts from zero: the burst is available again, with no note.
    assert ratelog.warning("runt:1", "again")
    assert ratelog.warning("runt:1", "and again")
    assert lines(caplog) == ["again", "and again"]


def test_no_note_when_nothing_was_suppressed(
    ratelog: RateLimitedLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    ratelog.warning("k", "first")
    clock.now += 60
    ratelog.warning("k", "second")
    assert lines(caplog) == ["first", "second"]


def test_keys_are_independent(ratelog: RateLimitedLog, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for _ in range(5):
        ratelog.warning("runt:1", "from port 1")
    assert ratelog.warning("runt:2", "from port 2")
    assert lines(caplog) == ["from port 1"] * 3 + ["from port 2"]


def test_level_is_kept(ratelog: RateLimitedLog, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    ratelog.log(logging.ERROR, "k", "bad")
    ratelog.warning("k", "worse")
    assert [r.levelno for r in caplog.records if r.name == LOGGER] == [
        logging.ERROR,
        logging.WARNING,
    ]


def test_many_keys_stay_bounded_and_keep_logging(
    ratelog: RateLimitedLog, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that makes up a new key per line cannot grow the table without bound, and the
    limiter keeps working for the keys that come after."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for i in range(5000):
        assert ratelog.warning(f"k{i}", "line")
    assert len(ratelog._windows) <= 1024
    for _ in range(5):
        ratelog.warning("last", "x")
    assert lines(caplog)[-3:] == ["x"] * 3
    assert not ratelog.warning("last", "x")
