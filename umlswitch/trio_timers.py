"""``fabric.timers.Timers`` on trio's clock: each pending call is a task sleeping until its time.

The switch's impairment uses it in the control plane (the daemon starts ``run`` in its root
nursery); with trio's ``autojump_clock`` the in-process tests run delays in no real time.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from umlswitch.taskhost import TaskHost


class TrioTimers(TaskHost):
    """Timers whose calls run as tasks of this host (started by ``run``)."""

    def now(self) -> float:
        return trio.current_time()

    def call_at(self, when: float, callback: Callable[[], None]) -> object:
        scope = trio.CancelScope()
        self._running_nursery().start_soon(self._call, when, callback, scope)
        return scope

    def cancel(self, handle: object) -> None:
        assert isinstance(handle, trio.CancelScope)
        handle.cancel()

    def check_running(self) -> None:
        """RuntimeError unless ``run`` is running (calls could not be made)."""
        self._running_nursery()

    @staticmethod
    async def _call(when: float, callback: Callable[[], None], scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep_until(when)
            callback()
