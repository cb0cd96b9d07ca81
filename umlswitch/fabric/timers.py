"""What the fabric's timed stages need of a clock: the time now, and callbacks at a time.

Impairment releases delayed frames when their time comes (``umlswitch/impair_control.py``). It
asks for that through this protocol only, so it runs wherever the data plane runs: on trio's
clock in the control plane (``umlswitch/trio_timers.py``; in-process tests use trio's
``autojump_clock``), or inside the data-plane thread's loop, which implements it there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Timers(Protocol):
    """A clock and its timers, in seconds on one monotonic origin."""

    def now(self) -> float:
        """The time now."""

    def call_at(self, when: float, callback: Callable[[], None]) -> object:
        """Call ``callback()`` once at ``when`` (at once if that has passed); a handle for
        ``cancel``."""

    def cancel(self, handle: object) -> None:
        """Do not make the call ``handle`` stands for, if it has not been made (idempotent)."""
