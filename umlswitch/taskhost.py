"""A part of the switch with background tasks of its own, hosted in a nursery of its own.

The capture's writers and the impairment's release tasks start and stop at run time (a
management command); the daemon starts each host's ``run`` in its root nursery, and the host
starts its tasks in there, so shutdown cancels them with everything else.
"""

from __future__ import annotations

import trio


class TaskHost:
    """Runs tasks started at run time (``spawn``) until the switch stops."""

    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the tasks until cancelled; then ``_stopped``."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._stopped()

    def _stopped(self) -> None:
        """Called once every hosted task has ended (a kind's clean-up)."""

    def _running_nursery(self) -> trio.Nursery:
        """Where to start a task; RuntimeError before ``run`` has started or after it ended."""
        if self._nursery is None:
            raise RuntimeError(f"{type(self).__name__}.run is not running")
        return self._nursery
