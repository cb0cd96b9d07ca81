"""Rate-limited logging for bad input, so a misbehaving peer cannot flood the log.

Each key (usually a drop reason plus a port) may log ``burst`` lines per ``interval`` seconds; the
lines past that are counted and reported in the next line that gets through. The counters that go
with these events are kept elsewhere and are always exact.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

_MAX_KEYS = 1024


class Deferred:
    """A log argument computed only if its line is written: ``str()`` returns ``func(*args)``.

    For ``%s`` arguments that cost something to format (a MAC address) on a path where the
    limiter usually suppresses the line.
    """

    __slots__ = ("_args", "_func")

    def __init__(self, func: Callable[..., object], *args: object) -> None:
        self._func = func
        self._args = args

    def __str__(self) -> str:
        return str(self._func(*self._args))


class RateLimitedLog:
    """Log at most ``burst`` lines per ``interval`` seconds for each key."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 10.0,
        burst: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._burst = burst
        self._clock = clock
        # key -> [window start, lines logged in window, lines suppressed]
        self._windows: dict[str, list[float]] = {}

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``key`` is over its budget; return whether it was logged."""
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self._interval:
            suppressed = int(window[2]) if window is not None else 0
            if len(self._windows) >= _MAX_KEYS and window is None:
                self._windows.clear()
            self._windows[key] = [now, 1.0, 0.0]
            if suppressed:
                msg += " (%d similar lines suppressed)"
                args = (*args, suppressed)
            self._logger.log(level, msg, *args)
            return True
        if window[1] < self._burst:
            window[1] += 1
            self._logger.log(level, msg, *args)
            return True
        window[2] += 1
        return False

    def warning(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args)
